package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// pipelineBucket is the artifact store the tests play CodePipeline's.
const pipelineBucket = "codepipeline-us-east-1-artifacts"

// pipeline plays CodePipeline against the built bootstrap: it uploads an
// artifact zip to moto's S3, sends a CodePipeline.job event with
// artifact credentials from moto's STS (a session of another role than the
// function's, as CodePipeline issues), and reads the answers the shim
// recorded.
type pipeline struct {
	h     *harness
	fn    *lambdart.Function
	ns    string
	name  string
	proxy string // the shim the function reaches AWS through
}

// pipelineShim starts a shim of this test's own, configured as the
// replica's (shim.json), so that the CodePipeline answers are this
// checkout's even when the replica's shim was built before it; the
// function reaches AWS through it.
func pipelineShim(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.stack.Paths.Dir, "shim.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg shim.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	srv, err := shim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

func (p *pipeline) upload(t *testing.T, key string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	c := p.h.motoS3(t)
	_, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(pipelineBucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	var exists *s3types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		t.Fatalf("create bucket: %v", err)
	}
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(pipelineBucket), Key: aws.String(key),
		Body: bytes.NewReader(buf.Bytes())}); err != nil {
		t.Fatalf("upload artifact: %v", err)
	}
}

// jobEvent is a CodePipeline.job event for an artifact at key, with
// artifact credentials from moto's STS (returned too).
func (p *pipeline) jobEvent(t *testing.T, id, key, params, token string) ([]byte, aws.Credentials) {
	t.Helper()
	creds, err := p.h.stack.AssumeRole(context.Background(), stack.ExecRole, "codepipeline-"+randomHex(3))
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]any{
		"actionConfiguration": map[string]any{"configuration": map[string]any{"FunctionName": "lambda-eks", "UserParameters": params}},
		"inputArtifacts": []any{map[string]any{"name": "SourceOutput", "revision": "rev-" + id[:8],
			"location": map[string]any{"type": "S3", "s3Location": map[string]any{"bucketName": pipelineBucket, "objectKey": key}}}},
		"outputArtifacts": []any{},
		"artifactCredentials": map[string]any{"accessKeyId": creds.AccessKeyID, "secretAccessKey": creds.SecretAccessKey,
			"sessionToken": creds.SessionToken, "expirationTime": creds.Expires.UnixMilli()},
	}
	if token != "" {
		data["continuationToken"] = token
	}
	ev, err := json.Marshal(map[string]any{"CodePipeline.job": map[string]any{"id": id, "accountId": stack.Account, "data": data}})
	if err != nil {
		t.Fatal(err)
	}
	return ev, creds
}

// job sends one job (or its continuation) and returns the shim's record of
// the answer to it.
func (p *pipeline) job(t *testing.T, id, key, params, token string) shim.JobCall {
	t.Helper()
	ev, creds := p.jobEvent(t, id, key, params, token)
	out, fnErr, err := p.fn.Invoke(context.Background(), ev)
	if err != nil || fnErr != nil {
		t.Fatalf("job %s: %v %v", id, err, fnErr)
	}
	if bytes.Contains(p.fn.Logs(), []byte(creds.SecretAccessKey)) || bytes.Contains(p.fn.Logs(), []byte(creds.SessionToken)) {
		t.Errorf("the function logged the job's artifact credentials")
	}
	calls := p.calls(t, id)
	if len(calls) == 0 {
		t.Fatalf("job %s: no answer reached CodePipeline (the invocation returned %s)", id, out)
	}
	last := calls[len(calls)-1]
	if last.AccessKeyID == creds.AccessKeyID {
		t.Errorf("job %s was answered with the job's artifact credentials, not the function's role", id)
	}
	return last
}

func (p *pipeline) calls(t *testing.T, id string) []shim.JobCall {
	t.Helper()
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Get(p.proxy + "/__codepipeline")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var all []shim.JobCall
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		t.Fatal(err)
	}
	var out []shim.JobCall
	for _, c := range all {
		if c.JobID == id {
			out = append(out, c)
		}
	}
	return out
}

func jobID() string {
	return fmt.Sprintf("%s-%s-4%s-8%s-%s", randomHex(4), randomHex(2), randomHex(2)[1:], randomHex(2)[1:], randomHex(6))
}

const cpConfig = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  v: %q\n"

const cpDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %s}
  template:
    metadata:
      labels: {app: %s%s}
    spec:
      containers:
        - name: web
          image: nginx:1.27
