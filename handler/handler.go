// Package handler is the main lambda-eks function's actions: ensure-nginx,
// apply, delete, scale, restart and status, as events and as
// Custom::KubernetesManifest resources. The invocation boundary (strict
// decoding, errors, connections, the custom-resource protocol) is
// internal/invoke's and internal/cfnresource's, shared with the other
// functions of the application.
package handler

import (
	"context"

	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Response is what a successful invocation returns.
type Response struct {
	Cluster string `json:"cluster"`
	Action  string `json:"action"`
	// DryRun says that the API server checked the changes and kept none.
	DryRun  bool                `json:"dryRun,omitempty"`
	Objects []kube.ObjectResult `json:"objects"`
}

// Conn is a connection to one cluster, reused by warm invocations.
type Conn = invoke.Conn[*kube.Client]

// Connector opens a Conn to a target: invoke.NewOpener(awsCfg,
// kube.NewForConfig) in main, a fake in tests.
type Connector = invoke.Opener[*kube.Client]

// NewConnector returns the Connector that reaches real clusters
// (invoke.Open) with a kube.Client.
func NewConnector(base aws.Config) Connector { return invoke.NewOpener(base, kube.NewForConfig) }

// access is how the function's role is let into a cluster, for the words
// of a 401 and of an RBAC refusal.
var access = invoke.Access{Group: "lambda-eks", AccessEntry: "AccessMode=access-entry"}

// waitMargin is kept between the end of a wait and the handler's deadline,
// for the response: a wait past its bound is a Timeout error that still
// says how far the rollout got.
const waitMargin = 500 * time.Millisecond

// Handler serves invocations. Build it once per process.
type Handler struct {
	cfg   Config
	conns *invoke.Conns[*kube.Client]
	log   *slog.Logger
	s3    ObjectGetter
	cfn   *cfnresource.Server
	// outputInterval is how often Outputs are read while they are empty.
	outputInterval time.Duration
	// aws answers CodePipeline jobs (WithAWS; codepipeline.go).
	aws *aws.Config
}

// New returns a Handler.
func New(cfg Config, connect Connector, log *slog.Logger, opts ...Option) *Handler {
	h := &Handler{cfg: cfg, conns: invoke.NewConns(connect, log), log: log, cfn: cfnresource.NewServer(log),
		outputInterval: 2 * time.Second}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Option configures a Handler.
type Option func(*Handler)

// WithS3 sets the client manifests in S3 (manifestS3, ManifestS3) are read
// with: the function's own AWS configuration, built once in main.
func WithS3(get ObjectGetter) Option { return func(h *Handler) { h.s3 = get } }

// WithCustomResources sets the engine custom resource requests are served
// by (tests give it short timings).
func WithCustomResources(s *cfnresource.Server) Option { return func(h *Handler) { h.cfn = s } }

// WithOutputInterval sets how often empty Outputs are read again.
func WithOutputInterval(d time.Duration) Option { return func(h *Handler) { h.outputInterval = d } }

// Invoke is the Lambda handler (Handler is a lambda.Handler): it takes the
// payload exactly as Lambda received it, so that nothing but DecodeEvent
// decodes it, and returns the Response as JSON, or an error Lambda reports
// with the error's code as errorType. A CloudFormation custom resource
// request goes to the Custom::KubernetesManifest resource, a CodePipeline
// job to the CodePipeline action (codepipeline.go).
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	if cfnresource.Is(payload) {
		return h.cfn.ServeLambda(ctx, payload, manifestResource{h})
	}
	if codepipeline.Is(payload) {
		return h.pipelineJob(ctx, payload)
	}
	start := time.Now()
	resp, err := h.invoke(ctx, payload)
	return invoke.Finish(ctx, h.log, start, resp, err, func(resp *Response) []any {
		return []any{"cluster", resp.Cluster, "action", resp.Action, "objects", len(resp.Objects)}
	})
}

func (h *Handler) invoke(ctx context.Context, raw []byte) (*Response, error) {
	ev, err := DecodeEvent(raw)
	if err != nil {
		return nil, err
	}
	req, err := Resolve(ev, h.cfg)
	if err != nil {
		return nil, err
	}
	invoke.NoteAction(ctx, req.Action)
	if err := checkWait(ctx, req.Wait); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = invoke.WithMargin(ctx)
		defer cancel()
	}
	if req.ManifestS3Key != "" {
		if req.Objects, err = h.readManifest(ctx, req); err != nil {
			return nil, invoke.Classify(ctx, err, diagnose(req, nil))
		}
	}
	h.log.InfoContext(ctx, "invocation", logAttrs(req)...)

	t := req.target(h.cfg.SessionName)
	conn, err := h.conns.Get(ctx, t)
	if err != nil {
		return nil, invoke.Classify(ctx, err, diagnose(req, nil))
	}
	objects, err := h.run(ctx, conn.Client, req)
	if err == nil && req.Wait > 0 {
		bound := req.Wait
		if deadline, ok := ctx.Deadline(); ok {
			bound = min(bound, time.Until(deadline)-waitMargin)
		}
		objects, err = conn.Client.Wait(ctx, objects, max(bound, 0), h.log)
	}
	if err != nil {
		h.conns.Done(ctx, t, conn, err)
		return nil, invoke.Classify(ctx, err, diagnose(req, conn.CallerARN))
	}
	if objects == nil {
		objects = []kube.ObjectResult{}
	}
	return &Response{Cluster: req.Cluster, Action: req.Action, DryRun: req.DryRun, Objects: objects}, nil
}

