package codepipeline

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../events/codepipeline-job.json")
	if err != nil {
		t.Fatal(err)
	}
	if !Is(raw) {
		t.Fatal("the sample is not a pipeline job")
	}
	ev, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Job.Data.ArtifactCredentials.ExpirationTime != 1796583600000 || ev.Job.Data.InputArtifacts[0].Location.S3Location.ObjectKey == "" {
		t.Errorf("decoded %+v", ev.Job.Data)
	}
	if s := fmt.Sprintf("%v %+v", ev.Job.Data.ArtifactCredentials, ev.Job.Data); strings.Contains(s, "replaced-by-local-sh") {
		t.Errorf("the artifact credentials print: %s", s)
	}
	for name, bad := range map[string]string{
		"unknown field":   strings.Replace(string(raw), `"accountId"`, `"acountId"`, 1),
		"wrong case":      strings.Replace(string(raw), `"inputArtifacts"`, `"InputArtifacts"`, 1),
		"no id":           strings.Replace(string(raw), `"id": "c0d3b1e5-0000-4000-8000-00000000cafe",`, ``, 1),
		"trailing":        string(raw) + "{}",
		"not an object":   `["CodePipeline.job"]`,
		"duplicate field": strings.Replace(string(raw), `"accountId": "123456789012",`, `"accountId": "1", "accountId": "2",`, 1),
	} {
		if _, err := Decode([]byte(bad)); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
			t.Errorf("%s: %v, want InvalidEvent", name, err)
		}
	}
	if Is([]byte(`{"action":"apply"}`)) || Is([]byte(`{"RequestType":"Create"}`)) {
		t.Error("an event or a custom resource taken for a job")
	}
}

func TestFailureType(t *testing.T) {
	t.Parallel()
	for code, want := range map[invoke.Code]string{invoke.InvalidEvent: "ConfigurationError", invoke.Forbidden: "PermissionError",
		invoke.Unauthorized: "PermissionError", invoke.Unavailable: "SystemUnavailable", invoke.Conflict: "JobFailed", invoke.Code("RolloutFailed"): "JobFailed"} {
		if got := failureType(code); got != want {
			t.Errorf("%s: %s, want %s", code, got, want)
		}
	}
	if n := len(Message(strings.Repeat("x", 9000))); n > 5000 {
		t.Errorf("message of %d characters", n)
	}
}

func TestFailed(t *testing.T) {
	t.Parallel()
	got := Failed(&invoke.Error{Code: invoke.Forbidden, Message: "no k8s-aws-v1.abc here"})
	want := Answer{Result: Failure, FailureType: "PermissionError", Message: "Forbidden: no k8s-aws-v1.REDACTED here", Code: invoke.Forbidden}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestContinuation(t *testing.T) {
	t.Parallel()
	c := Continuation{Start: 1796583600}
	got, err := ParseContinuation(c.Token())
	if err != nil || got != c {
		t.Errorf("token of %+v read as %+v, %v", c, got, err)
	}
	for _, bad := range []string{"", "x", "e30", "not base64!"} {
		if _, err := ParseContinuation(bad); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
			t.Errorf("token %q: %v, want InvalidEvent", bad, err)
		}
	}
}

func TestPickArtifact(t *testing.T) {
	t.Parallel()
	var a, b Artifact
	a.Name, b.Name = "src", "build"
	b.Location.Type, b.Location.S3Location.BucketName, b.Location.S3Location.ObjectKey = "S3", "bucket", "key"
	if got, err := PickArtifact([]Artifact{b, a}, ""); err != nil || got.Name != "build" {
		t.Errorf("first: %s, %v", got.Name, err)
	}
	for name, arts := range map[string][]Artifact{"src": {b, a}, "other": {b}, "": nil} {
		if _, err := PickArtifact(arts, name); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
			t.Errorf("%q: %v, want InvalidEvent", name, err)
		}
	}
}

func TestZip(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"b/c.yaml", "a.txt", "d/"} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("0123456789"))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	z, err := OpenZip(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a.txt", "b/c.yaml"}, z.Names()); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if !z.Has("./b//c.yaml") || z.Has("d") {
		t.Error("Has does not clean names or lists a directory")
	}
	if got, err := z.Read("a.txt", 4); err != nil || string(got) != "01234" {
		t.Errorf("Read with limit 4: %q, %v", got, err)
	}
	if _, err := z.Read("missing", 4); err == nil {
		t.Error("a missing file read")
	}
	if _, err := OpenZip([]byte("not a zip")); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
		t.Errorf("a non-zip: %v", err)
	}
}

func TestReadArtifactNoCredentials(t *testing.T) {
	t.Parallel()
	if _, err := ReadArtifact(context.Background(), aws.Config{}, Artifact{}, Credentials{}); invoke.AsError(err).Code != invoke.Forbidden {
		t.Errorf("no credentials: %v, want Forbidden", err)
	}
}

// rewrite sends every request to a test server.
type rewrite struct{ url string }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(r.url)
	if err != nil {
		return nil, err
	}
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	return http.DefaultTransport.RoundTrip(req)
}

