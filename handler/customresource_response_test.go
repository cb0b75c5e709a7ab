package handler

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEncodeResponse(t *testing.T) {
	ids := cfnResponse{PhysicalResourceID: "stack/Objects/0123456789abcdef",
		StackID:   "arn:aws:cloudformation:us-east-1:123456789012:stack/stack/1c2fa620-982a-11e3-aff7-50e2416294e0",
		RequestID: "unique-id", LogicalResourceID: "Objects"}
	with := func(status, reason string, data map[string]string) cfnResponse {
		r := ids
		r.Status, r.Reason, r.Data = status, reason, data
		return r
	}
	tests := []struct {
		name       string
		in         cfnResponse
		wantStatus string
		wantReason func(string) bool
		wantData   map[string]string
	}{
		{name: "small, unchanged", in: with(statusSuccess, "applied created 1", map[string]string{"Host": "a"}),
			wantStatus: statusSuccess, wantReason: func(r string) bool { return r == "applied created 1" }, wantData: map[string]string{"Host": "a"}},
		{name: "FAILED gets a reason", in: with(statusFailed, "", nil),
			wantStatus: statusFailed, wantReason: func(r string) bool { return r != "" }},
		{name: "long reason trimmed", in: with(statusFailed, "InvalidEvent: "+strings.Repeat("x", 10000), nil),
			wantStatus: statusFailed, wantReason: func(r string) bool {
				return strings.HasPrefix(r, "InvalidEvent: xxx") && strings.HasSuffix(r, trimmedMark)
			}},
		{name: "long reason of escaped and multi-byte characters", in: with(statusFailed, strings.Repeat("\"<é>\n", 3000), nil),
			wantStatus: statusFailed, wantReason: func(r string) bool { return strings.HasSuffix(r, trimmedMark) && len(r) > 500 }},
		{name: "long reason beside data", in: with(statusSuccess, strings.Repeat("y", 5000), map[string]string{"A": strings.Repeat("v", 2000)}),
			wantStatus: statusSuccess, wantReason: func(r string) bool { return strings.HasSuffix(r, trimmedMark) },
			wantData: map[string]string{"A": strings.Repeat("v", 2000)}},
		{name: "data too large", in: with(statusSuccess, "ok", map[string]string{"A": strings.Repeat("v", 3000), "B": strings.Repeat("w", 2000)}),
			wantStatus: statusFailed, wantReason: func(r string) bool {
				return strings.Contains(r, "outputs (Data) take") && strings.Contains(r, "4096")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeResponse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > maxResponseBytes {
				t.Errorf("body of %d bytes, want at most %d", len(b), maxResponseBytes)
			}
			var got cfnResponse
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body is not JSON: %v\n%s", err, b)
			}
			if got.Status != tt.wantStatus || !tt.wantReason(got.Reason) {
				t.Errorf("status %s reason %.120q..., not as wanted", got.Status, got.Reason)
			}
			gotIDs := cfnResponse{PhysicalResourceID: got.PhysicalResourceID, StackID: got.StackID, RequestID: got.RequestID, LogicalResourceID: got.LogicalResourceID}
			if diff := cmp.Diff(ids, gotIDs); diff != "" {
				t.Errorf("ids changed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantData, got.Data); diff != "" {
				t.Errorf("data (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeResponseUsesTheRoom(t *testing.T) {
	r := cfnResponse{Status: statusFailed, Reason: strings.Repeat("z", 8000), PhysicalResourceID: "p", StackID: "s", RequestID: "r", LogicalResourceID: "l"}
	b, err := encodeResponse(r)
	if err != nil {
		t.Fatal(err)
	}
	// One more character of reason would not fit.
	if len(b) < maxResponseBytes-1 || len(b) > maxResponseBytes {
		t.Errorf("trimmed body is %d bytes, want %d or one less", len(b), maxResponseBytes)
	}
}

func TestResponseURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/arn%3Aaws?X-Amz-Signature=abc": true,
		"https://bucket.s3.cn-north-1.amazonaws.com.cn/key":                                                      true,
		"http://bucket.s3.amazonaws.com/key":                                                                     false,
		"https://169.254.169.254/latest":                                                                         false,
		"https://amazonaws.com.evil.example/k":                                                                   false,
		"":                                                                                                       false,
	} {
		if err := checkResponseURL(raw); (err == nil) != ok {
			t.Errorf("checkResponseURL(%q) = %v, want ok %v", raw, err, ok)
		}
	}
	got := safeURL("https://b.s3.amazonaws.com/arn%3Aaws%3Acloudformation/req?X-Amz-Signature=secret&X-Amz-Credential=AKIA")
	if want := "https://b.s3.amazonaws.com/arn%3Aaws%3Acloudformation/req"; got != want {
		t.Errorf("safeURL = %q, want %q", got, want)
	}
}

// recorder is a fake ResponseURL: it answers each PUT with the next code of
// codes (the last one repeated) and records what it received.
type recorder struct {
	mu     sync.Mutex
	codes  []int
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

func TestPutResponse(t *testing.T) {
	defer func(b []time.Duration) { putBackoff = b }(putBackoff)
	putBackoff = []time.Duration{time.Millisecond}
	tests := []struct {
		name         string
		codes        []int
		wantAttempts int
		wantErr      bool
	}{
		{name: "first time", codes: []int{200}, wantAttempts: 1},
		{name: "5xx retried", codes: []int{503, 500, 200}, wantAttempts: 3},
		{name: "4xx is final", codes: []int{403}, wantAttempts: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{codes: tt.codes}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			res, err := putResponse(t.Context(), srv.Client(), srv.URL+"/key?X-Amz-Signature=secret", []byte(`{"Status":"SUCCESS"}`))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the signature: %v", err)
			}
			if res.Attempts != tt.wantAttempts || len(rec.bodies) != tt.wantAttempts {
				t.Errorf("attempts %d (server saw %d), want %d", res.Attempts, len(rec.bodies), tt.wantAttempts)
			}
			for i := range rec.bodies {
				if rec.bodies[i] != `{"Status":"SUCCESS"}` || rec.ctypes[i] != "" {
					t.Errorf("PUT %d: body %q content type %q, want the body and no content type", i, rec.bodies[i], rec.ctypes[i])
				}
			}
		})
	}
}

func TestPutResponseGivesUpAtTheDeadline(t *testing.T) {
	defer func(b []time.Duration) { putBackoff = b }(putBackoff)
	putBackoff = []time.Duration{time.Millisecond}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	res, err := putResponse(ctx, srv.Client(), srv.URL+"/key?X-Amz-Signature=secret", []byte(`{}`))
	if err == nil || res.Attempts < 2 {
		t.Fatalf("attempts %d error %v, want several attempts and an error", res.Attempts, err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the signature: %v", err)
	}
}

func TestPutResponseConnectionRefused(t *testing.T) {
	defer func(b []time.Duration) { putBackoff = b }(putBackoff)
	putBackoff = []time.Duration{time.Millisecond}
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/key?X-Amz-Signature=secret"
	srv.Close() // nothing listens any more
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	res, err := putResponse(ctx, http.DefaultClient, url, []byte(`{}`))
	if err == nil || res.Attempts < 2 || res.StatusCode != 0 {
		t.Fatalf("attempts %d status %d error %v, want retries and an error", res.Attempts, res.StatusCode, err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the signature: %v", err)
	}
}
