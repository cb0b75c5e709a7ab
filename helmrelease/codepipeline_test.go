package helmrelease

import (
	"bytes"
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
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	helmkube "helm.sh/helm/v4/pkg/kube"
	helmfake "helm.sh/helm/v4/pkg/kube/fake"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// fakeKube is Helm's printing fake client whose waiter does what the test
// says: ready, not ready until its bound, or failed.
type fakeKube struct {
	*helmfake.PrintingKubeClient
	mu      sync.Mutex
	rollout string // ready, slow, failed
	waits   int
}

func (k *fakeKube) set(rollout string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rollout = rollout
}

func (k *fakeKube) GetWaiter(helmkube.WaitStrategy) (helmkube.Waiter, error) {
	return fakeWaiter{k}, nil
}

func (k *fakeKube) GetWaiterWithOptions(helmkube.WaitStrategy, ...helmkube.WaitOption) (helmkube.Waiter, error) {
	return fakeWaiter{k}, nil
}

type fakeWaiter struct{ k *fakeKube }

func (w fakeWaiter) Wait(helmkube.ResourceList, time.Duration) error { return nil }

func (w fakeWaiter) WaitWithJobs(_ helmkube.ResourceList, timeout time.Duration) error {
	w.k.mu.Lock()
	w.k.waits++
	rollout := w.k.rollout
	w.k.mu.Unlock()
	switch rollout {
	case "slow":
		time.Sleep(timeout + 20*time.Millisecond)
		return errors.Join(errors.New("resource Deployment/default/web not ready. status: InProgress, message: 0 of 1 updated"),
			context.DeadlineExceeded)
	case "failed":
		return errors.New("resource Deployment/default/web not ready. status: Failed, message: Progress deadline exceeded")
	}
	return nil
}

func (w fakeWaiter) WaitForDelete(helmkube.ResourceList, time.Duration) error   { return nil }
func (w fakeWaiter) WatchUntilReady(helmkube.ResourceList, time.Duration) error { return nil }

// pipelineFixture is one fake AWS (S3 for the artifact, CodePipeline for
// the answers) and a Helm function whose every cluster is Helm's fake
// client over in-memory release storage.
type pipelineFixture struct {
	h       *Handler
	kube    *fakeKube
	store   *storage.Storage
	logs    *bytes.Buffer
	mu      sync.Mutex
	zips    map[string][]byte // by object key
	answers []map[string]any  // each with "op"
}

func newPipelineFixture(t *testing.T) *pipelineFixture {
	t.Helper()
	f := &pipelineFixture{zips: map[string][]byte{}, logs: &bytes.Buffer{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if target := r.Header.Get("X-Amz-Target"); target != "" {
			if !strings.Contains(auth, "Credential=AKIDFN/") {
				t.Errorf("%s signed as %s, want the function's credentials", target, auth)
			}
			var body map[string]any
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &body)
			body["op"] = strings.TrimPrefix(target, "CodePipeline_20150709.")
			f.mu.Lock()
			f.answers = append(f.answers, body)
			f.mu.Unlock()
			_, _ = w.Write([]byte(`{}`))
			return
		}
		if !strings.Contains(auth, "Credential=AKIDJOB/") {
			t.Errorf("GetObject %s signed as %s, want the job's artifact credentials", r.URL.Path, auth)
		}
		f.mu.Lock()
		b, ok := f.zips[strings.TrimPrefix(r.URL.Path, "/")]
		f.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`<Error><Code>NoSuchKey</Code><Message>no</Message></Error>`))
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
		return http.DefaultTransport.RoundTrip(r)
	})}

	mem := driver.NewMemory()
	mem.SetNamespace("default")
	f.store = storage.Init(mem)
	f.kube = &fakeKube{PrintingKubeClient: &helmfake.PrintingKubeClient{Out: io.Discard}, rollout: "ready"}
	cfg := action.NewConfiguration()
	cfg.Releases, cfg.KubeClient, cfg.Capabilities = f.store, f.kube, common.DefaultCapabilities

	log := slog.New(slog.NewJSONHandler(f.logs, nil))
	open := func(context.Context, auth.Target) (*invoke.Conn[*cluster], error) {
		return &invoke.Conn[*cluster]{Client: &cluster{}}, nil
	}
	f.h = newHandler(Config{Defaults: testDefaults}, open, nil, log, time.Now)
	f.h.configure = func(*cluster, string) (*action.Configuration, error) { return cfg, nil }
	f.h.aws = &aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDFN", "SECRETFN", ""),
		HTTPClient: client, Retryer: func() aws.Retryer { return aws.NopRetryer{} }}
	return f
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// job invokes the function with a job for the artifact at key, its
// deadline in, and returns the answer CodePipeline received.
func (f *pipelineFixture) job(t *testing.T, key, params, token string, in time.Duration) map[string]any {
	t.Helper()
	data := map[string]any{
		"actionConfiguration": map[string]any{"configuration": map[string]any{"FunctionName": "lambda-eks-helm", "UserParameters": params}},
		"inputArtifacts": []any{map[string]any{"name": "SourceOutput", "revision": "abc123",
			"location": map[string]any{"type": "S3", "s3Location": map[string]any{"bucketName": "artifacts", "objectKey": key}}}},
		"outputArtifacts":     []any{},
		"artifactCredentials": map[string]any{"accessKeyId": "AKIDJOB", "secretAccessKey": "SECRETJOB", "sessionToken": "TOKENJOB", "expirationTime": 1},
	}
	if token != "" {
		data["continuationToken"] = token
	}
	payload, _ := json.Marshal(map[string]any{"CodePipeline.job": map[string]any{"id": "job-1", "accountId": "123456789012", "data": data}})
	ctx, cancel := context.WithTimeout(context.Background(), in)
	defer cancel()
	f.mu.Lock()
	n := len(f.answers)
	f.mu.Unlock()
	if _, err := f.h.Invoke(ctx, payload); err != nil {
		t.Fatalf("invoke: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.answers) != n+1 {
		t.Fatalf("%d answers to one invocation", len(f.answers)-n)
	}
	if s := f.logs.String(); strings.Contains(s, "SECRETJOB") || strings.Contains(s, "TOKENJOB") {
		t.Error("the job's artifact credentials were logged")
	}
	return f.answers[n]
}

func (f *pipelineFixture) revisions(t *testing.T) []string {
	t.Helper()
	hist, err := f.store.History("web")
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(hist))
	for _, h := range hist {
		r, err := v1(h)
		if err != nil {
			t.Fatal(err)
		}
		out[r.Version-1] = r.Info.Status.String() + " " + r.Chart.Metadata.Version + " " + r.Labels[OwnerLabel]
	}
	return out
}