// diagnose is what invoke.Classify needs to word an error of req.
func diagnose(req Request, callerARN func(context.Context) (string, error)) invoke.Diagnosis {
	return invoke.Diagnosis{Cluster: req.Cluster, RoleARN: req.RoleARN, CallerARN: callerARN, Access: access}
}

// logAttrs says what an invocation is about to do, for its first log record.
func logAttrs(req Request) []any {
	attrs := []any{"action", req.Action, "cluster", req.Cluster, "region", req.Region, "namespace", req.Namespace}
	switch {
	case req.Objects != nil:
		attrs = append(attrs, "documents", len(req.Objects))
	case req.Selector != "":
		attrs = append(attrs, "kind", req.Kind, "selector", req.Selector)
	default:
		attrs = append(attrs, "kind", req.Kind, "name", req.Name)
	}
	if req.DryRun {
		attrs = append(attrs, "dry_run", true)
	}
	if req.Wait > 0 {
		attrs = append(attrs, "wait", req.Wait.String())
	}
	return attrs
}

// run performs req's action.
func (h *Handler) run(ctx context.Context, k *kube.Client, req Request) ([]kube.ObjectResult, error) {
	ref := []kube.Ref{{Kind: req.Kind, Namespace: req.Namespace, Name: req.Name}}
	switch req.Action {
	case ActionEnsureNginx:
		// Force: the Deployment is lambda-eks's, whoever edited it since.
		m, err := nginxManifest(req)
		if err != nil {
			return nil, err
		}
		return k.Apply(ctx, m, kube.ApplyOptions{Force: true})
	case ActionApply:
		return k.Apply(ctx, req.Objects, kube.ApplyOptions{Namespace: req.Namespace, Force: req.Force, DryRun: req.DryRun})
	case ActionDelete:
		o := kube.DeleteOptions{Namespace: req.Namespace, Propagation: req.Propagation, DryRun: req.DryRun}
		if req.Objects != nil {
			return k.DeleteManifest(ctx, req.Objects, o)
		}
		return k.Delete(ctx, ref, o)
	case ActionScale:
		return k.Scale(ctx, kube.ScaleRequest{Namespace: req.Namespace, Kind: req.Kind, Name: req.Name, Selector: req.Selector,
			Replicas: req.Replicas, Restore: req.Restore, DryRun: req.DryRun})
	case ActionRestart:
		res, err := k.Restart(ctx, kube.RestartRequest{Namespace: req.Namespace, Kind: req.Kind, Name: req.Name, DryRun: req.DryRun})
		return []kube.ObjectResult{res}, err
	case ActionStatus:
		if req.Objects != nil {
			return k.StatusManifest(ctx, req.Objects, req.Namespace)
		}
		return k.Status(ctx, ref, req.Namespace)
	}
	return nil, invoke.Invalid("unknown action %q", req.Action)
}

// checkWait refuses a wait longer than the function's timeout. Lambda does
// not tell a function its timeout; the invocation's deadline, taken before
// any work, is the closest measure of it (rounded up to the second).
func checkWait(ctx context.Context, wait time.Duration) error {
	deadline, ok := ctx.Deadline()
	if wait == 0 || !ok {
		return nil
	}
	timeout := time.Until(deadline).Truncate(time.Second) + time.Second
	if wait > timeout {
		return invoke.Invalid("wait %s is longer than the function's timeout (about %s); wait less, or raise the function's Timeout", wait, timeout)
	}
	return nil
}
