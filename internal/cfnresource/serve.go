package cfnresource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/cfn"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Resource is one custom resource type's work. Its methods run within the
// context's deadline, which leaves time for the answer.
type Resource interface {
	// PhysicalID names what a Create or Update makes, from the request
	// alone, before any work. An error (properties that cannot be read)
	// lets the engine choose: for a Create an ID made from the request,
	// for an Update the request's own.
	PhysicalID(req Request) (string, error)
	// Apply serves Create and Update; the Reason and Data of a SUCCESS
	// answer, or an error answered FAILED with its code and message.
	Apply(ctx context.Context, req Request, p Plan) (reason string, data map[string]string, err error)
	// Delete serves Delete. It must succeed when there is nothing left to
	// delete (the cluster gone, properties that never resolved).
	Delete(ctx context.Context, req Request, p Plan) (reason string, err error)
}

// Plan is decided before any work, from the request alone, so that an
// answer cut short still names the right resource.
type Plan struct {
	// ID is the PhysicalResourceId of a SUCCESS answer.
	ID string
	// Owner is the ID that owns what the resource wrote: ID, or for a
	// Delete after a failed Create, the ID without FailedCreateSuffix.
	Owner string
	// Replacement is an Update to a new ID: CloudFormation later deletes
	// the old one, whose Delete must then leave what the new one owns.
	Replacement bool
	// AfterFailedCreate is the Delete of a resource whose Create failed (a
	// rollback): best effort, and answered SUCCESS even when it fails.
	AfterFailedCreate bool
	// failedID is the PhysicalResourceId of a FAILED answer.
	failedID string
}

// FailedCreateSuffix ends the PhysicalResourceId of a FAILED Create. The
// Delete CloudFormation sends for it (a rollback) cleans up what the Create
// may have written, owned by the ID without the suffix, and answers SUCCESS
// even when it cannot: a failed Create must never block the rollback.
const FailedCreateSuffix = "/create-failed"

// Server answers custom resource requests. Build it once per process.
type Server struct {
	log    *slog.Logger
	client *http.Client
	// putReserve is kept after the work for the answer's PUT; cutGrace is
	// how long the answer waits, after the work's deadline, for the work to
	// return its own (better worded) error.
	putReserve, cutGrace, putAttempt time.Duration
	backoff                          func(attempt int) time.Duration
}

// Option configures a Server.
type Option func(*Server)

// WithTiming sets the time kept for the answer after the work, the grace
// given to work past its deadline, the bound of one PUT attempt and the
// pause before each retry of the PUT (tests shorten them).
func WithTiming(putReserve, cutGrace, putAttempt time.Duration, backoff func(attempt int) time.Duration) Option {
	return func(s *Server) {
		s.putReserve, s.cutGrace, s.putAttempt, s.backoff = putReserve, cutGrace, putAttempt, backoff
	}
}

// WithClient sets the client answers are PUT with.
func WithClient(c *http.Client) Option { return func(s *Server) { s.client = c } }

// NewServer returns a Server that logs to log. Its PUTs honour HTTPS_PROXY
// as the SDKs do.
func NewServer(log *slog.Logger, opts ...Option) *Server {
	s := &Server{log: log, client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		putReserve: 2 * time.Second, cutGrace: 250 * time.Millisecond, putAttempt: 5 * time.Second, backoff: defaultBackoff}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Serve serves one request for r and returns the body it sent. It answers
// before its deadline whatever happens: work cut at the deadline, or a
// panic, is answered FAILED. An error is returned only when no answer could
// be delivered (no usable ResponseURL, or the PUT failed), so that Lambda's
// retry of an asynchronous invocation tries again.
func (s *Server) Serve(ctx context.Context, payload []byte, r Resource) ([]byte, error) {
	start := time.Now()
	req, err := decodeRequest(payload)
	if err != nil {
		e := invoke.AsError(err)
		s.log.ErrorContext(ctx, "custom resource request cannot be answered", "code", string(e.Code), "error", e.Message)
		return nil, e
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = start.Add(invoke.MaxWait)
	}
	answerBy := deadline.Add(-invoke.DeadlineMargin)
	reserve := min(s.putReserve, time.Until(answerBy)/3)
	workCtx, cancel := context.WithDeadline(ctx, answerBy.Add(-reserve))
	defer cancel()

	p := plan(req, r)
	s.log.InfoContext(ctx, "custom resource", "requestType", string(req.RequestType), "resourceType", req.ResourceType,
		"logicalResourceId", req.LogicalResourceID, "physicalResourceId", p.ID, "replacement", p.Replacement)

	done := make(chan cfn.Response, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				s.log.ErrorContext(ctx, "custom resource panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				done <- p.failed(req, &invoke.Error{Code: invoke.Internal, Message: fmt.Sprintf("the function panicked: %v; see its logs", v)})
			}
		}()
		if err := req.check(); err != nil {
			done <- p.failed(req, err)
			return
		}
		done <- p.run(workCtx, req, r)
	}()
	var resp cfn.Response
	select {
	case resp = <-done:
	case <-workCtx.Done():
		t := time.NewTimer(s.cutGrace)
		select {
		case resp = <-done:
		case <-t.C:
			resp = p.failed(req, &invoke.Error{Code: invoke.Timeout, Message: fmt.Sprintf(
				"the work did not end within the function's deadline (%s after the start, less %s to answer); raise the function's Timeout, or lower Wait",
				time.Since(start).Round(time.Millisecond), reserve+invoke.DeadlineMargin)})
		}
		t.Stop()
	}

	body, err := encodeResponse(resp)
	if err != nil {
		return nil, &invoke.Error{Code: invoke.Internal, Message: "encode the response: " + err.Error(), Err: err}
	}
	putCtx, putCancel := context.WithDeadline(ctx, answerBy)
	defer putCancel()
	put, err := s.put(putCtx, req.ResponseURL, body)
	var sent cfn.Response
	_ = json.Unmarshal(body, &sent)
	attrs := []any{"requestType", string(req.RequestType), "logicalResourceId", req.LogicalResourceID,
		"physicalResourceId", sent.PhysicalResourceID, "status", string(sent.Status), "reason", sent.Reason,
		"dataKeys", len(sent.Data), "bytes", len(body), "attempts", put.Attempts, "httpStatus", put.StatusCode,
		"responseURL", SafeURL(req.ResponseURL), "duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		s.log.ErrorContext(ctx, "custom resource answer not delivered", append(attrs, "error", err.Error())...)
		return nil, &invoke.Error{Code: invoke.Unavailable, Err: err, Message: fmt.Sprintf(
			"the answer (%s) could not be delivered to CloudFormation: %s; Lambda retries the invocation", sent.Status, err.Error())}
	}
	s.log.InfoContext(ctx, "custom resource answered", attrs...)
	return body, nil
}

