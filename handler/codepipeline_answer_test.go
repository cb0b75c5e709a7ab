package handler

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// TestPipelineJobThatDoesNotDecodeIsAnswered: a job event the strict
// decoder refuses (here a field CodePipeline might add one day) is still
// answered, as a ConfigurationError naming the field, so that its
// pipeline does not hang until the action's timeout.
func TestPipelineJobThatDoesNotDecodeIsAnswered(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		bodies []map[string]any
		ops    []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		bodies, ops = append(bodies, body), append(ops, r.Header.Get("X-Amz-Target"))
		mu.Unlock()
		_, _ = io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		HTTPClient: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
			return http.DefaultTransport.RoundTrip(r)
		})}}
	h := New(testConfig, nil, discardLogger(), WithAWS(cfg))
	_, err := h.Invoke(context.Background(), []byte(`{"CodePipeline.job":{"id":"job-1","accountId":"123456789012","data":{},"futureField":true}}`))
	if err != nil {
		t.Fatalf("Invoke: %v (the failure was answered, so the invocation succeeds)", err)
	}
	if len(ops) != 1 || !strings.HasSuffix(ops[0], "PutJobFailureResult") {
		t.Fatalf("calls %v, want one PutJobFailureResult", ops)
	}
	details, _ := bodies[0]["failureDetails"].(map[string]any)
	if bodies[0]["jobId"] != "job-1" || details["type"] != "ConfigurationError" || !strings.Contains(details["message"].(string), "futureField") {
		t.Errorf("answer %v, want job-1 failed as a ConfigurationError naming futureField", bodies[0])
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
