package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

const (
	widgetCRD  = "widgets.e2e.lambda-eks.io"
	replicasAn = "lambda-eks.io/replicas-before-scale-down"
	restartAn  = "kubectl.kubernetes.io/restartedAt"
)

// widgetsRBAC grants the group lambda-eks the custom resources of the test's
// CRD: what a user of a CRD adds next to permissions-cluster.yml.
const widgetsRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-widgets}
rules:
- apiGroups: [e2e.lambda-eks.io]
  resources: [widgets]
  verbs: [get, create, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-widgets}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-widgets}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: lambda-eks}
`

// appManifest is a multi-document manifest of every kind issue 4 lists. The
// custom resource comes before its CRD and the namespace after objects in
// it, so the function's ordering is what makes it work. Namespaced objects
// name no namespace: it comes from the event (or kubectl's -n).
func appManifest(ns, color string, replicas int) string {
	return fmt.Sprintf(`apiVersion: e2e.lambda-eks.io/v1
kind: Widget
metadata:
  name: gizmo
spec:
  size: 3
  color: %[2]s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  color: %[2]s
---
apiVersion: v1
kind: Secret
metadata:
  name: token
type: Opaque
data:
  token: c2VjcmV0
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: %[3]d
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env:
        - {name: COLOR, value: %[2]s}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: web
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:17
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: job
            image: busybox:1.37
            command: [sh, -c, echo done]
