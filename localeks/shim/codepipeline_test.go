package shim

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCodePipelineJobAnswers: the shim answers PutJobSuccessResult and
// PutJobFailureResult as CodePipeline does (moto never sees them), refuses
// what CodePipeline refuses, and records every call at /__codepipeline.
func TestCodePipelineJobAnswers(t *testing.T) {
	t.Parallel()
	srv, client, proxy := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("moto got %s %s", r.Method, r.URL.Path)
	})
	const job = "11111111-2222-3333-4444-555555555555"
	call := func(op, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "https://codepipeline.us-east-1.amazonaws.com/", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Amz-Target", "CodePipeline_20150709."+op)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=ASIAJOB/20261206/us-east-1/codepipeline/aws4_request, SignedHeaders=host, Signature=x")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			Type string `json:"__type"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Type
	}
	steps := []struct {
		op, body string
		status   int
		errType  string
	}{
		{"PutJobSuccessResult", `{"jobId":"` + job + `","continuationToken":"wait-1","executionDetails":{"summary":"waiting"}}`, 200, ""},
		{"PutJobSuccessResult", `{"jobId":"` + job + `","continuationToken":"wait-2","outputVariables":{"objects":"1"}}`, 400, "ValidationException"},
		{"PutJobSuccessResult", `{"jobId":"` + job + `","outputVariables":{"objects":"2","revision":"abc"}}`, 200, ""},
		{"PutJobFailureResult", `{"jobId":"` + job + `","failureDetails":{"type":"JobFailed","message":"late"}}`, 400, "InvalidJobStateException"},
		{"PutJobFailureResult", `{"jobId":"not-a-job","failureDetails":{"type":"JobFailed","message":"x"}}`, 400, "ValidationException"},
		{"PutJobFailureResult", `{"jobId":"` + strings.Replace(job, "1", "9", 1) + `","failureDetails":{"type":"Broken","message":"x"}}`, 400, "ValidationException"},
		{"PutJobFailureResult", `{"jobId":"` + strings.Replace(job, "1", "9", 1) + `","failureDetails":{"type":"ConfigurationError","message":"bad"}}`, 200, ""},
		{"GetJobDetails", `{"jobId":"` + job + `"}`, 400, "UnknownOperationException"},
	}
	for i, s := range steps {
		status, errType := call(s.op, s.body)
		if status != s.status || errType != s.errType {
			t.Errorf("step %d %s: %d %s, want %d %s", i, s.op, status, errType, s.status, s.errType)
		}
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Get(proxy + "/__codepipeline")
	if err != nil {
		t.Fatal(err)
	}
	var got []JobCall
	err = json.NewDecoder(resp.Body).Decode(&got)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	type brief struct {
		Job, Result, Token, Error string
		Status                    int
		Outputs                   map[string]string
	}
	var briefs []brief
	for _, c := range got {
		if c.AccessKeyID != "ASIAJOB" {
			t.Errorf("call recorded with access key %q", c.AccessKeyID)
		}
		briefs = append(briefs, brief{c.JobID, c.Result, c.ContinuationToken, c.Error, c.Status, c.OutputVariables})
	}
	other := strings.Replace(job, "1", "9", 1)
	want := []brief{
		{job, "success", "wait-1", "", 200, nil},
		{job, "success", "wait-2", "ValidationException", 400, map[string]string{"objects": "1"}},
		{job, "success", "", "", 200, map[string]string{"objects": "2", "revision": "abc"}},
		{job, "failure", "", "InvalidJobStateException", 400, nil},
		{"not-a-job", "failure", "", "ValidationException", 400, nil},
		{other, "failure", "", "ValidationException", 400, nil},
		{other, "failure", "", "", 200, nil},
	}
	if diff := cmp.Diff(want, briefs); diff != "" {
		t.Errorf("GET /__codepipeline (-want +got):\n%s", diff)
	}
	if n := len(srv.JobCalls()); n != len(want) {
		t.Errorf("JobCalls: %d", n)
	}
}
