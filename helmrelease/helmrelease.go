// Package helmrelease is the Helm function of lambda-eks: Helm releases
// installed, upgraded, rolled back and uninstalled in-process with the Helm
// SDK (helm.sh/helm/v4), as events, as Custom::HelmRelease resources, and
// as a CodePipeline action deploying a chart from the input artifact.
// It is a peer of the main function on the same framework (internal/invoke:
// errors and their codes, strict decoding, the connection cache;
// internal/cfnresource: the custom-resource protocol; internal/codepipeline:
// the CodePipeline job protocol) and shares auth (the
// EKS token) and kube (the self-refreshing rest.Config) with it; it lives
// in a function of its own because the Helm SDK would not fit the main
// function's 32 MB.
//
// Every wait ends inside the invocation: Helm's timeout is the deadline
// less a margin, so that a revision ends deployed or failed, never pending;
// a revision left pending by an invocation that was killed anyway is
// recovered by the next call (recoverPending).
package helmrelease

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"

	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Group is the Kubernetes group the Helm function's role is mapped to;
// permissions.yml's Role lambda-eks-helm is bound to it.
const Group = "lambda-eks-helm"

// access is how the Helm function's role is let into a cluster, for the
// message of a 401.
var access = invoke.Access{Group: Group, AccessEntry: "HelmFunction=true with AccessMode=access-entry"}

// Config is the Helm function's deployment facts, read once at cold start:
// the defaults every function reads, and what only Helm reads.
type Config struct {
	invoke.Defaults
	// Credentials are REGISTRY_CREDENTIALS.
	Credentials Credentials
	// ECRRegistries are ECR_REGISTRIES: hosts treated as ECR registries
	// besides the *.dkr.ecr.* names (a pull-through proxy, say), in the
	// function's region.
	ECRRegistries []string
}

// ConfigFromEnv reads the Config with getenv (os.Getenv in main) and checks
// it, so that a bad deployment fails at cold start.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	d, err := invoke.DefaultsFromEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	creds, err := ParseCredentials(getenv("REGISTRY_CREDENTIALS"))
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Defaults: d, Credentials: creds}
	for _, h := range strings.Split(getenv("ECR_REGISTRIES"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.ECRRegistries = append(cfg.ECRRegistries, h)
		}
	}
	return cfg, nil
}

// Handler serves the Helm function's invocations. Build it once per process.
type Handler struct {
	cfg   Config
	ecr   *ECRTokens
	conns *invoke.Conns[*cluster]
	cfn   *cfnresource.Server
	log   *slog.Logger
	now   func() time.Time
	// charts is the transport of chart downloads, shared by invocations
	// (each has its own http.Client, whose timeout is its deadline).
	charts *http.Transport
	// aws is the function's AWS configuration: CodePipeline jobs are
	// answered with it (their artifacts are read with their own
	// credentials). Nil in tests that serve no job.
	aws *aws.Config
	// configure returns Helm's action configuration of a namespace
	// ((*cluster).configuration; tests give one on a fake client).
	configure func(c *cluster, namespace string) (*action.Configuration, error)
}

// New returns a Handler that reaches clusters, and ECR registries, with
// awsCfg's credentials.
func New(cfg Config, awsCfg aws.Config, log *slog.Logger) *Handler {
	h := newHandler(cfg, invoke.NewOpener(awsCfg, newCluster), NewECRTokens(awsCfg, cfg.ECRRegistries), log, time.Now)
	h.aws = &awsCfg
	return h
}

// newHandler returns a Handler that opens connections with open and reads
// the time with now.
func newHandler(cfg Config, open invoke.Opener[*cluster], ecr *ECRTokens, log *slog.Logger, now func() time.Time) *Handler {
	h := &Handler{cfg: cfg, ecr: ecr, conns: invoke.NewConns(open, log), cfn: cfnresource.NewServer(log), log: log, now: now,
		charts: newChartTransport()}
	h.configure = func(c *cluster, namespace string) (*action.Configuration, error) {
		return c.configuration(namespace, log)
	}
	return h
}

// Invoke is the Lambda handler: the raw payload in, the Result as JSON out,
// or an error whose errorType is the invoke.Error code. A CloudFormation
// request goes to the Custom::HelmRelease contract, a CodePipeline job to
// the pipeline action (codepipeline.go).
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	if codepipeline.Is(payload) {
		return h.pipelineJob(ctx, payload)
	}
	if cfnresource.Is(payload) {
		return h.cfn.ServeLambda(ctx, payload, resource{h})
	}
	start := time.Now()
	res, err := h.invoke(ctx, payload)
	return invoke.Finish(ctx, h.log, start, res, err, (*Result).logAttrs)
}

func (h *Handler) invoke(ctx context.Context, raw []byte) (*Result, error) {
	ev, err := DecodeEvent(raw)
	if err != nil {
		return nil, err
	}
	req, err := Resolve(ev, h.cfg.Defaults)
	if err != nil {
		return nil, err
	}
	invoke.NoteAction(ctx, req.Action)
	return h.Run(ctx, req)
}

// Run performs a checked request.
func (h *Handler) Run(ctx context.Context, req Request) (*Result, error) {
	return h.run(ctx, req, "")
}

// run performs req; owner, when set, labels the revisions it writes
// (OwnerLabel) and limits helm-uninstall to a release it labels.
func (h *Handler) run(ctx context.Context, req Request, owner string) (*Result, error) {
	return h.runChart(ctx, req, owner, nil)
}

// runChart is run with the chart of a helm-upgrade given (loaded from a
// CodePipeline artifact); nil fetches the chart req.Ref names.
func (h *Handler) runChart(ctx context.Context, req Request, owner string, ch *chartv2.Chart) (*Result, error) {
	ctx, cancel := invoke.WithMargin(ctx)
	defer cancel()
	deadline, _ := ctx.Deadline()
	attrs := []any{"action", req.Action, "cluster", req.Cluster, "region", req.Region, "namespace", req.Namespace, "release", req.Release}
	if req.Action == ActionUpgrade {
		attrs = append(attrs, "chart", req.Ref.String())
	}
	if req.DryRun {
		attrs = append(attrs, "dry_run", true)
	}
	h.log.InfoContext(ctx, "invocation", attrs...)
	diag := invoke.Diagnosis{Cluster: req.Cluster, RoleARN: req.RoleARN, Access: access}

	// The chart first: a chart that cannot be had changes nothing.
	o := &op{req: req, log: h.log, now: h.now, lamb: deadline.Add(invoke.DeadlineMargin), owner: owner}
	if req.Action == ActionUpgrade && ch == nil {
		start := time.Now()
		fetched, version, err := newFetcher(ctx, h.charts, h.cfg.Credentials, h.ecr).fetch(ctx, req.Ref)
		if err != nil {
			return nil, classify(ctx, err, diag)
		}
		ch = fetched
		h.log.InfoContext(ctx, "chart fetched", "chart", ch.Metadata.Name, "version", version, "duration_ms", time.Since(start).Milliseconds())
	}

	conn, err := h.conns.Get(ctx, req.Target)
	if err != nil {
		return nil, classify(ctx, err, diag)
	}
	diag.CallerARN = conn.CallerARN
	if o.cfg, err = h.configure(conn.Client, req.Namespace); err != nil {
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
		err = invoke.Invalid("unknown action %q", req.Action)
	}
	if err != nil {
		h.conns.Done(ctx, req.Target, conn, err)
		return nil, classify(ctx, err, diag)
	}
	res.Cluster, res.Action = req.Cluster, req.Action
	return res, nil
}