`

// TestCodePipelineJob: a job applies the artifact's manifests and waits,
// and CodePipeline receives one success with output variables; a second
// job of the same action without an object prunes it (and only what this
// action applied); a bad document ends in one failure naming it, nothing
// written; a rollout that outlasts the invocation continues through a
// continuation token and then succeeds.
func TestCodePipelineJob(t *testing.T) {
	if h == nil {
		t.Skip("-short: no local EKS replica")
	}
	ns := h.cfnNamespace(t)
	proxy := pipelineShim(t)
	viaShim := []string{"HTTPS_PROXY=" + proxy, "https_proxy=" + proxy}
	p := &pipeline{h: h, ns: ns, name: "web-" + randomHex(3), proxy: proxy,
		fn: h.startFunction(t, fnOptions{timeout: 60 * time.Second, env: viaShim})}
	params := fmt.Sprintf(`{"pipeline":%q,"namespace":%q,"directory":"k8s","wait":"60s"}`, p.name, ns)
	cm := func(name string) string {
		c, err := h.admin.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return "absent"
		}
		return c.Data["v"] + " @" + c.Annotations[ownerAnnotation]
	}
	owner := "codepipeline/" + p.name + "/deploy"
	// Another owner's object of the same name as one the job prunes later
	// stays: prune deletes only this action's.
	h.kubectl(t, fmt.Sprintf(cpConfig, "foreign", "theirs"), "apply", "-n", ns, "-f", "-")

	// 1: apply and wait.
	key := "jobs/" + p.name + "/1.zip"
	p.upload(t, key, map[string]string{
		"k8s/config.yaml": fmt.Sprintf(cpConfig, "web-config", "one") + "---\n" + fmt.Sprintf(cpConfig, "web-extra", "x"),
		"k8s/app.yaml":    fmt.Sprintf(cpDeployment, "web", "web", "web", ""),
		"README.md":       "not a manifest",
	})
	id := jobID()
	c := p.job(t, id, key, params, "")
	if c.Result != "success" || c.Status != 200 || c.ContinuationToken != "" || c.OutputVariables["objects"] != "3" ||
		c.OutputVariables["revision"] != "rev-"+id[:8] || c.OutputVariables["owner"] != owner {
		t.Fatalf("job 1: %+v, want one success with 3 objects, the revision and the owner", c)
	}
	if n := len(p.calls(t, id)); n != 1 {
		t.Errorf("job 1 answered %d times", n)
	}
	if got := cm("web-config") + ", " + cm("web-extra"); got != "one @"+owner+", x @"+owner {
		t.Errorf("after job 1: %s", got)
	}

	// 2: without web-extra: pruned; foreign untouched.
	key = "jobs/" + p.name + "/2.zip"
	p.upload(t, key, map[string]string{
		"k8s/config.yaml": fmt.Sprintf(cpConfig, "web-config", "two"),
		"k8s/app.yaml":    fmt.Sprintf(cpDeployment, "web", "web", "web", ""),
	})
	c = p.job(t, jobID(), key, params, "")
	if c.Result != "success" || !strings.Contains(c.OutputVariables["results"], "deleted 1") {
		t.Errorf("job 2: %+v, want a success that pruned one object", c)
	}
	if got := cm("web-config") + ", " + cm("web-extra") + ", " + cm("foreign"); got != "two @"+owner+", absent, theirs @" {
		t.Errorf("after job 2: %s", got)
	}

	// 3: a bad document: one failure naming it, nothing written.
	key = "jobs/" + p.name + "/3.zip"
	p.upload(t, key, map[string]string{
		"k8s/config.yaml": fmt.Sprintf(cpConfig, "web-config", "three"),
		"k8s/z-bad.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
	})
	id = jobID()
	c = p.job(t, id, key, params, "")
	if c.Result != "failure" || c.FailureDetails == nil || c.FailureDetails.Type != "ConfigurationError" ||
		!strings.Contains(c.FailureDetails.Message, "document 2") {
		t.Errorf("job 3: %+v, want one failure (ConfigurationError) naming document 2", c)
	}
	if n := len(p.calls(t, id)); n != 1 {
		t.Errorf("job 3 answered %d times", n)
	}
	if got := cm("web-config"); got != "two @"+owner {
		t.Errorf("after the failed job 3: web-config %s, want it unchanged", got)
	}
	// The invocation answered the failure itself and succeeded; its
	// metrics record counts the failure, for the Failures alarm.
	failures := 0
	for _, line := range emfRecords(t, p.fn, 3) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil && rec["Action"] == "codepipeline" && rec["Errors.InvalidEvent"] == 1.0 && rec["Failures"] == 1.0 {
			failures++
		}
	}
	if failures != 1 {
		t.Errorf("%d metrics records count job 3's failure, want 1", failures)
	}

	// A duplicate delivery of job 2, twice at once: the same apply,
	// idempotent; CodePipeline keeps the first answer and refuses the
	// others (InvalidJobStateException), which the function takes as done.
	dupID := jobID()
	key = "jobs/" + p.name + "/2.zip"
	second := h.startFunction(t, fnOptions{timeout: 60 * time.Second, env: viaShim})
	ev, _ := p.jobEvent(t, dupID, key, params, "")
	_, errs := invokeAtOnce(ev, p.fn, second)
	for i, err := range errs {
		if err != nil {
			t.Errorf("job 2, concurrent delivery %d: %v", i, err)
		}
	}
	q := *p
	q.fn = second
	q.job(t, dupID, key, params, "") // and once more, later (a retry)
	var results []string
	for _, c := range p.calls(t, dupID) {
		results = append(results, fmt.Sprintf("%s %d %s", c.Result, c.Status, c.Error))
	}
	sort.Strings(results)
	if want := []string{"success 200 ", "success 400 InvalidJobStateException", "success 400 InvalidJobStateException"}; strings.Join(results, ",") != strings.Join(want, ",") {
		t.Errorf("job 2 delivered three times: answers %v, want %v", results, want)
	}
	if got := cm("web-config") + ", " + cm("web-extra"); got != "two @"+owner+", absent" {
		t.Errorf("after the duplicates of job 2: %s", got)
	}

	// 4: a rollout that outlasts the invocation: pods that never become
	// Ready, until the test lets them; the function answers with a
	// continuation token, and the next invocation succeeds.
	short := h.startFunction(t, fnOptions{timeout: 7 * time.Second, env: viaShim})
	p.fn = short
	key = "jobs/" + p.name + "/4.zip"
	p.upload(t, key, map[string]string{
		"k8s/config.yaml": fmt.Sprintf(cpConfig, "web-config", "two"),
		"k8s/app.yaml":    fmt.Sprintf(cpDeployment, "web", "web", "web", ", "+stack.NeverReadyLabel+": \"true\""),
	})
	id = jobID()
	c = p.job(t, id, key, params, "")
	if c.Result != "success" || c.ContinuationToken == "" || c.Status != 200 {
		t.Fatalf("job 4: %+v, want a success with a continuation token", c)
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"labels":{%q:null}}}}}`, stack.NeverReadyLabel)
	if _, err := h.admin.AppsV1().Deployments(ns).Patch(context.Background(), "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; c.ContinuationToken != "" && i < 8; i++ {
		c = p.job(t, id, key, params, c.ContinuationToken)
	}
	if c.Result != "success" || c.ContinuationToken != "" || c.OutputVariables["objects"] == "" {
		t.Errorf("job 4 after its continuations: %+v, want a success", c)
	}
	calls := p.calls(t, id)
	if len(calls) < 2 || calls[0].ContinuationToken == "" {
		t.Errorf("job 4: %d answers, want a continuation then a success", len(calls))
	}
}