---
apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.lambda-eks.io
spec:
  group: e2e.lambda-eks.io
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              color: {type: string}
`, ns, color, replicas)
}

var appObjects = []struct {
	gvr  schema.GroupVersionResource
	name string
}{
	{schema.GroupVersionResource{Group: "e2e.lambda-eks.io", Version: "v1", Resource: "widgets"}, "gizmo"},
	{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "settings"},
	{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "token"},
	{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "web"},
	{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "web"},
	{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}, "db"},
	{schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "cronjobs"}, "nightly"},
}

func appResults(result, changed string) []string {
	r := func(obj, def string) string { return obj + "=" + def }
	return []string{r("Widget/gizmo", changed), r("ConfigMap/settings", changed), r("Secret/token", result), r("Service/web", result),
		r("Deployment/web", changed), r("StatefulSet/db", result), r("CronJob/nightly", result),
		r("Namespace/"+"NS", result), r("CustomResourceDefinition/"+widgetCRD, result)}
}

// Issue 4: a multi-document manifest of Namespace, ConfigMap, Secret,
// Service, Deployment, StatefulSet, CronJob, a CRD and one custom resource
// applies (created), re-applies (unchanged), changes (configured), equals
// what `kubectl apply --server-side` makes of the same file, and is deleted
// (deleted, then absent).
func TestApplyManifest(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	id := runID()
	nsFn, nsKubectl := "manage-fn-"+id, "manage-kubectl-"+id
	h.dropCRD(t, widgetCRD)
	h.grantCluster(t, widgetsRBAC)
	t.Cleanup(func() {
		h.dropNamespace(t, nsFn)
		h.dropNamespace(t, nsKubectl)
		h.dropCRD(t, widgetCRD)
	})
	fn := h.startFunction(t, fnOptions{timeout: 60 * time.Second})
	apply := func(color string, replicas int) string {
		return event(t, map[string]any{"action": "apply", "namespace": nsFn, "manifest": appManifest(nsFn, color, replicas)})
	}
	want := func(result, changed string) []string {
		out := appResults(result, changed)
		out[7] = "Namespace/" + nsFn + "=" + result
		return out
	}

	steps := []struct {
		name, event string
		want        []string
	}{
		{"first apply creates", apply("blue", 2), want("created", "created")},
		{"same again is unchanged", apply("blue", 2), want("unchanged", "unchanged")},
		{"a change configures what changed", apply("red", 3), want("unchanged", "configured")},
	}
	for _, s := range steps {
		start := time.Now()
		got := mustManage(t, fn, s.event)
		t.Logf("%s: %s", s.name, time.Since(start).Round(time.Millisecond))
		if diff := cmp.Diff(s.want, results(got)); diff != "" {
			t.Fatalf("%s: results (-want +got):\n%s", s.name, diff)
		}
	}

	// The same file through kubectl, into a second namespace.
	file := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(file, []byte(appManifest(nsKubectl, "red", 3)), 0o600); err != nil {
		t.Fatal(err)
	}
	// kubectl applies in file order: the custom resource before its CRD and
	// objects before their namespace fail the first pass, so it takes more.
	for pass := 1; ; pass++ {
		out, err := h.kubectlErr("", "apply", "--server-side", "-n", nsKubectl, "-f", file)
		if err == nil {
			t.Logf("kubectl pass %d: %s", pass, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
			break
		}
		t.Logf("kubectl pass %d failed: %v", pass, firstLine(err.Error()))
		if pass == 5 {
			t.Fatalf("kubectl apply --server-side failed %d times", pass)
		}
		time.Sleep(time.Second)
	}
	dyn := h.dynamicAdmin(t)
	for _, o := range appObjects {
		byFn, err := dyn.Resource(o.gvr).Namespace(nsFn).Get(ctx, o.name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("admin get %s %s/%s: %v", o.gvr.Resource, nsFn, o.name, err)
		}
		byKubectl, err := dyn.Resource(o.gvr).Namespace(nsKubectl).Get(ctx, o.name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("admin get %s %s/%s: %v", o.gvr.Resource, nsKubectl, o.name, err)
		}
		if diff := cmp.Diff(normalized(byKubectl), normalized(byFn)); diff != "" {
			t.Errorf("%s/%s: the function's object differs from kubectl's (-kubectl +function):\n%s", o.gvr.Resource, o.name, diff)
		}
		if diff := cmp.Diff([]string{"lambda-eks/Apply"}, managers(byFn)); diff != "" {
			t.Errorf("%s/%s: field managers (-want +got):\n%s", o.gvr.Resource, o.name, diff)
		}
	}
	crd, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
		Get(ctx, widgetCRD, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := managers(crd); !slicesContain(got, "lambda-eks/Apply") || !slicesContain(got, "kubectl/Apply") {
		t.Errorf("CRD managers %v: want lambda-eks and kubectl sharing it (same values, no conflict)", got)
	}

	// Delete by manifest: custom resources and the rest first, the CRD and
	// the namespace last; the second time everything is absent.
	del := event(t, map[string]any{"action": "delete", "namespace": nsFn, "manifest": appManifest(nsFn, "red", 3)})
	if diff := cmp.Diff(want("deleted", "deleted"), results(mustManage(t, fn, del))); diff != "" {
		t.Errorf("delete (-want +got):\n%s", diff)
	}
	for _, o := range appObjects[1:] {
		if _, err := dyn.Resource(o.gvr).Namespace(nsFn).Get(ctx, o.name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after delete, %s %s/%s: err %v, want NotFound", o.gvr.Resource, nsFn, o.name, err)
		}
	}
	h.dropNamespace(t, nsFn)
	// A CRD goes once the API server has removed its custom resources
	// (its finalizer): until then a delete finds it, terminating.
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	eventually(t, "CRD "+widgetCRD+" gone", func() (bool, string) {
		_, err := crds.Get(ctx, widgetCRD, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if diff := cmp.Diff(want("absent", "absent"), results(mustManage(t, fn, del))); diff != "" {
		t.Errorf("delete again (-want +got):\n%s", diff)
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Issue 4: one bad document in the middle of a manifest is InvalidEvent,
// naming the document, and not one object of the manifest exists after.
func TestApplyBadDocument(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	ns := "manage-bad-" + runID()
	h.grantCluster(t, "")
	fn, who := h.startFunctionAs(t, fnOptions{})
	good := "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\n"
	tail := "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: last}\n"
	for _, tc := range []struct{ name, doc, wantInMsg string }{
		{"no name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n", "document 3"},
		{"unknown kind", "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n", "Gadget"},
		{"namespace on a cluster-scoped kind", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, namespace: other}\n", "cluster-scoped"},
		{"not YAML", "kind: [\n", "document 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := h.auditMark(t)
			fnErr := mustFailManage(t, fn, event(t, map[string]any{"action": "apply", "namespace": ns, "manifest": good + tc.doc + tail}), "InvalidEvent")
			if !strings.Contains(fnErr.Message, tc.wantInMsg) || !strings.Contains(fnErr.Message, "nothing was changed") {
				t.Errorf("message %q: want %q and that nothing was changed", fnErr.Message, tc.wantInMsg)
			}
			for _, e := range h.auditSince(t, mark, who.User) {
				if e.Verb != "get" && e.Verb != "list" && e.Verb != "watch" {
					t.Errorf("the function wrote for an invalid manifest: %s %s", e.Verb, e.URI)
				}
			}
		})
	}
	if _, err := h.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s: err %v, want NotFound", ns, err)
	}
	for _, name := range []string{"first", "last"} {
		if _, err := h.admin.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("configmap %s/%s: err %v, want NotFound", ns, name, err)
		}
	}
}

// Issue 4: a field another manager owns is a Conflict naming the field and
// the manager; with force the function takes it (configured).
func TestApplyConflict(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	name := "manage-conflict-" + runID()
	t.Cleanup(func() { _ = h.admin.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{}) })
	theirs := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q},"data":{"color":"blue"}}`, name)
	if _, err := h.admin.CoreV1().ConfigMaps("default").Patch(ctx, name, types.ApplyPatchType, []byte(theirs),
		metav1.PatchOptions{FieldManager: "other-team"}); err != nil {
		t.Fatal(err)
	}
	fn := h.startFunction(t, fnOptions{})
	manifest := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {color: red}\n", name)

	fnErr := mustFailManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": manifest}), "Conflict")
	for _, want := range []string{".data.color", "other-team", `"force": true`} {
		if !strings.Contains(fnErr.Message, want) {
			t.Errorf("message %q lacks %q", fnErr.Message, want)
		}
	}
	cm, err := h.admin.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil || cm.Data["color"] != "blue" {
		t.Fatalf("after the conflict: %v %v, want color blue", cm.Data, err)
	}

	got := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": manifest, "force": true}))
	if diff := cmp.Diff([]string{"ConfigMap/" + name + "=configured"}, results(got)); diff != "" {
		t.Errorf("forced apply (-want +got):\n%s", diff)
	}
	cm, err = h.admin.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil || cm.Data["color"] != "red" {
		t.Errorf("after force: %v %v, want color red", cm.Data, err)
	}
}