// plan decides the PhysicalResourceIds. Create: r's ID (when the properties
// cannot be read, nothing will be written: one made from the request), and
// that ID with FailedCreateSuffix if it fails. Update: r's ID, else the
// request's; a FAILED answer keeps the request's. Delete: the request's.
func plan(req Request, r Resource) Plan {
	switch req.RequestType {
	case cfn.RequestCreate:
		id, err := physicalID(req, r)
		if err != nil || id == "" {
			sum := sha256.Sum256([]byte(req.RequestID))
			id = StackName(req.StackID) + "/" + req.LogicalResourceID + "/" + hex.EncodeToString(sum[:8])
		}
		return Plan{ID: id, Owner: id, failedID: id + FailedCreateSuffix}
	case cfn.RequestUpdate:
		id, err := physicalID(req, r)
		if err != nil || id == "" {
			id = req.PhysicalResourceID
		}
		return Plan{ID: id, Owner: id, Replacement: id != req.PhysicalResourceID, failedID: req.PhysicalResourceID}
	}
	owner, afterFailedCreate := strings.CutSuffix(req.PhysicalResourceID, FailedCreateSuffix)
	return Plan{ID: req.PhysicalResourceID, Owner: owner, AfterFailedCreate: afterFailedCreate, failedID: req.PhysicalResourceID}
}

// physicalID is r's ID for req; a panic, or an ID CloudFormation would
// refuse (more than MaxPhysicalIDBytes, or characters JSON escapes), is an
// error, so that the engine's own ID is used and an answer still goes out.
func physicalID(req Request, r Resource) (id string, err error) {
	defer func() {
		if v := recover(); v != nil {
			id, err = "", fmt.Errorf("PhysicalID panicked: %v", v)
		}
	}()
	id, err = r.PhysicalID(req)
	if err == nil && (len(id) > MaxPhysicalIDBytes-len(FailedCreateSuffix) ||
		strings.ContainsFunc(id, func(c rune) bool { return c < 0x20 || c == '"' || c == '\\' || c > 0x7e })) {
		return "", fmt.Errorf("PhysicalID %.64q... is not one CloudFormation takes", id)
	}
	return id, err
}

// run does the work of req and says what to answer.
func (p Plan) run(ctx context.Context, req Request, r Resource) cfn.Response {
	if req.RequestType == cfn.RequestDelete {
		reason, err := r.Delete(ctx, req, p)
		if err != nil {
			return p.failed(req, err)
		}
		return p.success(req, reason, nil)
	}
	reason, data, err := r.Apply(ctx, req, p)
	if err != nil {
		return p.failed(req, err)
	}
	return p.success(req, reason, data)
}

// failed is the FAILED answer to req for err, but for the Delete after a
// failed Create (a rollback), which is answered SUCCESS saying what may be
// left: it must never block the rollback.
func (p Plan) failed(req Request, err error) cfn.Response {
	e := invoke.AsError(err)
	if req.RequestType == cfn.RequestDelete && p.AfterFailedCreate {
		return p.success(req, fmt.Sprintf("the Create failed, and so did the cleanup after it (%s); what it may have written is owned by %s",
			e.Error(), p.Owner), nil)
	}
	return cfn.Response{Status: cfn.StatusFailed, Reason: e.Error(), PhysicalResourceID: p.failedID,
		StackID: req.StackID, RequestID: req.RequestID, LogicalResourceID: req.LogicalResourceID}
}

func (p Plan) success(req Request, reason string, data map[string]string) cfn.Response {
	resp := cfn.Response{Status: cfn.StatusSuccess, Reason: reason, PhysicalResourceID: p.ID,
		StackID: req.StackID, RequestID: req.RequestID, LogicalResourceID: req.LogicalResourceID}
	if len(data) > 0 {
		resp.Data = make(map[string]any, len(data))
		for k, v := range data {
			resp.Data[k] = v
		}
		// Outputs that cannot fit even with no Reason fail the request, as
		// any failure does (a Create's FAILED answer carries its own ID).
		bare := resp
		bare.Reason = ""
		if b, err := json.Marshal(bare); err != nil || len(b)+len(`,"Reason":""`)+len(trimmedMark) > MaxResponseBytes {
			return p.failed(req, invoke.Invalid("the outputs (Data) take %d bytes of JSON, more than a response of at most %d bytes can hold; read fewer or shorter values",
				dataBytes(resp.Data), MaxResponseBytes))
		}
	}
	return resp
}
