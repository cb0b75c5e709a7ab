package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
)

// delivery is what one delivery of an event ended in: the function's
// answer (for a custom resource, the body CloudFormation received), or its
// error type.
type delivery struct {
	Answer  map[string]any
	ErrType string
	ErrMsg  string
}

// results lists an answer's object results as Kind/name=result, sorted.
func (d delivery) results() []string {
	var out []string
	objs, _ := d.Answer["objects"].([]any)
	for _, o := range objs {
		m := o.(map[string]any)
		out = append(out, fmt.Sprintf("%s/%s=%s", m["kind"], m["name"], m["result"]))
	}
	sort.Strings(out)
	return out
}

func (d delivery) String() string {
	if d.ErrType != "" {
		return d.ErrType + ": " + d.ErrMsg
	}
	b, _ := json.Marshal(d.Answer)
	return string(b)
}

// dupRun delivers the samples of events/ into one namespace of the
// replica, through two execution environments of the built bootstrap
// (two concurrent deliveries of one event reach two, as on Lambda).
type dupRun struct {
	h      *harness
	ns     string
	fns    [2]*lambdart.Function
	cfn    *cfnStack // for ResponseURLs and reading answers
	sample int
	// fix adapts a sample to the replica (the Helm fixture's chart URLs).
	fix func(ev map[string]any)
}

func newDupRun(t *testing.T) *dupRun {
	t.Helper()
	d := &dupRun{h: h, ns: h.cfnNamespace(t)}
	for i := range d.fns {
		d.fns[i] = h.startFunction(t, fnOptions{env: []string{"NAMESPACE=" + d.ns}, timeout: 90 * time.Second})
	}
	d.cfn = h.newCFNStack(t, fnOptions{env: []string{"NAMESPACE=" + d.ns}})
	return d
}

// payload is the sample with its namespace (and, for a custom resource,
// its properties' namespace) set to the run's, and for a custom resource a
// ResponseURL of moto's S3 at key.
func (d *dupRun) payload(t *testing.T, sample, key string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.h.root, "events", sample))
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	if _, ok := ev["namespace"]; ok {
		ev["namespace"] = d.ns
	}
	if d.fix != nil {
		d.fix(ev)
	}
	if _, ok := ev["ResponseURL"]; ok {
		for _, p := range []string{"ResourceProperties", "OldResourceProperties"} {
			if props, ok := ev[p].(map[string]any); ok {
				props["Namespace"] = d.ns
			}
		}
		signed, err := d.cfn.presign.PresignPutObject(context.Background(),
			&s3.PutObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key)}, s3.WithPresignExpires(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ev["ResponseURL"] = signed.URL
	}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deliver sends sample once through each of the given environments at the
