// Package helmrelease is the Helm function of lambda-eks: Helm releases
// installed, upgraded, rolled back and uninstalled in-process with the Helm
// SDK (helm.sh/helm/v4), as events and as Custom::HelmRelease resources.
// It shares auth (the EKS token) and kube (the self-refreshing rest.Config)
// with the main function and answers with the same error codes
// (handler.Error); it lives in a function of its own because the Helm SDK
// would not fit the main function's 32 MB.
//
// Every wait ends inside the invocation: Helm's timeout is the deadline
// less a margin, so that a revision ends deployed or failed, never pending;
// a revision left pending by an invocation that was killed anyway is
// recovered by the next call (recoverPending).
package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/lru"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/handler"
)

// Group is the Kubernetes group the Helm function's role is mapped to;
// permissions.yml's Role lambda-eks-helm is bound to it.
const Group = "lambda-eks-helm"

// rbacRefusal reports a 403 of RBAC (`User "x" cannot create resource
// "namespaces" ...`), not of an admission policy.
func rbacRefusal(err error) bool {
	return strings.Contains(err.Error(), " cannot ") && strings.Contains(err.Error(), " resource ")
}

// deadlineMargin is kept between the handler's deadline and Lambda's.
const deadlineMargin = 500 * time.Millisecond

// maxConns bounds the clusters a process keeps connections to.
const maxConns = 16

// Conn is a connection to one cluster, reused by warm invocations.
type Conn struct {
	cluster *cluster
	// Prepare is called at the start of each invocation (credential
	// refresh bounded by its deadline). May be nil.
	Prepare   func(context.Context) error
	CallerARN func(context.Context) (string, error)
}

// Connector opens a Conn to a target.
type Connector func(ctx context.Context, t auth.Target) (*Conn, error)

// NewConnector reaches real clusters as the main function does
// (handler.Open): the rest.Config's bearer token refreshes itself during
// long waits.
func NewConnector(base aws.Config) Connector {
	return func(ctx context.Context, t auth.Target) (*Conn, error) {
		e, err := handler.Open(ctx, base, t)
		if err != nil {
			return nil, err
		}
		c, err := newCluster(e.Config)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", t.Cluster, err)
		}
		return &Conn{cluster: c, Prepare: e.Prepare, CallerARN: e.CallerARN}, nil
	}
}

// Options are the Helm function's deployment facts beyond handler.Config.
type Options struct {
	Credentials Credentials // REGISTRY_CREDENTIALS
	ECR         *ECRTokens  // ecr:GetAuthorizationToken; nil: none
}

// Handler serves the Helm function's invocations. Build it once per process.
type Handler struct {
	cfg     handler.Config
	opts    Options
	connect Connector
	log     *slog.Logger
	now     func() time.Time
	// charts is the transport of chart downloads, shared by invocations
	// (each has its own http.Client, whose timeout is its deadline).
	charts *http.Transport

	// conns holds a *Conn per auth.Target, the least recently used dropped
	// beyond maxConns; mu orders a drop against a new connection.
	mu    sync.Mutex
	conns *lru.Cache
}

// New returns a Handler.
func New(cfg handler.Config, opts Options, connect Connector, log *slog.Logger) *Handler {
	return &Handler{cfg: cfg, opts: opts, connect: connect, log: log, now: time.Now, conns: lru.New(maxConns),
		charts: newChartTransport()}
}

// Invoke is the Lambda handler: the raw payload in, the Result as JSON out,
// or an error whose errorType is the handler.Error code. A CloudFormation
// request goes to the Custom::HelmRelease contract.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	if handler.IsCustomResource(payload) {
		out, err := handler.ServeCustomResource(ctx, payload, h.log, h.physicalID, h.customResource)
		if err != nil {
			return nil, handler.AsError(err).LambdaError()
		}
		return out, nil
	}
	start := time.Now()
	res, err := h.invoke(ctx, payload)
	return handler.Finish(ctx, h.log, start, res, err, func(res *Result) []any {
		return []any{"action", res.Action, "release", res.Release, "namespace", res.Namespace, "revision", res.Revision, "status", res.Status}
	})
}

