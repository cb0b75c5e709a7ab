package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"helm.sh/helm/v4/pkg/action"
	helmkube "helm.sh/helm/v4/pkg/kube"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// demoChartDir is the replica's demo chart at version v unpacked under
// dir/, as a repository holds a chart directory.
func demoChartDir(tb testing.TB, dir, v string) map[string]string {
	tb.Helper()
	tgz, err := stack.DemoChartArchive(v)
	if err != nil {
		tb.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			tb.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		_, name, _ := strings.Cut(hdr.Name, "/")
		files[dir+"/"+name] = string(b)
	}
}

func withFiles(base map[string]string, more map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range []map[string]string{base, more} {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestHelmCodePipelineJob: the Helm function as a pipeline's action. A
// chart directory and a values file in an artifact zip in moto's S3 are
// installed and waited for, and CodePipeline receives one success with the
// release's output variables; the same job delivered twice at once ends in
// one success that CodePipeline keeps (the other answer is refused as the
// job's second, which the function takes as done); a chart that does not
// render ends in one failure naming it, and nothing is installed; a
// rollout that outlasts the invocation continues through a continuation
// token naming the revision, then succeeds.
func TestHelmCodePipelineJob(t *testing.T) {
	if h == nil {
		t.Skip("-short: no local EKS replica")
	}
	h, f := mustHelm(t)
	ns := h.helmNamespace(t, "hcp")
	proxy := pipelineShim(t)
	viaShim := []string{"HTTPS_PROXY=" + proxy, "https_proxy=" + proxy}
	p := &pipeline{h: h, ns: ns, name: "helm-" + randomHex(3), proxy: proxy, fn: h.startHelm(t, f, 60*time.Second, viaShim...)}
	owner := "codepipeline/" + p.name + "/deploy"
	sum := sha256.Sum256([]byte(owner))
	label := hex.EncodeToString(sum[:8])
	params := func(release, wait string) string {
		return fmt.Sprintf(`{"pipeline":%q,"release":%q,"namespace":%q,"chart":"deploy/demo","valuesFiles":["deploy/prod.yaml"],`+
			`"values":{"replicaCount":2},"wait":%q}`, p.name, release, ns, wait)
	}
	artifact := withFiles(demoChartDir(t, "deploy/demo", "0.1.0"), map[string]string{
		"deploy/prod.yaml": "message: from the pipeline\n",
		"README.md":        "not the chart",
	})

	// 1: installed from the artifact, waited for: one success.
	key := "jobs/" + p.name + "/1.zip"
	p.upload(t, key, artifact)
	id := jobID()
	c := p.job(t, id, key, params("web", "60s"), "")
	want := map[string]string{"release": "web", "namespace": ns, "cluster": stack.ClusterName, "owner": owner, "revision": "1",
		"status": "deployed", "chart": stack.DemoChart, "chartVersion": "0.1.0", "appVersion": "app-0.1.0", "artifactRevision": "rev-" + id[:8]}
	if c.Result != "success" || c.Status != 200 || c.ContinuationToken != "" || fmt.Sprint(c.OutputVariables) != fmt.Sprint(want) {
		t.Fatalf("job 1: %+v, want one success with output variables %v", c, want)
	}
	if n := len(p.calls(t, id)); n != 1 {
		t.Errorf("job 1 answered %d times", n)
	}
	if got := h.configMessage(t, ns, "web"); got != "from the pipeline@0.1.0" {
		t.Errorf("the release's ConfigMap says %q, want the artifact's values file", got)
	}
	rel := h.helmStatus(t, ns, "web")
	if rel.Labels["lambda-eks.io/owner"] != label || rel.Info.Status.String() != "deployed" {
		t.Errorf("helm status: %s, labels %v; want deployed, owned by %s (%s)", rel.Info.Status, rel.Labels, owner, label)
	}
	d, err := h.admin.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || d.Status.ReadyReplicas != 2 {
		t.Errorf("deployment web: %v ready, %v; want the values' 2 replicas ready when the job succeeded", d.Status.ReadyReplicas, err)
	}

	// 2: the same job delivered twice at once, then once more.
	dupID := jobID()
	second := h.startHelm(t, f, 60*time.Second, viaShim...)
	ev, _ := p.jobEvent(t, dupID, key, params("web", "60s"), "")
	_, errs := invokeAtOnce(ev, p.fn, second)
	for i, err := range errs {
		if err != nil {
			t.Errorf("job 2, concurrent delivery %d: %v", i, err)
		}
	}
	var results []string
	for _, c := range p.calls(t, dupID) {
		results = append(results, fmt.Sprintf("%s %d %s", c.Result, c.Status, c.Error))
	}
	sort.Strings(results)
	if want := []string{"success 200 ", "success 400 InvalidJobStateException"}; strings.Join(results, ",") != strings.Join(want, ",") {
		t.Errorf("job 2 delivered twice at once: answers %v, want %v", results, want)
	}
	hist := h.helmHistory(t, ns, "web")
	if last := hist[len(hist)-1]; last.Status != "deployed" || len(hist) > 3 {
		t.Errorf("after job 2's duplicates: history %v, want revisions 2 and 3 at most, the newest deployed", hist)
	}

	// 3: a chart that does not render: one failure naming it; nothing installed.
	key = "jobs/" + p.name + "/3.zip"
	p.upload(t, key, withFiles(artifact, map[string]string{"deploy/demo/templates/broken.yaml": "{{ .Values.message | nosuchfunction }}\n"}))
	id = jobID()
	c = p.job(t, id, key, params("broken", "60s"), "")
	if c.Result != "failure" || c.FailureDetails == nil || c.FailureDetails.Type != "ConfigurationError" ||
		!strings.Contains(c.FailureDetails.Message, "chart deploy/demo/ of input artifact SourceOutput") ||
		!strings.Contains(c.FailureDetails.Message, "broken.yaml") {
		t.Errorf("job 3: %+v, want one failure (ConfigurationError) naming the chart and its template", c)
	}
	if n := len(p.calls(t, id)); n != 1 {
		t.Errorf("job 3 answered %d times", n)
	}
	if hist := h.helmHistory(t, ns, "broken"); hist != nil || h.configMessage(t, ns, "broken") != "" {
		t.Errorf("after the failed job 3: history %v, ConfigMap %q; want nothing installed", hist, h.configMessage(t, ns, "broken"))
	}

	// 4: pods that never become Ready, until the test lets them: the
	// function answers with a continuation token, and the next invocation
	// waits on the same revision (the artifact is not read again) and
	// succeeds.
	short := h.startHelm(t, f, 10*time.Second, viaShim...)
	p.fn = short
	key = "jobs/" + p.name + "/4.zip"
	p.upload(t, key, withFiles(artifact, map[string]string{"deploy/prod.yaml": "message: slow\nneverReady: true\n"}))
	id = jobID()
	c = p.job(t, id, key, params("slow", "5m"), "")
	if c.Result != "success" || c.ContinuationToken == "" || c.Status != 200 {
		t.Fatalf("job 4: %+v, want a success with a continuation token", c)
	}
	if _, err := p.h.motoS3(t).DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(pipelineBucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"labels":{%q:null}}}}}`, stack.NeverReadyLabel)
	if _, err := h.admin.AppsV1().Deployments(ns).Patch(context.Background(), "slow", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; c.ContinuationToken != "" && i < 8; i++ {
		c = p.job(t, id, key, params("slow", "5m"), c.ContinuationToken)
	}
	if c.Result != "success" || c.ContinuationToken != "" || c.OutputVariables["revision"] != "1" || c.OutputVariables["status"] != "deployed" {
		t.Errorf("job 4 after its continuations: %+v, want a success of revision 1", c)
	}
	if hist := h.helmHistory(t, ns, "slow"); len(hist) != 1 {
		t.Errorf("job 4: history %v, want the one revision the first invocation wrote", hist)
	}
}

// TestHelmCodePipelineSample: what ./local.sh
// events/helm-codepipeline-job.json runs (localeks codepipeline: the job
// routed to the Helm function because its UserParameters name a release)
// uploads the demo chart as a directory with a values file, sends the job
// with credentials from moto's STS, and prints the one success
// CodePipeline received for it.
func TestHelmCodePipelineSample(t *testing.T) {
	if h == nil {
		t.Skip("-short: no local EKS replica")
	}
	h, f := mustHelm(t)
	uninstall := func() {
		un := action.NewUninstall(h.sdk(t, "default"))
		un.IgnoreNotFound = true
		un.WaitStrategy = helmkube.HookOnlyStrategy
		if _, err := un.Run("demo-pipeline"); err != nil {
			t.Errorf("uninstall demo-pipeline: %v", err)
		}
	}
	uninstall()
	t.Cleanup(uninstall)
	cmd := exec.Command(h.self, "codepipeline", "--bootstrap", f.bootstrap, "--registry", filepath.Join(f.parts, "registry"), //nolint:gosec // G204: the test's own CLI
		"--dir", h.stack.Paths.Dir, "--parts", h.parts, "--permissions", filepath.Join(h.root, "permissions.yml"), "events/helm-codepipeline-job.json")
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
	if len(calls) != 1 || calls[0].Result != "success" || calls[0].Status != 200 || calls[0].OutputVariables["release"] != "demo-pipeline" ||
		calls[0].OutputVariables["chartVersion"] != "0.1.0" || calls[0].OutputVariables["artifactRevision"] != "9c41e07" ||
		calls[0].OutputVariables["owner"] != "codepipeline/web/helm" {
		t.Errorf("answers %+v, want one success of release demo-pipeline, chart 0.1.0, the sample's revision and owner", calls)
	}
	if got := h.configMessage(t, "default", "demo-pipeline"); got != "hello from CodePipeline@0.1.0" {
		t.Errorf("the release's ConfigMap says %q, want the artifact's values file", got)
	}
	for _, secret := range []string{"secretAccessKey\":\"", "X-Amz-Signature"} {
		if bytes.Contains(stderr.Bytes(), []byte(secret)) {
			t.Errorf("the output shows %s", secret)
		}
	}
}
