package cfnresource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// fakeResource is a Resource whose methods are the test's: PhysicalID is
// id (by default "s/<LogicalResourceId>/planned"), Apply and Delete are
// apply and del (by default succeeding). It records the Plan each piece of
// work received.
type fakeResource struct {
	id    func(Request) (string, error)
	apply func(context.Context, Request, Plan) (string, map[string]string, error)
	del   func(context.Context, Request, Plan) (string, error)

	mu    sync.Mutex
	plans []Plan
}

func (f *fakeResource) PhysicalID(req Request) (string, error) {
	if f.id != nil {
		return f.id(req)
	}
	return "s/" + req.LogicalResourceID + "/planned", nil
}

func (f *fakeResource) Apply(ctx context.Context, req Request, p Plan) (string, map[string]string, error) {
	f.record(p)
	if f.apply != nil {
		return f.apply(ctx, req, p)
	}
	return "applied", nil, nil
}

func (f *fakeResource) Delete(ctx context.Context, req Request, p Plan) (string, error) {
	f.record(p)
	if f.del != nil {
		return f.del(ctx, req, p)
	}
	return "deleted", nil
}

func (f *fakeResource) record(p Plan) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plans = append(f.plans, p)
}

func (f *fakeResource) received() []Plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Plan(nil), f.plans...)
}

// harness plays CloudFormation: it sends requests to a Server and
// receives its answers on a fake ResponseURL.
type harness struct {
	s   *Server
	rec *recorder
}

// newHarness returns a harness whose ResponseURL answers codes (200 if none).
func newHarness(tb testing.TB, codes ...int) *harness {
	tb.Helper()
	return newTimedHarness(tb, testTiming(), codes...)
}

// newTimedHarness is newHarness with the Server's timing.
func newTimedHarness(tb testing.TB, timing Option, codes ...int) *harness {
	tb.Helper()
	if len(codes) == 0 {
		codes = []int{http.StatusOK}
	}
	rec, srv := newRecorder(tb, codes...)
	return &harness{s: NewServer(discard(), WithClient(&http.Client{Transport: toServer{srv}}), timing), rec: rec}
}

const (
	testStackID     = "arn:aws:cloudformation:us-east-1:123456789012:stack/s/u"
	testResponseURL = "https://cfn-response.s3.amazonaws.com/r?X-Amz-Signature=secret"
	planned         = "s/Web/planned"
)