// workloadManifest is count Deployments (and one StatefulSet) labelled for
// a scale test, plus one Deployment without the label.
func workloadManifest(label string) string {
	var b strings.Builder
	for _, w := range []struct {
		kind, name string
		replicas   int
		labelled   bool
	}{{"Deployment", "front", 3, true}, {"Deployment", "back", 2, true}, {"StatefulSet", "store", 1, true}, {"Deployment", "keep", 2, false}} {
		labels := "{app: " + w.name + "}"
		if w.labelled {
			labels = "{app: " + w.name + ", e2e-schedule: " + label + "}"
		}
		extra := ""
		if w.kind == "StatefulSet" {
			extra = "  serviceName: " + w.name + "\n"
		}
		fmt.Fprintf(&b, `---
apiVersion: apps/v1
kind: %s
metadata:
  name: %s-%s
  labels: %s
spec:
%s  replicas: %d
  selector:
    matchLabels: {app: %s}
  template:
    metadata:
      labels: {app: %s}
    spec:
      containers:
      - {name: c, image: "nginx:1.27"}
`, w.kind, w.name, label, labels, extra, w.replicas, w.name, w.name)
	}
	return b.String()
}

// replicasState reads "replicas/annotation" of the scale test's workloads.
func (h *harness) replicasState(tb testing.TB, label string) map[string]string {
	tb.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, n := range []string{"front", "back", "keep"} {
		d, err := h.admin.AppsV1().Deployments("default").Get(ctx, n+"-"+label, metav1.GetOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		out[n] = fmt.Sprintf("%d/%s", *d.Spec.Replicas, d.Annotations[replicasAn])
	}
	s, err := h.admin.AppsV1().StatefulSets("default").Get(ctx, "store-"+label, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	out["store"] = fmt.Sprintf("%d/%s", *s.Spec.Replicas, s.Annotations[replicasAn])
	return out
}

func deleteWorkloads(h *harness, label string) {
	ctx := context.Background()
	for _, n := range []string{"front", "back", "keep"} {
		_ = h.admin.AppsV1().Deployments("default").Delete(ctx, n+"-"+label, metav1.DeleteOptions{})
	}
	_ = h.admin.AppsV1().StatefulSets("default").Delete(ctx, "store-"+label, metav1.DeleteOptions{})
}

// Issue 4: the scheduled scale-down of every labelled workload of a
// namespace to 0 and its restore; dry runs of scale, delete, restart and
// apply change nothing.
func TestScaleDownRestoreAndDryRun(t *testing.T) {
	h := mustHarness(t)
	label := "night-" + runID()
	t.Cleanup(func() { deleteWorkloads(h, label) })
	fn := h.startFunction(t, fnOptions{})
	mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": workloadManifest(label)}))
	initial := map[string]string{"front": "3/", "back": "2/", "store": "1/", "keep": "2/"}
	if diff := cmp.Diff(initial, h.replicasState(t, label)); diff != "" {
		t.Fatalf("initial state (-want +got):\n%s", diff)
	}
	selector := "e2e-schedule=" + label
	scaleLine := func(r manageResponse) []string {
		var out []string
		for _, o := range r.Objects {
			out = append(out, fmt.Sprintf("%s/%s=%s %d->%d", o.Kind, strings.TrimSuffix(o.Name, "-"+label), o.Result, *o.From, *o.To))
		}
		return out
	}

	t.Run("dry runs change nothing", func(t *testing.T) {
		r := mustManage(t, fn, event(t, map[string]any{"action": "scale", "selector": selector, "replicas": 0, "dryRun": true}))
		if !r.DryRun {
			t.Error("response lacks dryRun: true")
		}
		if diff := cmp.Diff([]string{"Deployment/back=scaled 2->0", "Deployment/front=scaled 3->0", "StatefulSet/store=scaled 1->0"}, scaleLine(r)); diff != "" {
			t.Errorf("dry-run scale (-want +got):\n%s", diff)
		}
		r = mustManage(t, fn, event(t, map[string]any{"action": "delete", "kind": "Deployment", "name": "keep-" + label, "dryRun": true}))
		if diff := cmp.Diff([]string{"Deployment/keep-" + label + "=deleted"}, results(r)); diff != "" || !r.DryRun {
			t.Errorf("dry-run delete (-want +got), dryRun %v:\n%s", r.DryRun, diff)
		}
		r = mustManage(t, fn, event(t, map[string]any{"action": "restart", "name": "keep-" + label, "dryRun": true}))
		if diff := cmp.Diff([]string{"Deployment/keep-" + label + "=restarted"}, results(r)); diff != "" || !r.DryRun {
			t.Errorf("dry-run restart (-want +got), dryRun %v:\n%s", r.DryRun, diff)
		}
		changed := strings.ReplaceAll(workloadManifest(label), "replicas: 2", "replicas: 5")
		r = mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": changed + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry-" + label + "}\n", "dryRun": true}))
		if diff := cmp.Diff([]string{"Deployment/front-" + label + "=unchanged", "Deployment/back-" + label + "=configured",
			"StatefulSet/store-" + label + "=unchanged", "Deployment/keep-" + label + "=configured", "ConfigMap/dry-" + label + "=created"}, results(r)); diff != "" || !r.DryRun {
			t.Errorf("dry-run apply (-want +got), dryRun %v:\n%s", r.DryRun, diff)
		}
		if diff := cmp.Diff(initial, h.replicasState(t, label)); diff != "" {
			t.Errorf("after dry runs (-want +got):\n%s", diff)
		}
		if _, err := h.admin.CoreV1().ConfigMaps("default").Get(context.Background(), "dry-"+label, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("dry-run apply created configmap dry-%s: %v", label, err)
		}
		d, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), "keep-"+label, metav1.GetOptions{})
		if err != nil || d.Spec.Template.Annotations[restartAn] != "" {
			t.Errorf("dry-run restart or delete changed keep-%s: %v %v", label, err, d.Spec.Template.Annotations)
		}
	})

	t.Run("night: scale to 0", func(t *testing.T) {
		r := mustManage(t, fn, event(t, map[string]any{"action": "scale", "selector": selector, "replicas": 0}))
		if diff := cmp.Diff([]string{"Deployment/back=scaled 2->0", "Deployment/front=scaled 3->0", "StatefulSet/store=scaled 1->0"}, scaleLine(r)); diff != "" {
			t.Errorf("scale (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]string{"front": "0/3", "back": "0/2", "store": "0/1", "keep": "2/"}, h.replicasState(t, label)); diff != "" {
			t.Errorf("after scale-down (-want +got):\n%s", diff)
		}
		r = mustManage(t, fn, event(t, map[string]any{"action": "scale", "selector": selector, "replicas": 0}))
		if diff := cmp.Diff([]string{"Deployment/back=unchanged 0->0", "Deployment/front=unchanged 0->0", "StatefulSet/store=unchanged 0->0"}, scaleLine(r)); diff != "" {
			t.Errorf("scale again (-want +got):\n%s", diff)
		}
	})

	// Someone scales back up by hand before the morning: the restore
	// leaves it as it is, removes its stale annotation and says so in a
	// note; the others are restored.
	t.Run("morning: restore", func(t *testing.T) {
		ctx := context.Background()
		deps := h.admin.AppsV1().Deployments("default")
		// The controllers write the Deployment too: read and write again on
		// a conflict, as kubectl scale does.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			sc, err := deps.GetScale(ctx, "back-"+label, metav1.GetOptions{})
			if err != nil {
				return err
			}
			sc.Spec.Replicas = 1
			_, err = deps.UpdateScale(ctx, "back-"+label, sc, metav1.UpdateOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		r := mustManage(t, fn, event(t, map[string]any{"action": "scale", "selector": selector, "replicas": "restore"}))
		if diff := cmp.Diff([]string{"Deployment/back=unchanged 1->1", "Deployment/front=scaled 0->3", "StatefulSet/store=scaled 0->1"}, scaleLine(r)); diff != "" {
			t.Errorf("restore (-want +got):\n%s", diff)
		}
		for _, o := range r.Objects {
			if o.Name == "back-"+label && o.Note == "" {
				t.Errorf("restore left %s alone without a note: %+v", o.Name, o)
			}
			if o.Name != "back-"+label && o.Note != "" {
				t.Errorf("restored %s with a note %q", o.Name, o.Note)
			}
		}
		want := maps.Clone(initial)
		want["back"] = "1/"
		if diff := cmp.Diff(want, h.replicasState(t, label)); diff != "" {
			t.Errorf("after restore (-want +got):\n%s", diff)
		}
		d, err := deps.Get(ctx, "back-"+label, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := d.Annotations[replicasAn]; ok {
			t.Errorf("back-%s keeps its stale annotation %s=%q", label, replicasAn, v)
		}
	})
}

// Issue 4: restart sets kubectl's restartedAt pod-template annotation, and a
// later restart changes it.
func TestRestart(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	label := "restart-" + runID()
	t.Cleanup(func() { deleteWorkloads(h, label) })
	fn := h.startFunction(t, fnOptions{})
	mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": workloadManifest(label)}))
	var stamps []string
	for i := 0; i < 2; i++ {
		if i > 0 {
			time.Sleep(1100 * time.Millisecond) // RFC 3339 has whole seconds
		}
		before := time.Now().UTC().Truncate(time.Second)
		r := mustManage(t, fn, event(t, map[string]any{"action": "restart", "kind": "StatefulSet", "name": "store-" + label}))
		if diff := cmp.Diff([]string{"StatefulSet/store-" + label + "=restarted"}, results(r)); diff != "" {
			t.Fatalf("restart (-want +got):\n%s", diff)
		}
		s, err := h.admin.AppsV1().StatefulSets("default").Get(ctx, "store-"+label, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		stamp := s.Spec.Template.Annotations[restartAn]
		at, err := time.Parse(time.RFC3339, stamp)
		if err != nil || at.Before(before) || at.After(time.Now()) {
			t.Errorf("restartedAt %q: want an RFC 3339 time of this restart (%v)", stamp, err)
		}
		stamps = append(stamps, stamp)
	}
	if stamps[0] == stamps[1] {
		t.Errorf("two restarts set the same restartedAt %s", stamps[0])
	}
}

// Issue 4: status reports readiness; a wait returns when the rollout is
// complete; a wait that cannot complete is a Timeout, inside the deadline,
// with the readiness seen so far. The replica's controllers, scheduler and
// simulated nodes roll the workloads out (issue 9): nothing here plays them.
func TestStatusAndWait(t *testing.T) {
	h := mustHarness(t)
	label := "wait-" + runID()
	name := "front-" + label
	stuck := "stuck-" + label
	t.Cleanup(func() {
		deleteWorkloads(h, label)
		h.mustDeleteDeployment(t, "default", stuck)
	})
	// fn's short timeout bounds the waits that must end in Timeout; the
	// waits that must succeed run on patient, with the time the controllers
	// may need on a slow machine.
	const timeout = 12 * time.Second
	fn := h.startFunction(t, fnOptions{timeout: timeout})
	patient := h.startFunction(t, fnOptions{timeout: 120 * time.Second})
	mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": workloadManifest(label)}))

	status := event(t, map[string]any{"action": "status", "name": name})
	eventually(t, "status of "+name+" ready", func() (bool, string) {
		got := mustManage(t, fn, status).Objects[0]
		ok := got.Result == "ready" && got.Readiness != nil && got.Readiness.Available == 3 &&
			got.Readiness.ObservedGeneration == got.Readiness.Generation
		return ok, fmt.Sprintf("%s %+v", got.Result, got.Readiness)
	})
	absent := mustManage(t, fn, event(t, map[string]any{"action": "status", "name": "nope-" + label}))
	if diff := cmp.Diff([]string{"Deployment/nope-" + label + "=absent"}, results(absent)); diff != "" {
		t.Errorf("status of a missing Deployment (-want +got):\n%s", diff)
	}
	eventually(t, "status by manifest: every workload ready", func() (bool, string) {
		byManifest := mustManage(t, fn, event(t, map[string]any{"action": "status", "manifest": workloadManifest(label)}))
		want := []string{"Deployment/" + name + "=ready", "Deployment/back-" + label + "=ready",
			"StatefulSet/store-" + label + "=ready", "Deployment/keep-" + label + "=ready"}
		return cmp.Equal(want, results(byManifest)), fmt.Sprint(results(byManifest))
	})

	t.Run("wait returns when the rollout completes", func(t *testing.T) {
		r := mustManage(t, patient, event(t, map[string]any{"action": "scale", "name": name, "replicas": 4, "wait": "100s"}))
		o := r.Objects[0]
		if o.Result != "scaled" || o.Readiness == nil || o.Readiness.Ready != 4 || o.Readiness.Available != 4 {
			t.Errorf("scale with wait: %s %+v, want scaled with 4 ready", o.Result, o.Readiness)
		}
	})

	// front was scaled through the scale subresource above: the re-apply
	// must take .spec.replicas back from that, its own, field manager.
	t.Run("apply with wait returns when every rollout completes", func(t *testing.T) {
		changed := strings.ReplaceAll(workloadManifest(label), "nginx:1.27", "nginx:1.28")
		r := mustManage(t, patient, event(t, map[string]any{"action": "apply", "manifest": changed, "wait": "100s"}))
		for _, o := range r.Objects {
			if o.Result != "configured" || o.Readiness == nil || o.Readiness.Updated != o.Readiness.Desired || o.Readiness.Ready != o.Readiness.Desired {
				t.Errorf("%s/%s: %s %+v, want configured and rolled out", o.Kind, o.Name, o.Result, o.Readiness)
			}
		}
	})

	// A Deployment whose pods never become Ready (kwok's never-ready
	// stage) and whose progress deadline is far: its rollout cannot
	// complete within any wait here.
	mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": strings.ReplaceAll(
		webManifest(stuck, 2, ", "+stack.NeverReadyLabel+`: "true"`), "progressDeadlineSeconds: 6", "progressDeadlineSeconds: 600")}))

	t.Run("a wait past its bound is a Timeout", func(t *testing.T) {
		start := time.Now()
		fnErr := mustFailManage(t, fn, event(t, map[string]any{"action": "scale", "name": stuck, "replicas": 3, "wait": "2s"}), "Timeout")
		took := time.Since(start)
		t.Logf("Timeout after %s: %s", took.Round(time.Millisecond), fnErr.Message)
		for _, want := range []string{stuck, "desired 3", "ready 0"} {
			if !strings.Contains(fnErr.Message, want) {
				t.Errorf("message %q lacks %q", fnErr.Message, want)
			}
		}
		if took < 2*time.Second {
			t.Errorf("Timeout after %s, before the 2 s wait", took)
		}
	})

	t.Run("a wait as long as the function's timeout ends inside the deadline", func(t *testing.T) {
		fnErr := mustFailManage(t, fn, event(t, map[string]any{"action": "restart", "name": stuck, "wait": "12s"}), "Timeout")
		for _, want := range []string{stuck, "ready 0"} {
			if !strings.Contains(fnErr.Message, want) {
				t.Errorf("message %q does not report the rollout (%q)", fnErr.Message, want)
			}
		}
		fnErr = mustFailManage(t, fn, event(t, map[string]any{"action": "restart", "name": stuck, "wait": "1m"}), "InvalidEvent")
		if !strings.Contains(fnErr.Message, "longer than the function's timeout") {
			t.Errorf("a wait past the function's timeout: %q", fnErr.Message)
		}
	})
}

