package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Issue 7 §2: created / configured / unchanged say what the apply did to the
// live object, whatever other writers did in between; and a warm apply
// that can be exact is one request.
func TestApplyResultsAreHonest(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	name := "honest-" + runID()
	cms := h.admin.CoreV1().ConfigMaps("default")
	t.Cleanup(func() { _ = cms.Delete(ctx, name, metav1.DeleteOptions{}) })
	fn, who := h.startFunctionAs(t, fnOptions{})
	manifest := func(data string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {%s}\n", name, data)
	}
	red := manifest("color: red")
	apply := func(m string) string {
		t.Helper()
		r := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": m, "force": true}))
		if len(r.Objects) != 1 {
			t.Fatalf("objects %+v, want one", r.Objects)
		}
		return r.Objects[0].Result
	}
	// lambda-eks's managed-fields time has one-second resolution; past a few
	// seconds a warm apply needs no precondition, so it is one request.
	settle := func() {
		t.Helper()
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		settleApplied(cm)
	}
	edit := func(fn func(cm *corev1.ConfigMap)) {
		t.Helper()
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fn(cm)
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name     string
		before   func()
		manifest string
		want     string
		// oneRequest: the warm apply must be exactly one request
		oneRequest bool
		wantColor  string
		wantSize   string // other-team's field ("": absent)
	}{
		{"created", nil, red, "created", false, "red", ""},
		{"unchanged", nil, red, "unchanged", true, "red", ""},
		{"another manager changes an owned field, a forced apply restores it", func() {
			edit(func(cm *corev1.ConfigMap) { cm.Data["color"] = "blue" })
		}, red, "configured", true, "red", ""},
		{"another manager adds a field lambda-eks does not own", func() {
			theirs := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q},"data":{"size":"big"}}`, name)
			if _, err := cms.Patch(ctx, name, types.ApplyPatchType, []byte(theirs), metav1.PatchOptions{FieldManager: "other-team"}); err != nil {
				t.Fatal(err)
			}
		}, red, "unchanged", true, "red", "big"},
		{"another manager's label", func() {
			edit(func(cm *corev1.ConfigMap) { cm.Labels = map[string]string{"team": "x"} })
		}, red, "unchanged", true, "red", "big"},
		{"the manifest adds a field", nil, manifest("color: red, shape: round"), "configured", true, "red", "big"},
		{"the manifest drops it", nil, red, "configured", true, "red", "big"},
		{"the manifest adds a field another manager set to the same value", nil, manifest("color: red, size: big"), "unchanged", true, "red", "big"},
		{"right after its own change, another writer: still told apart", func() {
			edit(func(cm *corev1.ConfigMap) { cm.Data["color"] = "green" })
		}, manifest("color: red, size: big"), "configured", false, "red", "big"},
		{"the manifest drops a field another manager also set: theirs stays", nil, red, "unchanged", true, "red", "big"},
	}
	for i, s := range steps {
		if i > 0 && !strings.HasPrefix(s.name, "right after") {
			settle()
		}
		if s.before != nil {
			s.before()
		}
		mark := h.auditMark(t)
		if got := apply(s.manifest); got != s.want {
			t.Errorf("%s: %s, want %s", s.name, got, s.want)
		}
		if s.oneRequest {
			if events := h.auditSince(t, mark, who.User); len(events) != 1 {
				t.Errorf("%s: %d requests, want 1:%s", s.name, len(events), describe(events))
			}
		}
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["color"] != s.wantColor {
			t.Errorf("%s: color %q, want %q", s.name, cm.Data["color"], s.wantColor)
		}
		if cm.Data["size"] != s.wantSize {
			t.Errorf("%s: size %q, want %q", s.name, cm.Data["size"], s.wantSize)
		}
	}
}

// Issue 7 §2: the Deployment controller writing status (the replica runs
// the real one) is not a change lambda-eks made: still one request, unchanged.
func TestApplyUnchangedAfterStatusWrite(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	name := "honest-status-" + runID()
	deps := h.admin.AppsV1().Deployments("default")
	t.Cleanup(func() { _ = deps.Delete(ctx, name, metav1.DeleteOptions{}) })
	fn, who := h.startFunctionAs(t, fnOptions{})
	ev := event(t, map[string]any{"action": "ensure-nginx", "name": name})
	if got := results(mustManage(t, fn, ev)); !cmp.Equal(got, []string{"Deployment/" + name + "=created"}) {
		t.Fatalf("first: %v", got)
	}
	eventually(t, "the controller rolled "+name+" out", func() (bool, string) {
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ObservedGeneration == d.Generation && d.Status.ReadyReplicas == 2, fmt.Sprintf("%+v", d.Status)
	})
	// Past lambda-eks's one-second managed-fields window, so the warm
	// apply needs no precondition.
	h.settleDeployment(t, "default", name)
	d, err := deps.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	statusWriter := ""
	for _, mf := range d.ManagedFields {
		if mf.Subresource == "status" {
			statusWriter = mf.Manager
		}
	}
	if statusWriter == "" {
		t.Fatalf("no status writer in %v: the controller should have written status", d.ManagedFields)
	}
	mark := h.auditMark(t)
	if got := results(mustManage(t, fn, ev)); !cmp.Equal(got, []string{"Deployment/" + name + "=unchanged"}) {
		t.Errorf("after %s wrote status: %v, want unchanged", statusWriter, got)
	}
	if events := h.auditSince(t, mark, who.User); len(events) != 1 {
		t.Errorf("%d requests, want 1:%s", len(events), describe(events))
	}
}

// Issue 8 §2/§3: a document only the API server can refuse - kind in the
// wrong case, a field the schema does not declare, a value of the wrong
// type, spec on a ConfigMap, an invalid value - is InvalidEvent naming the
// document, and not one object of a ten-document manifest is written.
func TestApplyServerRefusalWritesNothing(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	ns := "refuse-" + runID()
	h.mustNamespace(t, ns)
	t.Cleanup(func() { h.dropNamespace(t, ns) })
	h.grantCluster(t, "")
	fn, who := h.startFunctionAs(t, fnOptions{})
	var good strings.Builder
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&good, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d}\ndata: {k: v}\n---\n", i)
	}
	deployment := func(spec string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n" +
			"  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n" + spec
	}
	for _, tc := range []struct{ name, doc, wantInMsg string }{
		{"kind in the wrong case", "apiVersion: v1\nkind: configmap\nmetadata: {name: lower}\n", "document 10"},
		{"a field the schema does not declare", deployment("  replicaz: 2\n"), "replicaz"},
		{"a value of the wrong type", deployment("  replicas: two\n"), "replicas"},
		{"spec on a ConfigMap", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: spec}\nspec: {a: b}\n", "spec"},
		{"a value the server refuses", deployment("  replicas: -3\n"), "replicas"},
		{"an invalid label value", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lbl, labels: {a: \"not valid!\"}}\n", "document 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := h.auditMark(t)
			start := time.Now()
			fnErr := mustFailManage(t, fn, event(t, map[string]any{"action": "apply", "namespace": ns, "manifest": good.String() + tc.doc}), "InvalidEvent")
			t.Logf("%s: %s in %s", tc.name, fnErr.Message, time.Since(start).Round(time.Millisecond))
			if !strings.Contains(fnErr.Message, tc.wantInMsg) || !strings.Contains(fnErr.Message, "document 10") {
				t.Errorf("message %q: want document 10 and %q", fnErr.Message, tc.wantInMsg)
			}
			for _, e := range h.auditSince(t, mark, who.User) {
				if e.Verb != "get" && e.Verb != "list" && e.Verb != "watch" && !strings.Contains(e.URI, "dryRun=All") {
					t.Errorf("the function wrote for a refused manifest: %s %s", e.Verb, e.URI)
				}
			}
			list, err := h.admin.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, cm := range list.Items {
				if strings.HasPrefix(cm.Name, "cm-") {
					names = append(names, cm.Name)
				}
			}
			if len(names) > 0 {
				t.Errorf("written despite the refusal: %v", names)
			}
		})
	}
}