func failure(a map[string]any) (string, string) {
	d, _ := a["failureDetails"].(map[string]any)
	typ, _ := d["type"].(string)
	msg, _ := d["message"].(string)
	return typ, msg
}

// A job installs the artifact's chart with its values files, labelled as
// the pipeline's action's, waits for readiness and answers success with
// the release's output variables; a wait past the invocation continues
// through a token naming the revision; a rollout that fails, or outlasts
// the job's wait, marks the revision failed and answers failure; a bad
// chart answers a ConfigurationError naming it and writes nothing.
func TestPipelineJob(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	params := `{"pipeline":"web","release":"web","chart":"deploy/web","valuesFiles":["deploy/prod.yaml"],"values":{"replicas":3},"wait":"5m"}`
	label := PipelineParams{Pipeline: "web", Action: "deploy"}.ownerLabel()
	f.zips["v1.zip"] = zipOf(t, merged(under("deploy/web", testChart("web", "1.0.0")),
		map[string]string{"deploy/prod.yaml": "message: prod\n", "README.md": "x"}))
	f.zips["v2.zip"] = zipOf(t, merged(under("deploy/web", testChart("web", "2.0.0")), map[string]string{"deploy/prod.yaml": "message: two\n"}))
	f.zips["bad.zip"] = zipOf(t, merged(under("deploy/web", merged(testChart("web", "3.0.0"),
		map[string]string{"templates/bad.yaml": "{{ .Values.message | nosuchfunc }}\n"})), map[string]string{"deploy/prod.yaml": "message: bad\n"}))

	// 1: installed, ready.
	a := f.job(t, "v1.zip", params, "", time.Minute)
	want := map[string]any{"op": "PutJobSuccessResult", "jobId": "job-1", "outputVariables": map[string]any{
		"release": "web", "namespace": "default", "cluster": "demo", "owner": "codepipeline/web/deploy", "revision": "1",
		"status": "deployed", "chart": "web", "chartVersion": "1.0.0", "appVersion": "4.5", "artifactRevision": "abc123"},
		"executionDetails": map[string]any{"summary": "release web revision 1 deployed and ready (chart web 1.0.0)"}}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Fatalf("job 1 (-want +got):\n%s", diff)
	}
	rel, err := f.store.Get("web", 1)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := v1(rel)
	if diff := cmp.Diff(map[string]any{"message": "prod", "replicas": float64(3)}, r1.Config); diff != "" {
		t.Errorf("the release's values (-want +got):\n%s", diff)
	}
	if !strings.Contains(r1.Manifest, `message: "prod"`) {
		t.Errorf("manifest %s", r1.Manifest)
	}

	// 2: an upgrade whose rollout outlasts the invocation: continued.
	f.kube.set("slow")
	a = f.job(t, "v2.zip", params, "", codepipeline.AnswerBudget+helmMargin+invoke.DeadlineMargin+minBudget+500*time.Millisecond)
	tok, _ := a["continuationToken"].(string)
	cont, err := codepipeline.ParseContinuation(tok)
	if a["op"] != "PutJobSuccessResult" || err != nil || cont.Revision != 2 || a["outputVariables"] != nil {
		t.Fatalf("job 2: %v (token %+v, %v), want a continuation at revision 2", a, cont, err)
	}
	// The continuation, ready now: success, without reading the artifact.
	f.kube.set("ready")
	delete(f.zips, "v2.zip")
	a = f.job(t, "v2.zip", params, tok, time.Minute)
	if vars, _ := a["outputVariables"].(map[string]any); a["op"] != "PutJobSuccessResult" || vars["revision"] != "2" || vars["chartVersion"] != "2.0.0" ||
		vars["artifactRevision"] != "abc123" {
		t.Fatalf("job 2 continued: %v", a)
	}

	// 3: a rollout that fails: the revision is marked failed.
	f.kube.set("failed")
	f.zips["v2.zip"] = zipOf(t, merged(under("deploy/web", testChart("web", "2.0.0")), map[string]string{"deploy/prod.yaml": "message: two\n"}))
	a = f.job(t, "v2.zip", params, "", time.Minute)
	if typ, msg := failure(a); a["op"] != "PutJobFailureResult" || typ != "JobFailed" || !strings.Contains(msg, "RolloutFailed") ||
		!strings.Contains(msg, "revision 3 is failed") || !strings.Contains(msg, "Progress deadline exceeded") {
		t.Fatalf("job 3: %v", a)
	}

	// 4: a continuation past the job's wait: Timeout, the revision failed.
	f.kube.set("slow")
	a = f.job(t, "v1.zip", params, "", codepipeline.AnswerBudget+helmMargin+invoke.DeadlineMargin+minBudget+500*time.Millisecond)
	tok, _ = a["continuationToken"].(string)
	cont, _ = codepipeline.ParseContinuation(tok)
	cont.Start = time.Now().Add(-10 * time.Minute).Unix()
	a = f.job(t, "v1.zip", params, cont.Token(), time.Minute)
	if typ, msg := failure(a); typ != "JobFailed" || !strings.HasPrefix(msg, "Timeout: ") || !strings.Contains(msg, "revision 4 is failed") {
		t.Fatalf("job 4 continued past its wait: %v", a)
	}

	// 5: a bad chart: a ConfigurationError naming it; nothing written.
	f.kube.set("ready")
	a = f.job(t, "bad.zip", params, "", time.Minute)
	if typ, msg := failure(a); typ != "ConfigurationError" || !strings.Contains(msg, "chart deploy/web/ of input artifact SourceOutput") ||
		!strings.Contains(msg, "bad.yaml") {
		t.Fatalf("job 5: %v", a)
	}
	// Revision 3, failed, was where job 4 upgraded from: Helm marks it
	// superseded then, as after any failed revision.
	want2 := []string{"superseded 1.0.0 " + label, "superseded 2.0.0 " + label, "superseded 2.0.0 " + label, "failed 1.0.0 " + label}
	if diff := cmp.Diff(want2, f.revisions(t)); diff != "" {
		t.Errorf("revisions (-want +got):\n%s", diff)
	}

	// A token that is not the Helm function's, and UserParameters that do
	// not decode, are ConfigurationErrors.
	for _, tc := range []struct{ params, token string }{
		{params, codepipeline.Continuation{Start: 1}.Token()},
		{`{"pipeline":"web"}`, ""},
		{`{"pipeline":"web","release":"web","chart":"nowhere"}`, ""},
	} {
		if typ, msg := failure(f.job(t, "v1.zip", tc.params, tc.token, time.Minute)); typ != "ConfigurationError" {
			t.Errorf("%s %s: %s %s, want ConfigurationError", tc.params, tc.token, typ, msg)
		}
	}
}