// same moment and returns what each delivery ended in.
func (d *dupRun) deliver(t *testing.T, sample string, fns ...*lambdart.Function) []delivery {
	t.Helper()
	d.sample++
	out := make([]delivery, len(fns))
	errs := make([]error, len(fns))
	payloads := make([][]byte, len(fns))
	keys := make([]string, len(fns))
	for i := range fns {
		keys[i] = fmt.Sprintf("duplicates/%s/%d-%d", d.ns, d.sample, i)
		payloads[i] = d.payload(t, sample, keys[i])
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() {
			<-start
			resp, fnErr, err := fn.Invoke(context.Background(), payloads[i])
			switch {
			case err != nil:
				errs[i] = err
			case fnErr != nil:
				out[i] = delivery{ErrType: fnErr.Type, ErrMsg: fnErr.Message}
			default:
				errs[i] = json.Unmarshal(resp, &out[i].Answer)
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s, delivery %d: %v", sample, i, err)
		}
		if strings.Contains(sample, "cfn-") {
			out[i] = delivery{Answer: d.cfnAnswer(t, keys[i])}
		}
		t.Logf("%s, delivery %d: %.400s", sample, i, out[i])
	}
	return out
}

// once delivers sample once, for the state the next sample starts from.
func (d *dupRun) once(t *testing.T, sample string) delivery {
	t.Helper()
	return d.deliver(t, sample, d.fns[0])[0]
}

// twice delivers sample twice at once.
func (d *dupRun) twice(t *testing.T, sample string) []delivery {
	t.Helper()
	return d.deliver(t, sample, d.fns[0], d.fns[1])
}

func (d *dupRun) cfnAnswer(t *testing.T, key string) map[string]any {
	t.Helper()
	obj, err := d.cfn.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("no answer at %s: %v", key, err)
	}
	defer func() { _ = obj.Body.Close() }()
	body, err := io.ReadAll(obj.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a map[string]any
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	return a
}

// deployment returns the Deployment's replicas, the remembered replicas
// annotation and the restartedAt annotation, or absent.
func (d *dupRun) deployment(t *testing.T, name string) string {
	t.Helper()
	dep, err := d.h.admin.AppsV1().Deployments(d.ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "absent"
	}
	if err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf("replicas=%d remembered=%q", *dep.Spec.Replicas, dep.Annotations["lambda-eks.io/replicas-before-scale-down"])
	if at := dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; at != "" {
		s += " restarted"
	}
	return s
}

func (d *dupRun) configMap(t *testing.T, name string) string {
	t.Helper()
	cm, err := d.h.admin.CoreV1().ConfigMaps(d.ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "absent"
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cm.Data)
	return string(b)
}

// onlyResults fails unless every object result of ds is one of allowed.
func onlyResults(t *testing.T, sample string, ds []delivery, allowed ...string) {
	t.Helper()
	for i, x := range ds {
		for _, r := range x.results() {
			if i := strings.LastIndexByte(r, '='); !slicesContains(allowed, r[i+1:]) {
				t.Errorf("%s: result %s, want one of %v", sample, r, allowed)
			}
		}
		if len(x.results()) == 0 && x.ErrType == "" {
			t.Errorf("%s, delivery %d: no objects", sample, i)
		}
	}
}

// exactlyOne fails unless one delivery did first and the other second
// (results with from->to), in either order.
func exactlyOne(t *testing.T, sample string, ds []delivery, first, second string) {
	t.Helper()
	var got []string
	for _, x := range ds {
		objs, _ := x.Answer["objects"].([]any)
		for _, o := range objs {
			m := o.(map[string]any)
			got = append(got, fmt.Sprintf("%s/%s=%s %v->%v", m["kind"], m["name"], m["result"], m["from"], m["to"]))
		}
	}
	sort.Strings(got)
	want := []string{first, second}
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s twice: %v, want %v", sample, got, want)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func succeeded(t *testing.T, sample string, ds []delivery) {
	t.Helper()
	for i, d := range ds {
		if d.ErrType != "" {
			t.Errorf("%s, delivery %d failed: %s", sample, i, d)
		}
		if s, ok := d.Answer["Status"]; ok && s != "SUCCESS" {
			t.Errorf("%s, delivery %d answered CloudFormation %s: %v", sample, i, s, d.Answer["Reason"])
		}
	}
}

// TestDuplicateDeliveries: every sample of events/ for the main function,
// delivered twice at once (two execution environments, as Lambda does with
// a duplicate), ends as README's "Duplicate deliveries" table says.
func TestDuplicateDeliveries(t *testing.T) {
	if h == nil {
		t.Skip("-short: no local EKS replica")
	}
	entries, err := os.ReadDir(filepath.Join(h.root, "events"))
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	// TestHelmDuplicateDeliveries delivers these.
	helmSamples := map[string]bool{"helm-upgrade.json": true, "helm-rollback.json": true, "helm-status.json": true,
		"helm-uninstall.json": true, "helm-cfn-create.json": true,
		// TestCodePipelineJob delivers a job three times, twice at once.
		"codepipeline-job.json": true,
		// TestHelmCodePipelineJob delivers a Helm job twice at once.
		"helm-codepipeline-job.json": true}
	cover := func(samples ...string) {
		for _, s := range samples {
			covered[s] = true
		}
	}

	t.Run("ensure-nginx", func(t *testing.T) {
		d := newDupRun(t)
		for _, sample := range []string{"ensure-nginx.json", "schedule.json", "ensure-nginx-full.json"} {
			ds := d.twice(t, sample)
			succeeded(t, sample, ds)
			onlyResults(t, sample, ds, "created", "configured", "unchanged")
			cover(sample)
		}
		if got := d.deployment(t, "nginx"); got != `replicas=3 remembered=""` {
			t.Errorf("nginx: %s, want ensure-nginx-full's 3 replicas", got)
		}
	})

	t.Run("apply, restart, status, scale, delete", func(t *testing.T) {
		d := newDupRun(t)
		ds := d.twice(t, "apply-dry-run.json")
		succeeded(t, "apply-dry-run.json", ds)
		if got := d.deployment(t, "hello") + " " + d.configMap(t, "hello"); got != "absent absent" {
			t.Errorf("after a dry run twice: %s, want nothing written", got)
		}

		ds = d.twice(t, "apply.json")
		succeeded(t, "apply.json", ds)
		onlyResults(t, "apply.json", ds, "created", "configured", "unchanged")
		if got := d.deployment(t, "hello") + " " + d.configMap(t, "hello"); got != `replicas=2 remembered="" {"greeting":"hello from lambda-eks"}` {
			t.Errorf("after apply twice: %s", got)
		}

		ds = d.twice(t, "restart.json")
		succeeded(t, "restart.json", ds)
		onlyResults(t, "restart.json", ds, "restarted")

		ds = d.twice(t, "status.json")
		succeeded(t, "status.json", ds)
		onlyResults(t, "status.json", ds, "ready", "progressing")

		ds = d.twice(t, "scale-down.json")
		succeeded(t, "scale-down.json", ds)
		exactlyOne(t, "scale-down.json", ds, "Deployment/hello=scaled 2->0", "Deployment/hello=unchanged 0->0")
		if got := d.deployment(t, "hello"); got != `replicas=0 remembered="2" restarted` {
			t.Errorf("after scale-down twice: hello %s, want 0 replicas remembering 2", got)
		}

		ds = d.twice(t, "scale-restore.json")
		succeeded(t, "scale-restore.json", ds)
		exactlyOne(t, "scale-restore.json", ds, "Deployment/hello=scaled 0->2", "Deployment/hello=unchanged 2->2")
		if got := d.deployment(t, "hello"); got != `replicas=2 remembered="" restarted` {
			t.Errorf("after scale-restore twice: hello %s, want 2 replicas and nothing remembered", got)
		}

		ds = d.twice(t, "delete.json")
		succeeded(t, "delete.json", ds)
		onlyResults(t, "delete.json", ds, "deleted", "absent")
		for _, obj := range []string{"ConfigMap/hello", "Deployment/hello"} {
			n := 0
			for _, x := range ds {
				for _, r := range x.results() {
					if r == obj+"=deleted" {
						n++
					}
				}
			}
			if n != 1 {
				t.Errorf("delete.json: %s deleted by %d deliveries, want 1 (the other finds it absent)", obj, n)
			}
		}
		if got := d.deployment(t, "hello") + " " + d.configMap(t, "hello"); got != "absent absent" {
			t.Errorf("after delete twice: %s", got)
		}
		cover("apply-dry-run.json", "apply.json", "restart.json", "status.json", "scale-down.json", "scale-restore.json", "delete.json")
	})

	t.Run("bad", func(t *testing.T) {
		d := newDupRun(t)
		for i, x := range d.twice(t, "bad.json") {
			if x.ErrType != "InvalidEvent" {
				t.Errorf("bad.json, delivery %d: %s, want InvalidEvent", i, x)
			}
		}
		cover("bad.json")
	})

	t.Run("custom resource", func(t *testing.T) {
		d := newDupRun(t)
		state := func() string {
			return d.configMap(t, "web-config") + " " + d.configMap(t, "web-extra") + " " + d.configMap(t, "web-flags")
		}
		for _, step := range []struct{ sample, greeting, state string }{
			{"cfn-create.json", "hello", `{"greeting":"hello"} {"color":"blue"} absent`},
			{"cfn-update.json", "hello again", `{"greeting":"hello again"} absent {"beta":"true"}`},
			{"cfn-delete.json", "", "absent absent absent"},
		} {
			ds := d.twice(t, step.sample)
			succeeded(t, step.sample, ds)
			for i, x := range ds {
				data, _ := x.Answer["Data"].(map[string]any)
				if x.Answer["PhysicalResourceId"] != "lambda-eks-demo/WebObjects/e1c020373ace7850" || (step.greeting != "" && data["Greeting"] != step.greeting) {
					t.Errorf("%s, delivery %d: %s, want the sample's PhysicalResourceId and Greeting %q", step.sample, i, x, step.greeting)
				}
			}
			if got := state(); got != step.state {
				t.Errorf("after %s twice: web-config, web-extra, web-flags %s, want %s", step.sample, got, step.state)
			}
			cover(step.sample)
		}
	})

	for _, e := range entries {
		name := e.Name()
		// The lifecycle function's samples (asg-*, spot-*, rebalance*,
		// health-*) are its own tests' to deliver.
		lifecycle := strings.HasPrefix(name, "asg-") || strings.HasPrefix(name, "spot-") ||
			strings.HasPrefix(name, "rebalance") || strings.HasPrefix(name, "health-")
		if strings.HasSuffix(name, ".json") && !covered[name] && !helmSamples[name] && !lifecycle {
			t.Errorf("events/%s is not delivered twice here", name)
		}
	}
}

// TestHelmDuplicateDeliveries: the Helm function's samples delivered twice
// at once end as README's "Duplicate deliveries" table says: one upgrade or
// rollback runs, the other finds the release being written and ends in
// Conflict (Lambda retries it later) or runs after it; one uninstall
// uninstalls, the other finds the release uninstalled or absent; a custom
// resource Create answers SUCCESS twice, with one release.
func TestHelmDuplicateDeliveries(t *testing.T) {
	h, f := mustHelm(t)
	creds := `REGISTRY_CREDENTIALS={"` + f.registry + `":"` + registryUser + ":" + registryPassword + `"}`
	d := &dupRun{h: h, ns: h.helmNamespace(t, "helm-dup")}
	d.cfn = h.newCFNStack(t, fnOptions{})
	for i := range d.fns {
		d.fns[i] = h.startHelm(t, f, 90*time.Second, creds, "NAMESPACE="+d.ns)
	}
	d.fix = func(ev map[string]any) {
		if _, ok := ev["repository"]; ok {
			ev["repository"] = f.repoURL
		}
		if props, ok := ev["ResourceProperties"].(map[string]any); ok {
			props["Chart"] = "oci://" + f.registry + "/charts/demo"
		}
	}
	// Each delivery: deployed/uninstalled with a revision, or a Conflict
	// naming the pending revision.
	outcome := func(x delivery) string {
		if x.ErrType != "" {
			return x.ErrType
		}
		if s, ok := x.Answer["Status"].(string); ok {
			return s
		}
		return fmt.Sprintf("%v", x.Answer["status"])
	}
	check := func(sample string, ds []delivery, done string) {
		t.Helper()
		n := 0
		for i, x := range ds {
			switch outcome(x) {
			case done:
				n++
			case "Conflict":
				if !strings.Contains(x.ErrMsg, "already exists") && !strings.Contains(x.ErrMsg, "in progress") && !strings.Contains(x.ErrMsg, "pending") {
					t.Errorf("%s, delivery %d: %s, want a Conflict naming the pending revision", sample, i, x)
				}
			default:
				t.Errorf("%s, delivery %d: %s, want %s or Conflict", sample, i, x, done)
			}
		}
		if n == 0 {
			t.Errorf("%s twice: no delivery ended %s", sample, done)
		}
	}
	check("helm-upgrade.json", d.twice(t, "helm-upgrade.json"), "deployed")
	if hist := h.helmHistory(t, d.ns, "demo"); len(hist) == 0 {
		t.Errorf("no release after helm-upgrade twice")
	}
	// Revision 2 to roll back from.
	if x := d.once(t, "helm-upgrade.json"); outcome(x) != "deployed" {
		t.Fatalf("helm-upgrade: %s", x)
	}
	check("helm-rollback.json", d.twice(t, "helm-rollback.json"), "deployed")
	for i, x := range d.twice(t, "helm-status.json") {
		if outcome(x) != "deployed" {
			t.Errorf("helm-status.json, delivery %d: %s", i, x)
		}
	}
	ds := d.twice(t, "helm-uninstall.json")
	got := []string{outcome(ds[0]), outcome(ds[1])}
	sort.Strings(got)
	if want := []string{"absent", "uninstalled"}; strings.Join(got, ",") != strings.Join(want, ",") && strings.Join(got, ",") != "uninstalled,uninstalled" {
		t.Errorf("helm-uninstall.json twice: %v, want one uninstalled and the other uninstalled or absent", got)
	}
	if got := h.helmHistory(t, d.ns, "demo"); got != nil {
		t.Errorf("history after helm-uninstall twice: %v", got)
	}
	// A Create delivered twice while the first still installs: the other
	// waits for it and runs after it; both SUCCESS, one PhysicalResourceId.
	ds = d.twice(t, "helm-cfn-create.json")
	for i, x := range ds {
		if outcome(x) != "SUCCESS" || x.Answer["PhysicalResourceId"] != ds[0].Answer["PhysicalResourceId"] {
			t.Errorf("helm-cfn-create.json, delivery %d: %s, want SUCCESS with the same PhysicalResourceId", i, x)
		}
	}
	if hist := h.helmHistory(t, d.ns, "demo-cfn"); len(hist) == 0 {
		t.Errorf("no release demo-cfn after helm-cfn-create twice")
	}
}