// payload is a Create request for the logical resource Web, with fields
// set over it (a nil value removes the field).
func payload(tb testing.TB, fields map[string]any) []byte {
	tb.Helper()
	req := map[string]any{
		"RequestType": "Create", "ResponseURL": testResponseURL, "StackId": testStackID, "RequestId": "req-1",
		"LogicalResourceId": "Web", "ResourceType": "Custom::Test", "ResourceProperties": map[string]any{"Release": "web"},
	}
	for k, v := range fields {
		if v == nil {
			delete(req, k)
			continue
		}
		req[k] = v
	}
	b, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// send serves a request and returns the answer CloudFormation received,
// after checking that exactly one was sent, that the invocation returned
// it, and that it fits and names the request.
func (h *harness) send(ctx context.Context, tb testing.TB, r Resource, fields map[string]any) cfn.Response {
	tb.Helper()
	p := payload(tb, fields)
	before := len(h.rec.received())
	out, err := h.s.Serve(ctx, p, r)
	if err != nil {
		tb.Fatalf("Serve: %v", err)
	}
	sent := h.rec.received()[before:]
	if len(sent) != 1 {
		tb.Fatalf("%d answers sent, want 1", len(sent))
	}
	if sent[0] != string(out) {
		tb.Errorf("the invocation returned %s, but sent %s", out, sent[0])
	}
	if len(out) > MaxResponseBytes {
		tb.Errorf("answer of %d bytes, want at most %d", len(out), MaxResponseBytes)
	}
	var resp cfn.Response
	if err := json.Unmarshal(out, &resp); err != nil {
		tb.Fatal(err)
	}
	var req Request
	if err := json.Unmarshal(p, &req); err != nil {
		tb.Fatal(err)
	}
	if resp.StackID != req.StackID || resp.RequestID != req.RequestID || resp.LogicalResourceID != req.LogicalResourceID {
		tb.Errorf("ids not copied: %+v", resp)
	}
	return resp
}

// madeID is the PhysicalResourceId the engine makes for a Create of Web in
// the test stack whose properties cannot be read.
func madeID(requestID string) string {
	sum := sha256.Sum256([]byte(requestID))
	return "s/Web/" + hex.EncodeToString(sum[:8])
}

func TestServe(t *testing.T) {
	fails := func(err error) func(context.Context, Request, Plan) (string, map[string]string, error) {
		return func(context.Context, Request, Plan) (string, map[string]string, error) { return "", nil, err }
	}
	deleteFails := func(err error) func(context.Context, Request, Plan) (string, error) {
		return func(context.Context, Request, Plan) (string, error) { return "", err }
	}
	unauthorized := &invoke.Error{Code: invoke.Unauthorized, Message: "token refused"}
	update := func(physical string) map[string]any {
		return map[string]any{"RequestType": "Update", "PhysicalResourceId": physical, "OldResourceProperties": map[string]any{"Release": "old"}}
	}
	deleteOf := func(physical string) map[string]any {
		return map[string]any{"RequestType": "Delete", "PhysicalResourceId": physical}
	}
	created := Plan{ID: planned, Owner: planned, failedID: planned + FailedCreateSuffix}
	tests := []struct {
		name       string
		fields     map[string]any
		res        *fakeResource
		wantStatus cfn.StatusType
		wantID     string
		wantReason string // the whole Reason
		wantData   map[string]any
		wantPlans  []Plan // what the work received; none when it must not run
	}{
		{name: "create succeeds", res: &fakeResource{apply: func(context.Context, Request, Plan) (string, map[string]string, error) {
			return "installed", map[string]string{"Revision": "1"}, nil
		}}, wantStatus: cfn.StatusSuccess, wantID: planned, wantReason: "installed", wantData: map[string]any{"Revision": "1"},
			wantPlans: []Plan{created}},
		{name: "create fails with its code", res: &fakeResource{apply: fails(&invoke.Error{Code: invoke.NotFound, Message: "no such chart"})},
			wantStatus: cfn.StatusFailed, wantID: planned + "/create-failed", wantReason: "NotFound: no such chart", wantPlans: []Plan{created}},
		{name: "an error without a code is Internal", res: &fakeResource{apply: fails(errors.New("boom"))},
			wantStatus: cfn.StatusFailed, wantID: planned + "/create-failed", wantReason: "Internal: boom", wantPlans: []Plan{created}},
		{name: "create with unreadable properties gets an id from the request",
			res: &fakeResource{id: func(Request) (string, error) { return "", errors.New("bad properties") },
				apply: fails(invoke.Invalid("ResourceProperties: unknown field \"X\""))},
			wantStatus: cfn.StatusFailed, wantID: madeID("req-1") + "/create-failed", wantReason: `InvalidEvent: ResourceProperties: unknown field "X"`,
			wantPlans: []Plan{{ID: madeID("req-1"), Owner: madeID("req-1"), failedID: madeID("req-1") + FailedCreateSuffix}}},
		{name: "update, same id", fields: update(planned), res: &fakeResource{},
			wantStatus: cfn.StatusSuccess, wantID: planned, wantReason: "applied",
			wantPlans: []Plan{{ID: planned, Owner: planned, failedID: planned}}},
		{name: "replacement on a new id", fields: update("s/Web/old"), res: &fakeResource{},
			wantStatus: cfn.StatusSuccess, wantID: planned, wantReason: "applied",
			wantPlans: []Plan{{ID: planned, Owner: planned, Replacement: true, failedID: "s/Web/old"}}},
		{name: "a failed replacement keeps the old id", fields: update("s/Web/old"), res: &fakeResource{apply: fails(unauthorized)},
			wantStatus: cfn.StatusFailed, wantID: "s/Web/old", wantReason: "Unauthorized: token refused",
			wantPlans: []Plan{{ID: planned, Owner: planned, Replacement: true, failedID: "s/Web/old"}}},
		{name: "an update with unreadable properties keeps the id", fields: update("s/Web/old"),
			res:        &fakeResource{id: func(Request) (string, error) { return "", errors.New("bad properties") }},
			wantStatus: cfn.StatusSuccess, wantID: "s/Web/old", wantReason: "applied",
			wantPlans: []Plan{{ID: "s/Web/old", Owner: "s/Web/old", failedID: "s/Web/old"}}},
		{name: "delete keeps the request's id", fields: deleteOf("s/Web/old"), res: &fakeResource{},
			wantStatus: cfn.StatusSuccess, wantID: "s/Web/old", wantReason: "deleted",
			wantPlans: []Plan{{ID: "s/Web/old", Owner: "s/Web/old", failedID: "s/Web/old"}}},
		{name: "a failed delete is FAILED", fields: deleteOf("s/Web/old"), res: &fakeResource{del: deleteFails(unauthorized)},
			wantStatus: cfn.StatusFailed, wantID: "s/Web/old", wantReason: "Unauthorized: token refused",
			wantPlans: []Plan{{ID: "s/Web/old", Owner: "s/Web/old", failedID: "s/Web/old"}}},
		{name: "the delete after a failed create cleans up what the create owned", fields: deleteOf(planned + "/create-failed"),
			res:        &fakeResource{del: func(context.Context, Request, Plan) (string, error) { return "deleted 1", nil }},
			wantStatus: cfn.StatusSuccess, wantID: planned + "/create-failed", wantReason: "deleted 1",
			wantPlans: []Plan{{ID: planned + "/create-failed", Owner: planned, AfterFailedCreate: true, failedID: planned + "/create-failed"}}},
		{name: "the delete after a failed create is SUCCESS when its cleanup fails", fields: deleteOf(planned + "/create-failed"),
			res: &fakeResource{del: deleteFails(unauthorized)}, wantStatus: cfn.StatusSuccess, wantID: planned + "/create-failed",
			wantReason: "the Create failed, and so did the cleanup after it (Unauthorized: token refused); what it may have written is owned by " + planned,
			wantPlans:  []Plan{{ID: planned + "/create-failed", Owner: planned, AfterFailedCreate: true, failedID: planned + "/create-failed"}}},
		{name: "a panic is FAILED", res: &fakeResource{apply: func(context.Context, Request, Plan) (string, map[string]string, error) { panic("oops") }},
			wantStatus: cfn.StatusFailed, wantID: planned + "/create-failed", wantReason: "Internal: the function panicked: oops; see its logs",
			wantPlans: []Plan{created}},
		{name: "a panic in the delete after a failed create is SUCCESS", fields: deleteOf(planned + "/create-failed"),
			res:        &fakeResource{del: func(context.Context, Request, Plan) (string, error) { panic("oops") }},
			wantStatus: cfn.StatusSuccess, wantID: planned + "/create-failed",
			wantReason: "the Create failed, and so did the cleanup after it (Internal: the function panicked: oops; see its logs); what it may have written is owned by " + planned,
			wantPlans:  []Plan{{ID: planned + "/create-failed", Owner: planned, AfterFailedCreate: true, failedID: planned + "/create-failed"}}},
		{name: "an unknown request type is FAILED without work", fields: map[string]any{"RequestType": "Upsert", "PhysicalResourceId": "p"},
			res: &fakeResource{}, wantStatus: cfn.StatusFailed, wantID: "p", wantReason: `InvalidEvent: RequestType "Upsert": want Create, Update or Delete`},
		{name: "a request without its ids is FAILED without work", fields: map[string]any{"RequestId": nil, "LogicalResourceId": nil},
			res: &fakeResource{id: func(Request) (string, error) { return "id", nil }}, wantStatus: cfn.StatusFailed, wantID: "id" + FailedCreateSuffix,
			wantReason: "InvalidEvent: custom resource request lacks RequestId, LogicalResourceId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got := h.send(ctx, t, tt.res, tt.fields)
			want := cfn.Response{Status: tt.wantStatus, PhysicalResourceID: tt.wantID, Reason: tt.wantReason, Data: tt.wantData,
				StackID: got.StackID, RequestID: got.RequestID, LogicalResourceID: got.LogicalResourceID}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(cfn.Response{})); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPlans, tt.res.received(), cmp.AllowUnexported(Plan{})); diff != "" {
				t.Errorf("plans the work received (-want +got):\n%s", diff)
			}
		})
	}
}