// Issue 4: a verb permissions.yml does not grant is Forbidden, naming the
// verb, the resource and the namespace the apiserver refused.
func TestForbiddenVerb(t *testing.T) {
	h := mustHarness(t)
	h.mustNamespace(t, "other")
	fn, who := h.startFunctionAs(t, fnOptions{})
	for _, tc := range []struct{ name, event string }{
		{"delete of a kind not granted", `{"action":"delete","kind":"ResourceQuota","name":"q"}`},
		{"scale in a namespace not granted", `{"action":"scale","namespace":"other","name":"web","replicas":0}`},
		{"apply of a kind not granted", `{"action":"apply","manifest":"apiVersion: v1\nkind: LimitRange\nmetadata: {name: lr}\nspec: {limits: []}\n"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := h.auditMark(t)
			fnErr := mustFailManage(t, fn, tc.event, "Forbidden")
			var refused []auditEvent
			events := h.auditSince(t, mark, who.User)
			for _, e := range events {
				if e.ResponseStatus != nil && e.ResponseStatus.Code == 403 {
					refused = append(refused, e)
				}
			}
			if len(refused) != 1 || refused[0].ObjectRef == nil {
				t.Fatalf("apiserver refused %d requests, want 1:%s", len(refused), describe(events))
			}
			r := refused[0]
			for _, want := range []string{`"` + r.Verb + `"`, r.ObjectRef.Resource, `"` + r.ObjectRef.Namespace + `"`, "permissions.yml"} {
				if !strings.Contains(fnErr.Message, want) {
					t.Errorf("message %q does not name %s (refused: %s %s in %s)", fnErr.Message, want, r.Verb, r.ObjectRef.Resource, r.ObjectRef.Namespace)
				}
			}
		})
	}
}

// The warm ensure-nginx stays one request even after the process has served
// manifests (discovery and the dynamic client are not on its path).
func TestEnsureNginxStaysOneRequestAfterManage(t *testing.T) {
	h := mustHarness(t)
	fn, who := h.startFunctionAs(t, fnOptions{})
	mustSucceed(t, fn, `{"action":"ensure-nginx"}`)
	mustManage(t, fn, event(t, map[string]any{"action": "status", "kind": "ConfigMap", "name": "nope"}))
	h.settleDeployment(t, "default", "nginx")
	mark := h.auditMark(t)
	mustSucceed(t, fn, `{"action":"ensure-nginx"}`)
	if events := h.auditSince(t, mark, who.User); len(events) != 1 {
		t.Errorf("warm ensure-nginx made %d requests, want 1:%s", len(events), describe(events))
	}
}

// configMaps is a manifest of n ConfigMaps.
func configMaps(prefix string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s-%03d\n  labels: {bench: %s}\ndata:\n  index: \"%d\"\n", prefix, i, prefix, i)
	}
	return b.String()
}

// BenchmarkApply500ConfigMaps applies 500 ConfigMaps in one event, side by
// side with `kubectl apply --server-side -f` of the same file on the same
// stack. The re-apply variants apply objects that exist, unchanged:
//
//	reapply/function-warm  one warm process: 500 applies preconditioned on
//	                       the resourceVersions it remembers
//	reapply/function-cold  a new process per iteration: discovery, 500 GETs,
//	                       500 applies
//	reapply/kubectl        a kubectl process per iteration
//	create/function-cold   a new process, the 500 objects absent
//	create/kubectl         kubectl, the 500 objects absent
//
//	cd localeks && GOWORK=off go test -run '^$' -bench Apply500 -benchtime 5x ./e2e/
func BenchmarkApply500ConfigMaps(b *testing.B) {
	h := mustHarness(b)
	const prefix = "bench"
	manifest := configMaps(prefix, 500)
	file := filepath.Join(b.TempDir(), "configmaps.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		b.Fatal(err)
	}
	ev := event(b, map[string]any{"action": "apply", "manifest": manifest})
	opts := fnOptions{timeout: 120 * time.Second}

	ctx := context.Background()
	clear := func(b *testing.B) {
		b.Helper()
		if err := h.admin.CoreV1().ConfigMaps("default").DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "bench=" + prefix}); err != nil {
			b.Fatal(err)
		}
	}
	creds, err := h.stack.AssumeRole(ctx, stack.ExecRole, stack.SessionName)
	if err != nil {
		b.Fatal(err)
	}
	env := h.stack.FunctionEnv(creds)
	b.Run("create/function-cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			clear(b)
			b.StartTimer()
			fn := startRaw(b, h, env, opts.timeout)
			r := mustManage(b, fn, ev)
			fn.Stop()
			if r.Objects[0].Result != "created" {
				b.Fatalf("result %s, want created", r.Objects[0].Result)
			}
		}
	})
	b.Run("create/kubectl", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			clear(b)
			b.StartTimer()
			h.kubectl(b, "", "apply", "--server-side", "-n", "default", "-f", file)
		}
	})
	b.Run("reapply/function-warm", func(b *testing.B) {
		fn := h.startFunction(b, opts)
		mustManage(b, fn, ev)
		for b.Loop() {
			mustManage(b, fn, ev)
		}
	})
	b.Run("reapply/function-cold", func(b *testing.B) {
		for b.Loop() {
			fn := startRaw(b, h, env, opts.timeout)
			mustManage(b, fn, ev)
			fn.Stop()
		}
	})
	b.Run("reapply/kubectl", func(b *testing.B) {
		for b.Loop() {
			h.kubectl(b, "", "apply", "--server-side", "-n", "default", "-f", file)
		}
	})
	b.Cleanup(func() {
		_ = h.admin.CoreV1().ConfigMaps("default").DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "bench=" + prefix})
	})
}

// A warm process remembers resourceVersions; an object someone else deleted
// or changed meanwhile is still reported truthfully (created, unchanged).
func TestApplyAfterOthersChangedIt(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	name := "manage-others-" + runID()
	t.Cleanup(func() { _ = h.admin.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{}) })
	fn := h.startFunction(t, fnOptions{})
	ev := event(t, map[string]any{"action": "apply", "manifest": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {color: red}\n"})
	want := func(result string) []string { return []string{"ConfigMap/" + name + "=" + result} }

	if diff := cmp.Diff(want("created"), results(mustManage(t, fn, ev))); diff != "" {
		t.Fatalf("first apply (-want +got):\n%s", diff)
	}
	if err := h.admin.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want("created"), results(mustManage(t, fn, ev))); diff != "" {
		t.Errorf("apply after an admin deleted it (-want +got):\n%s", diff)
	}
	// Another manager adds a field the manifest does not hold: the object
	// changed, but not what the function applies.
	patch := []byte(`{"data":{"extra":"x"}}`)
	if _, err := h.admin.CoreV1().ConfigMaps("default").Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want("unchanged"), results(mustManage(t, fn, ev))); diff != "" {
		t.Errorf("apply after an admin added a field (-want +got):\n%s", diff)
	}
	changed := strings.ReplaceAll(ev, "color: red", "color: green")
	if diff := cmp.Diff(want("configured"), results(mustManage(t, fn, changed))); diff != "" {
		t.Errorf("apply of a change (-want +got):\n%s", diff)
	}
	cm, err := h.admin.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil || cm.Data["color"] != "green" || cm.Data["extra"] != "x" {
		t.Errorf("configmap data %v (%v), want color green and the admin's extra kept", cm.Data, err)
	}
}

// The samples in events/ run as the README says, in the order of a day:
// apply, dry run, status, nightly scale-down, morning restore, restart,
// delete.
func TestEventSamples(t *testing.T) {
	h := mustHarness(t)
	h.mustDeleteDeployment(t, "default", "hello")
	_ = h.admin.CoreV1().ConfigMaps("default").Delete(context.Background(), "hello", metav1.DeleteOptions{})
	fn := h.startFunction(t, fnOptions{})
	steps := []struct {
		file string
		want []string
	}{
		{"apply.json", []string{"ConfigMap/hello=created", "Deployment/hello=created"}},
		{"apply-dry-run.json", []string{"ConfigMap/hello=unchanged", "Deployment/hello=unchanged"}},
		// The replica's controllers roll it out first (see below).
		{"status.json", []string{"Deployment/hello=ready"}},
		{"scale-down.json", []string{"Deployment/hello=scaled"}},
		{"scale-restore.json", []string{"Deployment/hello=scaled"}},
		{"restart.json", []string{"Deployment/hello=restarted"}},
		{"delete.json", []string{"ConfigMap/hello=deleted", "Deployment/hello=deleted"}},
		{"delete.json", []string{"ConfigMap/hello=absent", "Deployment/hello=absent"}},
	}
	for _, s := range steps {
		ev, err := os.ReadFile(filepath.Join(h.root, "events", s.file))
		if err != nil {
			t.Fatal(err)
		}
		if s.file == "status.json" {
			eventually(t, "hello rolled out", func() (bool, string) {
				d, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), "hello", metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				return d.Status.ObservedGeneration == d.Generation && d.Spec.Replicas != nil &&
					d.Status.AvailableReplicas == *d.Spec.Replicas && d.Status.UpdatedReplicas == *d.Spec.Replicas, fmt.Sprintf("%+v", d.Status)
			})
		}
		var got []string
		for _, o := range mustManage(t, fn, string(ev)).Objects {
			// Other tests' workloads may carry the sample's label too.
			if o.Name == "hello" {
				got = append(got, o.Kind+"/"+o.Name+"="+o.Result)
			}
		}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("events/%s (-want +got):\n%s", s.file, diff)
		}
	}
}
