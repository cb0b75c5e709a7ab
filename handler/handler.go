// Package handler is lambda-eks's invocation boundary: it takes the raw
// payload, decodes and checks the event strictly, connects to the cluster
// (once per process and target, the most recently used kept), runs the
// action, and maps every failure to one Error whose code is Lambda's
// errorType.
package handler

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/lru"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/auth"
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
type Conn struct {
	Kube *kube.Client
	// Prepare is called at the start of each invocation with its context,
	// so credential refreshes are bounded by the deadline. May be nil.
	Prepare func(context.Context) error
	// CallerARN names the identity the cluster sees, to word a 401. May be nil.
	CallerARN func(context.Context) (string, error)
}

// Connector opens a Conn to a target.
type Connector func(ctx context.Context, t auth.Target) (*Conn, error)

// deadlineMargin is kept between the handler's own deadline and Lambda's, so
// that a slow request ends in a Timeout error, not a killed invocation.
const deadlineMargin = 500 * time.Millisecond

// waitMargin is kept between the end of a wait and the handler's deadline,
// for the response: a wait past its bound is a Timeout error that still
// says how far the rollout got.
const waitMargin = 500 * time.Millisecond

// maxConns bounds the connections a process keeps: one per target (cluster,
// region, role) it was asked for, the least recently used dropped first.
const maxConns = 16

// Handler serves invocations. Build it once per process.
type Handler struct {
	cfg     Config
	connect Connector
	log     *slog.Logger
	s3      ObjectGetter

	// conns holds a *Conn per auth.Target, the least recently used dropped
	// beyond maxConns; mu orders a drop against a new connection to the
	// same target.
	mu    sync.Mutex
	conns *lru.Cache
}

// New returns a Handler.
func New(cfg Config, connect Connector, log *slog.Logger, opts ...Option) *Handler {
	h := &Handler{cfg: cfg, connect: connect, log: log, conns: lru.New(maxConns)}
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

// readManifest reads and decodes the manifest req names in S3, with the
// same checks as a manifest in the event.
func (h *Handler) readManifest(ctx context.Context, req Request) (kube.Manifest, error) {
	get, err := h.s3Getter()
	if err != nil {
		return nil, err
	}
	text, err := ReadManifestS3(ctx, get, req.ManifestS3Bucket, req.ManifestS3Key)
	if err != nil {
		return nil, err
	}
	m, err := kube.DecodeManifest([]byte(text), req.MaxDocuments)
	if err != nil {
		return nil, invalid("manifestS3 s3://%s/%s: %s; nothing was changed", req.ManifestS3Bucket, req.ManifestS3Key, err.Error())
	}
	return m, nil
}

// Invoke is the Lambda handler (Handler is a lambda.Handler): it takes the
// payload exactly as Lambda received it, so that nothing but DecodeEvent
// decodes it, and returns the Response as JSON, or an error Lambda reports
// with the error's code as errorType. A CloudFormation custom resource
// request goes to customResource.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	if isCustomResource(payload) {
		out, err := h.customResource(ctx, payload)
		if err != nil {
			return nil, appError(err).lambdaError()
		}
		return out, nil
	}
	start := time.Now()
	resp, err := h.invoke(ctx, payload)
	return finish(ctx, h.log, start, resp, err, func(resp *Response) []any {
		return []any{"cluster", resp.Cluster, "action", resp.Action, "objects", len(resp.Objects)}
	})
}

// finish ends an invocation that began at start: resp as JSON, logged as
// done with what done says of it; or err, logged as failed and returned as
// Lambda reports it (errorType is its code).
func finish[T any](ctx context.Context, log *slog.Logger, start time.Time, resp T, err error, done func(T) []any) ([]byte, error) {
	var out []byte
	if err == nil {
		out, err = marshalResponse(resp)
	}
	if err != nil {
		e := appError(err)
		log.ErrorContext(ctx, "invocation failed", "code", string(e.Code), "error", e.Message,
			"duration_ms", time.Since(start).Milliseconds())
		return nil, e.lambdaError()
	}
	log.InfoContext(ctx, "invocation done", append(done(resp), "duration_ms", time.Since(start).Milliseconds())...)
	return out, nil
}

