package lambdart

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFunctionName(t *testing.T) {
	for in, want := range map[string]string{
		"lambda-eks-helm": "lambda-eks-helm",
		"function":        "function",
		"arn:aws:lambda:us-east-1:123456789012:function:lambda-eks":         "lambda-eks",
		"arn:aws:lambda:us-east-1:123456789012:function:lambda-eks:$LATEST": "lambda-eks",
		"arn:aws:lambda:us-east-1:123456789012:layer:lambda-eks":            "arn:aws:lambda:us-east-1:123456789012:layer:lambda-eks",
	} {
		if got := FunctionName(in); got != want {
			t.Errorf("FunctionName(%q) = %q, want %q", in, got, want)
		}
	}
}

// A name no function has is refused as Lambda refuses it, before anything
// runs: the AWS CLI shows ResourceNotFoundException.
func TestInvokeAPIUnknownFunction(t *testing.T) {
	api := InvokeAPI(map[string]*Function{"lambda-eks": nil})
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/2015-03-31/functions/lambda-eks-hlem/invocations", strings.NewReader(`{}`)))
	if rec.Code != http.StatusNotFound || rec.Header().Get("X-Amzn-ErrorType") != "ResourceNotFoundException" {
		t.Fatalf("status %d, error type %q, want 404 ResourceNotFoundException", rec.Code, rec.Header().Get("X-Amzn-ErrorType"))
	}
	var body struct{ Message string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || !strings.Contains(body.Message, "function:lambda-eks-hlem") {
		t.Errorf("body %s (%v), want the function's ARN named", rec.Body.Bytes(), err)
	}
}

// An Event invocation is answered 202 at once and queued behind the
// running invocation; WaitAsync returns once the queue is empty, and the
// outcomes are kept in order.
func TestInvokeAPIEventQueued(t *testing.T) {
	fn := start(t, 5*time.Second)
	srv := httptest.NewServer(InvokeAPI(map[string]*Function{"lambda-eks-lifecycle": fn}))
	t.Cleanup(srv.Close)
	post := func(typ, payload string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/2015-03-31/functions/lambda-eks-lifecycle/invocations", strings.NewReader(payload))
		if typ != "" {
			req.Header.Set("X-Amz-Invocation-Type", typ)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	began := time.Now()
	for _, p := range []string{`{"sleep":300,"n":1}`, `{"fail":"Drain.Timeout"}`} {
		if status, body := post("Event", p); status != http.StatusAccepted {
			t.Fatalf("event %s: %d %s", p, status, body)
		}
	}
	if time.Since(began) > 250*time.Millisecond {
		t.Errorf("Event answered after %s: it waited for the invocation", time.Since(began))
	}
	if fn.Pending() != 2 {
		t.Errorf("pending %d, want 2", fn.Pending())
	}
	if status, body := post("", `{"n":2}`); status != http.StatusOK || !strings.Contains(body, `"n":2`) {
		t.Errorf("request-response: %d %s", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := fn.WaitAsync(ctx); err != nil {
		t.Fatal(err)
	}
	results := fn.AsyncResults()
	if len(results) != 2 || fn.Pending() != 0 {
		t.Fatalf("%d results, %d pending, want 2 and 0", len(results), fn.Pending())
	}
	if r := results[0]; r.Err != nil || r.Error != nil || !strings.Contains(string(r.Response), `"n":1`) {
		t.Errorf("first: %s %v %v", r.Response, r.Error, r.Err)
	}
	if r := results[1]; r.Error == nil || r.Error.Type != "Drain.Timeout" || string(r.Payload) != `{"fail":"Drain.Timeout"}` {
		t.Errorf("second: %s %v %v", r.Response, r.Error, r.Err)
	}
}