// TestServeRollbackOfAFailedCreate: the Delete CloudFormation sends for a
// failed Create carries the FAILED answer's id, and the resource's Delete
// is told to clean up what the Create owned.
func TestServeRollbackOfAFailedCreate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var createOwner string
	res := &fakeResource{
		apply: func(_ context.Context, _ Request, p Plan) (string, map[string]string, error) {
			createOwner = p.Owner
			return "", nil, invoke.Invalid("output Never stayed empty")
		},
		del: func(_ context.Context, _ Request, p Plan) (string, error) {
			if p.Owner != createOwner || !p.AfterFailedCreate {
				return "", errors.New("not the create's owner")
			}
			return "deleted 1", nil
		},
	}
	failed := h.send(t.Context(), t, res, nil)
	if failed.Status != cfn.StatusFailed || !strings.HasSuffix(failed.PhysicalResourceID, FailedCreateSuffix) {
		t.Fatalf("Create answered %+v, want FAILED with a %s id", failed, FailedCreateSuffix)
	}
	deleted := h.send(t.Context(), t, res, map[string]any{"RequestType": "Delete", "PhysicalResourceId": failed.PhysicalResourceID})
	if deleted.Status != cfn.StatusSuccess || deleted.Reason != "deleted 1" || deleted.PhysicalResourceID != failed.PhysicalResourceID {
		t.Errorf("Delete answered %+v, want SUCCESS deleting what %s owned, under the failed id", deleted, createOwner)
	}
}