// TestCodePipelineSample: what ./local.sh events/codepipeline-job.json runs
// (localeks codepipeline) uploads the sample artifact, sends the job with
// credentials from moto's STS, and prints the one success CodePipeline
// received for it.
func TestCodePipelineSample(t *testing.T) {
	if h == nil {
		t.Skip("-short: no local EKS replica")
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = h.admin.AppsV1().Deployments("default").Delete(ctx, "web-pipeline", metav1.DeleteOptions{})
		_ = h.admin.CoreV1().ConfigMaps("default").Delete(ctx, "web-pipeline", metav1.DeleteOptions{})
		// The action's inventory (handler: lambda-eks-pipeline-<hash of the owner>).
		sum := sha256.Sum256([]byte("codepipeline/web/deploy"))
		_ = h.admin.CoreV1().ConfigMaps("default").Delete(ctx, "lambda-eks-pipeline-"+hex.EncodeToString(sum[:6]), metav1.DeleteOptions{})
	})
	cmd := exec.Command(h.self, "codepipeline", "--bootstrap", h.bootstrap, "--dir", h.stack.Paths.Dir, //nolint:gosec // G204: the test's own CLI
		"--parts", h.parts, "--permissions", filepath.Join(h.root, "permissions.yml"), "events/codepipeline-job.json")
	cmd.Dir = h.root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("localeks codepipeline: %v\n%s", err, stderr.Bytes())
	}
	var calls []shim.JobCall
	if err := json.Unmarshal(stdout.Bytes(), &calls); err != nil {
		t.Fatalf("stdout is not the answers: %v\n%s", err, stdout.Bytes())
	}
	if len(calls) != 1 || calls[0].Result != "success" || calls[0].Status != 200 || calls[0].OutputVariables["revision"] != "3fd2a1c" ||
		calls[0].OutputVariables["objects"] != "2" {
		t.Errorf("answers %+v, want one success with the sample's revision and 2 objects", calls)
	}
	for _, secret := range []string{"secretAccessKey\":\"", "X-Amz-Signature"} {
		if bytes.Contains(stderr.Bytes(), []byte(secret)) {
			t.Errorf("the output shows %s", secret)
		}
	}
}
