package cfnresource

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/google/go-cmp/cmp"
)

func TestEncodeResponse(t *testing.T) {
	ids := cfn.Response{PhysicalResourceID: "stack/Objects/0123456789abcdef",
		StackID:   "arn:aws:cloudformation:us-east-1:123456789012:stack/stack/1c2fa620-982a-11e3-aff7-50e2416294e0",
		RequestID: "unique-id", LogicalResourceID: "Objects"}
	with := func(status cfn.StatusType, reason string, data map[string]any) cfn.Response {
		r := ids
		r.Status, r.Reason, r.Data = status, reason, data
		return r
	}
	tests := []struct {
		name       string
		in         cfn.Response
		wantStatus cfn.StatusType
		wantReason func(string) bool
		wantData   map[string]any
	}{
		{name: "small, unchanged", in: with(cfn.StatusSuccess, "applied created 1", map[string]any{"Host": "a"}),
			wantStatus: cfn.StatusSuccess, wantReason: func(r string) bool { return r == "applied created 1" }, wantData: map[string]any{"Host": "a"}},
		{name: "SUCCESS without a reason", in: with(cfn.StatusSuccess, "", nil),
			wantStatus: cfn.StatusSuccess, wantReason: func(r string) bool { return r == "" }},
		{name: "FAILED gets a reason", in: with(cfn.StatusFailed, "", nil),
			wantStatus: cfn.StatusFailed, wantReason: func(r string) bool { return r == "failed" }},
		{name: "long reason trimmed", in: with(cfn.StatusFailed, "InvalidEvent: "+strings.Repeat("x", 10000), nil),
			wantStatus: cfn.StatusFailed, wantReason: func(r string) bool {
				return strings.HasPrefix(r, "InvalidEvent: xxx") && strings.HasSuffix(r, trimmedMark)
			}},
		{name: "long reason of escaped and multi-byte characters", in: with(cfn.StatusFailed, strings.Repeat("\"<é>\n", 3000), nil),
			wantStatus: cfn.StatusFailed, wantReason: func(r string) bool {
				return strings.HasPrefix(r, "\"<é>\n\"<é>\n") && strings.HasSuffix(r, trimmedMark) && len(r) > 500
			}},
		{name: "long reason beside data", in: with(cfn.StatusSuccess, strings.Repeat("y", 5000), map[string]any{"A": strings.Repeat("v", 2000)}),
			wantStatus: cfn.StatusSuccess, wantReason: func(r string) bool { return strings.HasPrefix(r, "yyy") && strings.HasSuffix(r, trimmedMark) },
			wantData: map[string]any{"A": strings.Repeat("v", 2000)}},
		{name: "data too large", in: with(cfn.StatusSuccess, "ok", map[string]any{"A": strings.Repeat("v", 3000), "B": strings.Repeat("w", 2000)}),
			wantStatus: cfn.StatusFailed, wantReason: func(r string) bool {
				return strings.HasPrefix(r, "InvalidEvent: the outputs (Data) take 5015 bytes of JSON") && strings.Contains(r, "at most 4096 bytes")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := encodeResponse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxResponseBytes {
				t.Errorf("body of %d bytes, want at most %d", len(b), MaxResponseBytes)
			}
			var got cfn.Response
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body is not JSON: %v\n%s", err, b)
			}
			if got.Status != tt.wantStatus || !tt.wantReason(got.Reason) {
				t.Errorf("status %s reason %.120q..., not as wanted", got.Status, got.Reason)
			}
			gotIDs := cfn.Response{PhysicalResourceID: got.PhysicalResourceID, StackID: got.StackID, RequestID: got.RequestID, LogicalResourceID: got.LogicalResourceID}
			if diff := cmp.Diff(ids, gotIDs, cmp.AllowUnexported(cfn.Response{})); diff != "" {
				t.Errorf("ids changed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantData, got.Data); diff != "" {
				t.Errorf("data (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeResponseUsesTheRoom(t *testing.T) {
	t.Parallel()
	for _, reason := range []string{strings.Repeat("z", 8000), strings.Repeat("é", 8000)} {
		r := cfn.Response{Status: cfn.StatusFailed, Reason: reason, PhysicalResourceID: "p", StackID: "s", RequestID: "r", LogicalResourceID: "l"}
		b, err := encodeResponse(r)
		if err != nil {
			t.Fatal(err)
		}
		// One more character of reason would not fit.
		if one := len(string([]rune(reason)[:1])); len(b) > MaxResponseBytes || len(b)+one <= MaxResponseBytes {
			t.Errorf("reason of %q: trimmed body is %d bytes, want more than %d and at most %d", reason[:one], len(b), MaxResponseBytes-one, MaxResponseBytes)
		}
	}
}

// recorder is a fake ResponseURL: it answers each PUT with the next code of
// codes (the last one repeated) and records what it received.
type recorder struct {
	codes []int

	mu     sync.Mutex
	bodies []string
	ctypes []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	code := r.codes[min(len(r.bodies), len(r.codes)-1)]
	r.bodies = append(r.bodies, string(b))
	r.ctypes = append(r.ctypes, strings.Join(req.Header.Values("Content-Type"), ","))
	if req.Method != http.MethodPut {
		code = http.StatusMethodNotAllowed
	}
	w.WriteHeader(code)
}

// received returns the bodies received so far.
func (r *recorder) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

// newRecorder starts a fake ResponseURL answering codes.
func newRecorder(tb testing.TB, codes ...int) (*recorder, *httptest.Server) {
	tb.Helper()
	rec := &recorder{codes: codes}
	srv := httptest.NewServer(rec)
	tb.Cleanup(srv.Close)
	return rec, srv
}

// toServer sends every request to srv, whatever its URL says, as the
// replica's shim does: the engine PUTs only to AWS hosts.
type toServer struct{ srv *httptest.Server }

func (t toServer) RoundTrip(r *http.Request) (*http.Response, error) {
	u, err := url.Parse(t.srv.URL)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
	return t.srv.Client().Transport.RoundTrip(r)
}

// testTiming is WithTiming for tests: 50 ms kept for the answer, 10 ms of
// grace, a second per PUT attempt, 1 ms between attempts.
func testTiming() Option {
	return WithTiming(50*time.Millisecond, 10*time.Millisecond, time.Second, func(int) time.Duration { return time.Millisecond })
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestPut(t *testing.T) {
	tests := []struct {
		name         string
		codes        []int
		wantAttempts int
		wantErr      string
	}{
		{name: "first time", codes: []int{200}, wantAttempts: 1},
		{name: "5xx retried", codes: []int{503, 500, 200}, wantAttempts: 3},
		{name: "4xx is final", codes: []int{403}, wantAttempts: 1, wantErr: "answered 403"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, srv := newRecorder(t, tt.codes...)
			var pauses []int
			s := NewServer(discard(), WithClient(srv.Client()),
				WithTiming(time.Second, time.Second, time.Second, func(n int) time.Duration { pauses = append(pauses, n); return time.Millisecond }))
			res, err := s.put(t.Context(), srv.URL+"/key?X-Amz-Signature=secret", []byte(`{"Status":"SUCCESS"}`))
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the signature: %v", err)
			}
			bodies := rec.received()
			if res.Attempts != tt.wantAttempts || len(bodies) != tt.wantAttempts || res.StatusCode != tt.codes[len(tt.codes)-1] {
				t.Errorf("attempts %d (server saw %d), last status %d; want %d, %d", res.Attempts, len(bodies), res.StatusCode,
					tt.wantAttempts, tt.codes[len(tt.codes)-1])
			}
			for i := range bodies {
				if bodies[i] != `{"Status":"SUCCESS"}` || rec.ctypes[i] != "" {
					t.Errorf("PUT %d: body %q content type %q, want the body and no content type", i, bodies[i], rec.ctypes[i])
				}
			}
			wantPauses := []int{}
			for n := 1; n < tt.wantAttempts; n++ {
				wantPauses = append(wantPauses, n)
			}
			if diff := cmp.Diff(wantPauses, append([]int{}, pauses...)); diff != "" {
				t.Errorf("backoff asked for (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPutGivesUp: the PUT is retried until its context ends, and the error
// says what the last answered attempt got, without the URL's signature.
func TestPutGivesUp(t *testing.T) {
	_, answering := newRecorder(t, http.StatusBadGateway)
	refusing := httptest.NewServer(http.NotFoundHandler())
	refusing.Close() // nothing listens any more
	tests := []struct {
		name       string
		url        string
		wantStatus int
		wantErr    string
		wantCause  error
	}{
		{"5xx to the end", answering.URL, http.StatusBadGateway, "PUT " + answering.URL + "/key: answered 502 (gave up after 3 attempts", context.Canceled},
		{"connection refused", refusing.URL, 0, "PUT " + refusing.URL + "/key: ", syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			// The deadline comes during the third pause.
			backoff := func(n int) time.Duration {
				if n == 3 {
					cancel()
					return time.Hour
				}
				return time.Millisecond
			}
			s := NewServer(discard(), WithClient(&http.Client{}), WithTiming(time.Second, time.Second, time.Second, backoff))
			res, err := s.put(ctx, tt.url+"/key?X-Amz-Signature=secret", []byte(`{}`))
			if err == nil || res.Attempts != 3 || res.StatusCode != tt.wantStatus {
				t.Fatalf("attempts %d status %d error %v; want 3 attempts, status %d and an error", res.Attempts, res.StatusCode, err, tt.wantStatus)
			}
			if !strings.HasPrefix(err.Error(), tt.wantErr) || !errors.Is(err, tt.wantCause) {
				t.Errorf("error %q, want %q... with %v in its chain", err, tt.wantErr, tt.wantCause)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the signature: %v", err)
			}
		})
	}
}

// TestPutStopsAtTheDeadline: retries end with the context's deadline.
func TestPutStopsAtTheDeadline(t *testing.T) {
	t.Parallel()
	_, srv := newRecorder(t, http.StatusBadGateway)
	s := NewServer(discard(), WithClient(srv.Client()), testTiming())
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	res, err := s.put(ctx, srv.URL+"/key?X-Amz-Signature=secret", []byte(`{}`))
	if err == nil || res.Attempts < 2 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("attempts %d error %v, want several attempts and the deadline's error", res.Attempts, err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the signature: %v", err)
	}
}

// TestPutAttemptIsBounded: an attempt that gets no answer is cut after
// the attempt's bound, and the next one is made.
func TestPutAttemptIsBounded(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so that the server sees the client go
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			select { // never answers
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close, which waits for the handler
	s := NewServer(discard(), WithClient(srv.Client()),
		WithTiming(time.Second, time.Second, 20*time.Millisecond, func(int) time.Duration { return time.Millisecond }))
	res, err := s.put(t.Context(), srv.URL+"/key", []byte(`{}`))
	if err != nil || res.Attempts != 2 || res.StatusCode != http.StatusOK {
		t.Errorf("attempts %d status %d error %v, want 2 attempts, the second answered 200", res.Attempts, res.StatusCode, err)
	}
}

func TestDefaultBackoff(t *testing.T) {
	t.Parallel()
	got := make([]time.Duration, 0, 6)
	for _, n := range []int{0, 1, 2, 3, 4, 9} {
		got = append(got, defaultBackoff(n))
	}
	want := []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 800 * time.Millisecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pauses (-want +got):\n%s", diff)
	}
}