// TestServeLeavesTimeToAnswer: the work runs under a deadline that keeps
// the time to answer before the invocation's deadline less its margin.
func TestServeLeavesTimeToAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var workDeadline time.Time
	res := &fakeResource{apply: func(ctx context.Context, _ Request, _ Plan) (string, map[string]string, error) {
		workDeadline, _ = ctx.Deadline()
		return "ok", nil, nil
	}}
	h.send(ctx, t, res, nil)
	if want := deadline.Add(-invoke.DeadlineMargin - 50*time.Millisecond); !workDeadline.Equal(want) {
		t.Errorf("the work's deadline is %v before the invocation's, want %v (margin and the answer's reserve)",
			deadline.Sub(workDeadline), deadline.Sub(want))
	}
}

// shortDeadline is an invocation context with 450 ms left after the
// deadline margin, and a harness that keeps 150 ms of it for the answer
// (time enough for a loopback PUT on a loaded machine).
func shortDeadline(tb testing.TB) (context.Context, time.Time, *harness) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), invoke.DeadlineMargin+450*time.Millisecond)
	tb.Cleanup(cancel)
	deadline, _ := ctx.Deadline()
	h := newTimedHarness(tb, WithTiming(150*time.Millisecond, 10*time.Millisecond, time.Second, func(int) time.Duration { return time.Millisecond }))
	return ctx, deadline, h
}