func TestSend(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer Answer
		status int
		body   string
		op     string
		calls  int
		code   invoke.Code
	}{
		{"success", Answer{JobID: "j", Result: Success, OutputVariables: map[string]string{"a": "b"}}, 200, `{}`, "PutJobSuccessResult", 1, ""},
		{"continue", Answer{JobID: "j", Result: Continue, ContinuationToken: "t"}, 200, `{}`, "PutJobSuccessResult", 1, ""},
		{"failure", Answer{JobID: "j", Result: Failure, FailureType: "JobFailed", Message: "m"}, 200, `{}`, "PutJobFailureResult", 1, ""},
		{"answered already", Answer{JobID: "j", Result: Success}, 400, `{"__type":"InvalidJobStateException","message":"done"}`, "PutJobSuccessResult", 1, ""},
		{"refused", Answer{JobID: "j", Result: Success}, 400, `{"__type":"JobNotFoundException","message":"no"}`, "PutJobSuccessResult", 1, invoke.Unavailable},
		{"unavailable", Answer{JobID: "j", Result: Success}, 503, `{}`, "PutJobSuccessResult", 4, invoke.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				b, _ := io.ReadAll(r.Body)
				var body map[string]any
				if op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "CodePipeline_20150709."); op != tc.op || json.Unmarshal(b, &body) != nil ||
					body["jobId"] != "j" || !strings.Contains(r.Header.Get("Authorization"), "/codepipeline/aws4_request") {
					t.Errorf("request %s %s %s", r.Header.Get("X-Amz-Target"), r.Header.Get("Authorization"), b)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
				HTTPClient: &http.Client{Transport: rewrite{srv.URL}}}
			err := Send(context.Background(), cfg, slog.New(slog.DiscardHandler), tc.answer)
			if got := int(calls.Load()); got != tc.calls {
				t.Errorf("%d calls, want %d", got, tc.calls)
			}
			if tc.code == "" && err != nil || tc.code != "" && (err == nil || invoke.AsError(err).Code != tc.code) {
				t.Errorf("%v, want code %q", err, tc.code)
			}
		})
	}
}

// TestJobID: the id of a job that Decode refuses is still read, so that
// the refusal is answered; nothing is read from what names no job.
func TestJobID(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		`{"CodePipeline.job":{"id":"j-1","data":{},"newField":1}}`: "j-1",
		`{"CodePipeline.job":{"id":"j-2"},"extra":true}`:           "j-2",
		`{"CodePipeline.job":{"data":{}}}`:                         "",
		`{"CodePipeline.job":{"id":7}}`:                            "",
		`[1]`:                                                      "",
		`not json`:                                                 "",
	} {
		if got := JobID([]byte(raw)); got != want {
			t.Errorf("JobID(%s) = %q, want %q", raw, got, want)
		}
	}
}

// ReadArtifact words S3's answers: throttling and 5xx (after the SDK's
// retries, none here) are Unavailable, so that CodePipeline sees
// SystemUnavailable; a denied read is Forbidden, a missing key NotFound.
// The read is signed with the job's credentials.
func TestReadArtifactErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		body   string
		code   invoke.Code
	}{
		{"ok", 200, "zip bytes", ""},
		{"throttled", 503, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`, invoke.Unavailable},
		{"internal error", 500, `<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>`, invoke.Unavailable},
		{"denied", 403, `<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`, invoke.Forbidden},
		{"missing", 404, `<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`, invoke.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.Contains(r.Header.Get("Authorization"), "Credential=AKIDJOB/") {
					t.Errorf("GetObject signed as %s, want the job's credentials", r.Header.Get("Authorization"))
				}
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDFN", "SECRETFN", ""),
				HTTPClient: &http.Client{Transport: rewrite{srv.URL}}, Retryer: func() aws.Retryer { return aws.NopRetryer{} }}
			var art Artifact
			art.Name, art.Location.Type, art.Location.S3Location.BucketName, art.Location.S3Location.ObjectKey = "src", "S3", "bucket", "a/b.zip"
			b, err := ReadArtifact(context.Background(), cfg, art, Credentials{AccessKeyID: "AKIDJOB", SecretAccessKey: "SECRETJOB", SessionToken: "T"})
			if tc.code == "" {
				if err != nil || string(b) != tc.body {
					t.Fatalf("read %q, %v; want %q", b, err, tc.body)
				}
				return
			}
			if got := invoke.AsError(err).Code; got != tc.code {
				t.Fatalf("%v: code %s, want %s", err, got, tc.code)
			}
			if strings.Contains(err.Error(), "SECRETJOB") {
				t.Errorf("the error names the job's secret: %v", err)
			}
		})
	}
}

// Send ends invoke.DeadlineMargin before its context's deadline: every
// attempt's request ends by then, and the last is an Unavailable error.
func TestSendDeadline(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(2 * time.Second)
	var latest atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	seen := func(r *http.Request) (*http.Response, error) {
		if d, ok := r.Context().Deadline(); ok && d.UnixNano() > latest.Load() {
			latest.Store(d.UnixNano())
		}
		return rewrite{srv.URL}.RoundTrip(r)
	}
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		HTTPClient: &http.Client{Transport: roundTripFunc(seen)}}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	err := Send(ctx, cfg, slog.New(slog.DiscardHandler), Answer{JobID: "j", Result: Success})
	if invoke.AsError(err).Code != invoke.Unavailable {
		t.Errorf("%v, want Unavailable", err)
	}
	if got, limit := time.Unix(0, latest.Load()), deadline.Add(-invoke.DeadlineMargin); latest.Load() == 0 || got.After(limit) {
		t.Errorf("a request's deadline %s is past %s (the invocation's deadline less the margin)", got.Format(time.StampMilli), limit.Format(time.StampMilli))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