// marshalResponse writes resp as aws-lambda-go writes a handler's value: no
// HTML escaping, no trailing newline.
func marshalResponse(resp any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(resp); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// isCustomResource reports whether payload is a CloudFormation custom
// resource request: a JSON object with RequestType and ResponseURL (names
// matched case-sensitively). Only the top level is looked at; the request
// itself is checked by customResource.
func isCustomResource(payload []byte) bool {
	if !bytes.Contains(payload, []byte(`"RequestType"`)) || !bytes.Contains(payload, []byte(`"ResponseURL"`)) {
		return false
	}
	var probe struct {
		RequestType *string `json:"RequestType"`
		ResponseURL *string `json:"ResponseURL"`
	}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(payload, &probe); err != nil {
		return false
	}
	return probe.RequestType != nil && probe.ResponseURL != nil
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
	if err := checkWait(ctx, req.Wait); err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-deadlineMargin))
		defer cancel()
	}
	if req.ManifestS3Key != "" {
		if req.Objects, err = h.readManifest(ctx, req); err != nil {
			return nil, classify(ctx, err, diagnosis{req: req})
		}
	}
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
	h.log.InfoContext(ctx, "invocation", attrs...)

	t := auth.Target{Cluster: req.Cluster, Region: req.Region, RoleARN: req.RoleARN,
		ExternalID: req.ExternalID, SessionName: h.cfg.SessionName}
	diag := diagnosis{req: req}
	conn, err := h.conn(ctx, t)
	if err != nil {
		return nil, classify(ctx, err, diag)
	}
	diag.callerARN = conn.CallerARN

	objects, err := h.run(ctx, conn.Kube, req)
	if err == nil && req.Wait > 0 {
		bound := req.Wait
		if deadline, ok := ctx.Deadline(); ok {
			bound = min(bound, time.Until(deadline)-waitMargin)
		}
		objects, err = conn.Kube.Wait(ctx, objects, max(bound, 0), h.log)
	}
	if err != nil {
		if reason := stale(err); reason != "" {
			h.forget(t, conn)
			h.log.WarnContext(ctx, "connection dropped", "cluster", t.Cluster, "region", t.Region, "reason", reason)
		}
		return nil, classify(ctx, err, diag)
	}
	if objects == nil {
		objects = []kube.ObjectResult{}
	}
	return &Response{Cluster: req.Cluster, Action: req.Action, DryRun: req.DryRun, Objects: objects}, nil
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
	return nil, invalid("unknown action %q", req.Action)
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
		return invalid("wait %s is longer than the function's timeout (about %s); wait less, or raise the function's Timeout", wait, timeout)
	}
	return nil
}

// conn returns the cached connection to t, opening it on first use. A
// failed attempt is not cached: the next invocation tries again.
func (h *Handler) conn(ctx context.Context, t auth.Target) (*Conn, error) {
	c := h.cached(t)
	if c == nil {
		var err error
		if c, err = h.connect(ctx, t); err != nil {
			return nil, err
		}
		h.keep(t, c)
	}
	if c.Prepare != nil {
		if err := c.Prepare(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// cached returns the connection to t, now the most recently used, or nil.
func (h *Handler) cached(t auth.Target) *Conn {
	c, ok := h.conns.Get(t)
	if !ok {
		return nil
	}
	return c.(*Conn)
}

// keep caches c as the connection to t.
func (h *Handler) keep(t auth.Target, c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns.Add(t, c)
}

// forget drops c, if it is still the connection to t, so that the next
// invocation opens a new one (eks:DescribeCluster again).
func (h *Handler) forget(t auth.Target, c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cached(t) == c {
		h.conns.Remove(t)
	}
}

// stale says why err shows that a connection no longer reaches the cluster
// it was opened for, or "" when it does not. The endpoint and CA came from
// eks:DescribeCluster when the connection was opened; a cluster deleted and
// created again under the same name has new ones. So a certificate the CA
// does not verify, an endpoint name that no longer resolves, and a 401 that
// outlived the retry with a fresh token (kube retries once) all mean: ask
// EKS again.
func stale(err error) string {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		badCert   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		dns       *net.DNSError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &authority), errors.As(err, &hostname), errors.As(err, &badCert),
		errors.As(err, &record), errors.As(err, &alert):
		return "tls"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "endpoint name not found"
	case apierrors.IsUnauthorized(err):
		return "401 after a fresh token"
	}
	return ""
}