// TestServeAnswersBeforeTheDeadline: work that ignores its context is cut,
// and the answer still goes out before the invocation's deadline less its
// margin.
func TestServeAnswersBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	res := &fakeResource{apply: func(context.Context, Request, Plan) (string, map[string]string, error) {
		<-release // ignores ctx
		return "too late", nil, nil
	}}
	ctx, deadline, h := shortDeadline(t)
	resp := h.send(ctx, t, res, nil)
	if !time.Now().Before(deadline.Add(-invoke.DeadlineMargin)) {
		t.Error("answered after the invocation's deadline less its margin")
	}
	if resp.Status != cfn.StatusFailed || !strings.HasPrefix(resp.Reason, "Timeout: the work did not end within the function's deadline") ||
		resp.PhysicalResourceID != planned+FailedCreateSuffix || len(res.received()) != 1 {
		t.Errorf("answer %+v after %d calls, want FAILED Timeout after 1", resp, len(res.received()))
	}
}

// TestServeWaitsForTheWorksOwnError: work that ends at its deadline with
// its own error, within the grace, is answered with it.
func TestServeWaitsForTheWorksOwnError(t *testing.T) {
	t.Parallel()
	res := &fakeResource{apply: func(ctx context.Context, _ Request, _ Plan) (string, map[string]string, error) {
		<-ctx.Done()
		return "", nil, &invoke.Error{Code: invoke.Timeout, Message: "release web not ready: 1 of 3 pods"}
	}}
	ctx, _, h := shortDeadline(t)
	resp := h.send(ctx, t, res, nil)
	if resp.Status != cfn.StatusFailed || resp.Reason != "Timeout: release web not ready: 1 of 3 pods" {
		t.Errorf("answer %s %q, want the work's own Timeout", resp.Status, resp.Reason)
	}
}

// TestServeRefusesWhatItCannotAnswer: a request without a usable
// ResponseURL is refused as InvalidEvent, nothing is sent and no work runs.
func TestServeRefusesWhatItCannotAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := &fakeResource{}
	for _, p := range []string{
		`{"RequestType":"Create","ResponseURL":"http://cfn.s3.amazonaws.com/x"}`,
		`{"RequestType":"Create","ResponseURL":"https://169.254.169.254/x"}`,
		`{"RequestType":"Create","ResponseURL":"https://cfn.s3.amazonaws.com.evil.example/x"}`,
		`{"RequestType":"Create","ResponseURL":7}`,
		`{"RequestType":"Create"}`,
		`not json`,
	} {
		out, err := h.s.Serve(t.Context(), []byte(p), res)
		var e *invoke.Error
		if !errors.As(err, &e) || e.Code != invoke.InvalidEvent || out != nil {
			t.Errorf("Serve(%s) = %s, %v; want InvalidEvent", p, out, err)
		}
	}
	if n := len(h.rec.received()); n != 0 || len(res.received()) != 0 {
		t.Errorf("%d answers sent and %d pieces of work run, want none", n, len(res.received()))
	}
}

// TestServeAnswerNotDelivered: an answer CloudFormation refuses is an
// Unavailable error, so that Lambda retries an asynchronous invocation.
func TestServeAnswerNotDelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, http.StatusForbidden)
	out, err := h.s.Serve(t.Context(), payload(t, nil), &fakeResource{})
	var e *invoke.Error
	if !errors.As(err, &e) || e.Code != invoke.Unavailable || out != nil {
		t.Fatalf("Serve = %s, %v; want Unavailable", out, err)
	}
	want := "the answer (SUCCESS) could not be delivered to CloudFormation: PUT https://cfn-response.s3.amazonaws.com/r: answered 403; Lambda retries the invocation"
	if e.Message != want {
		t.Errorf("message %q, want %q", e.Message, want)
	}
	if n := len(h.rec.received()); n != 1 {
		t.Errorf("%d PUTs, want 1 (a 403 is final)", n)
	}
}