func (h *Handler) invoke(ctx context.Context, raw []byte) (*Result, error) {
	ev, err := DecodeEvent(raw)
	if err != nil {
		return nil, err
	}
	req, err := Resolve(ev, h.cfg)
	if err != nil {
		return nil, err
	}
	return h.Run(ctx, req)
}

// Run performs a checked request.
func (h *Handler) Run(ctx context.Context, req Request) (*Result, error) {
	return h.run(ctx, req, "")
}

// run performs req; owner, when set, labels the revisions it writes
// (OwnerLabel) and limits helm-uninstall to a release it labels.
func (h *Handler) run(ctx context.Context, req Request, owner string) (*Result, error) {
	lambdaDeadline, ok := ctx.Deadline()
	if !ok {
		lambdaDeadline = h.now().Add(15 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(ctx, lambdaDeadline.Add(-deadlineMargin))
	defer cancel()
	attrs := []any{"action", req.Action, "cluster", req.Cluster, "region", req.Region, "namespace", req.Namespace, "release", req.Release}
	if req.Action == ActionUpgrade {
		attrs = append(attrs, "chart", req.Ref.String())
	}
	if req.DryRun {
		attrs = append(attrs, "dry_run", true)
	}
	h.log.InfoContext(ctx, "invocation", attrs...)
	hreq := handler.Request{Action: req.Action, Cluster: req.Cluster, Region: req.Region, Namespace: req.Namespace,
		Name: req.Release, RoleARN: req.RoleARN, ExternalID: req.ExternalID}

	// The chart first: a chart that cannot be had changes nothing.
	var o op
	o.req, o.log, o.now, o.lamb, o.owner = req, h.log, h.now, lambdaDeadline, owner
	var ch *chartv2.Chart
	if req.Action == ActionUpgrade {
		start := time.Now()
		fetched, version, err := newFetcher(ctx, h.charts, h.opts.Credentials, h.opts.ECR).fetch(ctx, req.Ref)
		if err != nil {
			return nil, h.classify(ctx, err, hreq, nil)
		}
		ch = fetched
		h.log.InfoContext(ctx, "chart fetched", "chart", ch.Metadata.Name, "version", version, "duration_ms", time.Since(start).Milliseconds())
	}

	conn, err := h.conn(ctx, req.Target)
	if err != nil {
		return nil, h.classify(ctx, err, hreq, nil)
	}
	if o.cfg, err = conn.cluster.configuration(req.Namespace, h.log); err != nil {
		return nil, err
	}
	var res *Result
	switch req.Action {
	case ActionUpgrade:
		res, err = o.upgrade(ctx, ch)
	case ActionRollback:
		res, err = o.rollback(ctx)
	case ActionUninstall:
		res, err = o.uninstall(ctx)
	case ActionStatus:
		res, err = o.status()
	default:
		err = handler.Invalid("unknown action %q", req.Action)
	}
	if err != nil {
		e := h.classify(ctx, err, hreq, conn.CallerARN)
		if e.Code == handler.Unauthorized || e.Code == handler.Unavailable {
			h.forget(req.Target, conn)
		}
		return nil, e
	}
	res.Cluster, res.Action = req.Cluster, req.Action
	return res, nil
}

// classify maps err to a handler.Error: the Helm function's own errors
// first, then the main function's mapping (auth, Kubernetes, transport).
func (h *Handler) classify(ctx context.Context, err error, req handler.Request, callerARN func(context.Context) (string, error)) *handler.Error {
	var (
		e        *handler.Error
		notFound *ChartNotFoundError
		repoErr  *RepositoryError
		pending  *PendingError
		relErr   *ReleaseError
		noRel    *ReleaseNotFoundError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &notFound):
		return &handler.Error{Code: handler.NotFound, Err: err, Message: notFound.Error() + "; check chart, version and repository; nothing was changed"}
	case errors.As(err, &noRel):
		return &handler.Error{Code: handler.NotFound, Err: err, Message: noRel.Error()}
	case errors.Is(err, errNoTarget):
		return &handler.Error{Code: handler.NotFound, Err: err, Message: err.Error() + "; see helm-status for the history"}
	case errors.As(err, &pending):
		return &handler.Error{Code: handler.Conflict, Err: err, Message: pending.Error() + "; try again after that time (a revision still pending then is recovered)"}
	case errors.As(err, &repoErr) && (repoErr.Status == http.StatusUnauthorized || repoErr.Status == http.StatusForbidden):
		return &handler.Error{Code: handler.Forbidden, Err: err, Message: repoErr.Error() +
			"; the repository refused the function's credentials: set them in REGISTRY_CREDENTIALS (host: user:password), or for ECR grant ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the repository (template.yml, HelmEcrRepositoryArns)"}
	case errors.As(err, &repoErr) && repoErr.Status >= 500:
		return &handler.Error{Code: handler.Unavailable, Err: err, Message: repoErr.Error() + "; try again later"}
	case errors.As(err, &repoErr):
		return &handler.Error{Code: handler.InvalidEvent, Err: err, Message: repoErr.Error() + "; nothing was changed"}
	case errors.As(err, &relErr):
		// The revision's failure: a wait that ran out is Timeout, anything
		// else is coded as the main function codes it.
		code := handler.Timeout
		if !errors.Is(relErr.Err, context.DeadlineExceeded) && !errors.Is(relErr.Err, context.Canceled) && !timedOut(relErr.Err) {
			code = h.classify(ctx, relErr.Err, req, callerARN).Code
		}
		what := "; the next helm-upgrade starts from it"
		if relErr.Then != "" {
			what = ""
		}
		return &handler.Error{Code: code, Err: err, Message: redact(relErr.Error()) + what}
	case apierrors.IsForbidden(err) && rbacRefusal(err):
		return &handler.Error{Code: handler.Forbidden, Err: err, Message: fmt.Sprintf(
			"%s: RBAC refused it (403); grant it to the Kubernetes group %s: permissions.yml's Role %s in the release's namespace (add the kinds the chart holds), "+
				"or a ClusterRole for cluster-scoped kinds and createNamespace (see permissions-cluster.yml)", redact(err.Error()), Group, Group)}
	case apierrors.IsUnauthorized(err):
		who := "the Helm function's role"
		if callerARN != nil {
			if arn, aerr := callerARN(ctx); aerr == nil {
				who = arn
			}
		}
		return &handler.Error{Code: handler.Unauthorized, Err: err, Message: fmt.Sprintf(
			"the API server of cluster %s rejected the token (401): map %s to the Kubernetes group %s, with an EKS access entry "+
				"(template.yml, HelmFunction=true with AccessMode=access-entry) or a mapRoles entry in kube-system/aws-auth", req.Cluster, who, Group)}
	case renderProblem(err):
		return &handler.Error{Code: handler.InvalidEvent, Err: err, Message: redact(err.Error()) + "; fix the values or the chart version; nothing was changed"}
	case busyProblem(err):
		return &handler.Error{Code: handler.Conflict, Err: err, Message: redact(err.Error()) +
			"; another invocation or helm is working on the release: try again when it is done (helm-status shows it)"}
	case ownershipProblem(err):
		return &handler.Error{Code: handler.Conflict, Err: err, Message: redact(err.Error()) +
			"; an object of the chart belongs to another release or was made without Helm; nothing was changed"}
	}
	return handler.Classify(ctx, err, req, callerARN)
}

// timedOut reports Helm's words for a wait that ran out of time.
func timedOut(err error) bool {
	msg := err.Error()
	for _, s := range []string{"context deadline exceeded", "timed out waiting", "timeout waiting"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// redact drops what must never leave the process from a message.
func redact(s string) string { return handler.AsError(errors.New(s)).Message }

// conn returns the cached connection to t, opening it on first use.
func (h *Handler) conn(ctx context.Context, t auth.Target) (*Conn, error) {
	var c *Conn
	if v, ok := h.conns.Get(t); ok {
		c = v.(*Conn)
	} else {
		var err error
		if c, err = h.connect(ctx, t); err != nil {
			return nil, err
		}
		h.mu.Lock()
		h.conns.Add(t, c)
		h.mu.Unlock()
	}
	if c.Prepare != nil {
		if err := c.Prepare(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// forget drops c so that the next invocation connects again.
func (h *Handler) forget(t auth.Target, c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.conns.Get(t); ok && v.(*Conn) == c {
		h.conns.Remove(t)
	}
}