// With atomic, a rollout that fails is rolled back to the last deployed
// revision; a dry run or "wait": false answers at once.
func TestPipelineJobAtomic(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	f.zips["v1.zip"] = zipOf(t, under("web", testChart("web", "1.0.0")))
	f.zips["v2.zip"] = zipOf(t, under("web", testChart("web", "2.0.0")))
	if a := f.job(t, "v1.zip", `{"pipeline":"web","release":"web","wait":false}`, "", time.Minute); a["op"] != "PutJobSuccessResult" || f.kube.waits != 0 {
		t.Fatalf("no wait: %v after %d waits", a, f.kube.waits)
	}
	f.kube.set("failed")
	a := f.job(t, "v2.zip", `{"pipeline":"web","release":"web","atomic":true}`, "", time.Minute)
	if _, msg := failure(a); !strings.Contains(msg, "atomic: rolled back to revision 1") {
		t.Fatalf("atomic: %v", a)
	}
	a = f.job(t, "v2.zip", `{"pipeline":"web","release":"web","dryRun":true}`, "", time.Minute)
	if vars, _ := a["outputVariables"].(map[string]any); a["op"] != "PutJobSuccessResult" || vars["chartVersion"] != "2.0.0" {
		t.Fatalf("dry run: %v", a)
	}
	label := PipelineParams{Pipeline: "web", Action: "deploy"}.ownerLabel()
	want := []string{"superseded 1.0.0 " + label, "failed 2.0.0 " + label, "deployed 1.0.0 " + label}
	if diff := cmp.Diff(want, f.revisions(t)); diff != "" {
		t.Errorf("revisions (-want +got):\n%s", diff)
	}
}
