package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Issue 8 (1, 6): the payload is decoded by the function itself, strictly,
// through the built bootstrap: a repeated, wrongly cased or unknown field,
// data after the object, a payload that is not a JSON object, deep nesting
// and control characters in names, selectors and images are all
// InvalidEvent - the function's own error, not aws-lambda-go's - and the
// function sends no request to the API server, so nothing is written.
func TestBadInputWritesNothing(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	id := "bad-" + runID()
	// The object a smuggled delete would delete, and a workload a NUL in a
	// selector would scale.
	if _, err := h.admin.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: id, Labels: map[string]string{"e2e-badinput": id}},
		Data:       map[string]string{"color": "red"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.admin.CoreV1().ConfigMaps("default").Delete(ctx, id, metav1.DeleteOptions{}) })

	fn, who := h.startFunctionAs(t, fnOptions{})
	// Warm first: the checks below hold for a process that has its clients.
	mustSucceed(t, fn, `{"action":"ensure-nginx"}`)
	before, err := h.admin.AppsV1().Deployments("default").Get(ctx, "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	manifest := `"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ` + id + `-new}\ndata: {color: blue}\n"`
	for _, tc := range []struct {
		name, event, wantInMsg string
	}{
		{"a second action", `{"action":"status","kind":"ConfigMap","name":"` + id + `","action":"delete"}`, `duplicate field "action"`},
		{"dryRun overridden in capitals", `{"action":"apply","manifest":` + manifest + `,"dryRun":true,"DRYRUN":false}`, `unknown field "DRYRUN"`},
		{"a field in another case", `{"Replicas":3}`, `unknown field "Replicas"`},
		{"data after the object", `{"action":"status","kind":"ConfigMap","name":"` + id + `"} {"action":"delete"}`, "data after its JSON object"},
		{"garbage after the object", `{"action":"ensure-nginx","replicas":0}garbage`, "data after its JSON object"},
		{"not JSON", `this is not JSON`, "must be a JSON object"},
		{"a JSON string", `"{\"action\":\"delete\"}"`, "must be a JSON object"},
		{"broken JSON", `{"action":"ensure-nginx",`, "not valid JSON"},
		{"deep nesting", `{"detail":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, "nests deeper than"},
		{"NUL in a selector", `{"action":"scale","selector":"e2e-badinput=` + id + `\u0000","replicas":0}`, "control character U+0000"},
		{"NUL in an image", `{"action":"ensure-nginx","image":"nginx:1.27\u0000"}`, "control character U+0000"},
		{"NUL in a name", `{"action":"delete","kind":"ConfigMap","name":"` + id + `\u0000"}`, "control character U+0000"},
		{"escape in a namespace", `{"action":"ensure-nginx","namespace":"default\u001b"}`, "control character U+001B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := h.auditMark(t)
			fe := mustFail(t, fn, tc.event, "InvalidEvent")
			if !strings.Contains(fe.Message, tc.wantInMsg) {
				t.Errorf("message %q lacks %q", fe.Message, tc.wantInMsg)
			}
			if events := h.auditSince(t, mark, who.User); len(events) != 0 {
				t.Errorf("the function sent %d requests to the apiserver for a refused event:%s", len(events), describe(events))
			}
		})
	}

	// Nothing changed: the ConfigMap a smuggled delete named, the one the
	// overridden dry run would have created, and default/nginx.
	cm, err := h.admin.CoreV1().ConfigMaps("default").Get(ctx, id, metav1.GetOptions{})
	if err != nil || cm.Data["color"] != "red" {
		t.Errorf("configmap %s: %v %v, want it as it was", id, cm.Data, err)
	}
	if _, err := h.admin.CoreV1().ConfigMaps("default").Get(ctx, id+"-new", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("configmap %s-new: %v, want NotFound (the dry run was not a dry run)", id, err)
	}
	after, err := h.admin.AppsV1().Deployments("default").Get(ctx, "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Its status moves with the controllers; its spec (generation) must not.
	if before.Generation != after.Generation {
		t.Errorf("default/nginx changed: generation %d -> %d", before.Generation, after.Generation)
	}
	// The process is still healthy and its connection still serves.
	mustManage(t, fn, `{"action":"status","kind":"ConfigMap","name":"`+id+`"}`)
}

// Issue 8 (4): a 403 from an admission policy is not an RBAC refusal. A
// ValidatingAdmissionPolicy (run by the API server itself, no webhook
// server) whose validation says reason: Forbidden refuses a blue ConfigMap:
// the function answers Forbidden, says a policy refused the object, quotes
// the policy's message and does not send the user to permissions.yml; the
// object is not written. A red one, which the policy admits, is applied:
// the refusal was the policy's, not RBAC's.
func TestAdmissionPolicyRefusal(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	id := "vap-" + runID()
	policy := `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: ` + id + `
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  validations:
  - expression: "!has(object.data) || !('color' in object.data) || object.data.color != 'blue'"
    message: "blue ConfigMaps are not allowed here (` + id + `)"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: ` + id + `
spec:
  policyName: ` + id + `
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels:
        e2e-vap: ` + id + `
`
	h.kubectl(t, policy, "apply", "-f", "-")
	t.Cleanup(func() { _, _ = h.kubectlErr(policy, "delete", "--ignore-not-found", "-f", "-") })

	// The API server loads policies asynchronously: wait until it enforces
	// this one (on the admin's dry run) before asking the function.
	blue := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"e2e-vap": id}},
			Data: map[string]string{"color": "blue"}}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := h.admin.CoreV1().ConfigMaps("default").Create(ctx, blue(id+"-probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if apierrors.IsForbidden(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy is not enforced after 30 s (last answer: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	fn := h.startFunction(t, fnOptions{})
	doc := func(color string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + id + "\n  labels: {e2e-vap: " + id + "}\ndata: {color: " + color + "}\n"
	}
	fe := mustFailManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": doc("blue")}), "Forbidden")
	t.Logf("Forbidden: %s", fe.Message)
	for _, want := range []string{"admission policy", "blue ConfigMaps are not allowed here (" + id + ")", "ValidatingAdmissionPolicy", "not RBAC"} {
		if !strings.Contains(fe.Message, want) {
			t.Errorf("message %q lacks %q", fe.Message, want)
		}
	}
	if strings.Contains(fe.Message, "permissions") {
		t.Errorf("a policy's refusal sends the user to the permissions: %q", fe.Message)
	}
	if _, err := h.admin.CoreV1().ConfigMaps("default").Get(ctx, id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("configmap %s: %v, want NotFound (the policy refused it)", id, err)
	}

	r := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": doc("red")}))
	t.Cleanup(func() { _ = h.admin.CoreV1().ConfigMaps("default").Delete(ctx, id, metav1.DeleteOptions{}) })
	if got := results(r); len(got) != 1 || got[0] != "ConfigMap/"+id+"=created" {
		t.Errorf("red configmap: results %v, want it created", got)
	}
}

// Issue 8 (3, 4): errors tell the truth through the bootstrap. An object
// whose fields do not fit its kind's schema, which the API server answers
// with 500 "failed to create typed patch object", is InvalidEvent naming
// the field, not a network outage, and is not written; a restore that the
// object's state stands in the way of (a remembered replica count that is
// not a number) is Conflict naming the object and the annotation, changes
// nothing, and does not blame the network.
func TestErrorsTellTheTruth(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	id := "truth-" + runID()
	fn := h.startFunction(t, fnOptions{})

	for _, tc := range []struct {
		name, manifest, field string
	}{
		{"a field the schema does not declare", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + id + "-cm}\nspec: {color: blue}\n", ".spec"},
		{"a value of the wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: " + id + "-d}\nspec:\n  replicas: three\n" +
			"  selector: {matchLabels: {app: " + id + "}}\n  template:\n    metadata: {labels: {app: " + id + "}}\n" +
			"    spec: {containers: [{name: c, image: nginx:1.27}]}\n", ".spec.replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := mustFailManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": tc.manifest}), "InvalidEvent")
			t.Logf("InvalidEvent: %s", fe.Message)
			if !strings.Contains(fe.Message, tc.field) || strings.Contains(fe.Message, "network") {
				t.Errorf("message %q does not name field %s, or blames the network", fe.Message, tc.field)
			}
		})
	}
	if _, err := h.admin.CoreV1().ConfigMaps("default").Get(ctx, id+"-cm", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("configmap %s-cm: %v, want NotFound", id, err)
	}
	if _, err := h.admin.AppsV1().Deployments("default").Get(ctx, id+"-d", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("deployment %s-d: %v, want NotFound", id, err)
	}

	// A workload at 0 whose remembered replicas someone set to a word.
	dep := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: " + id + "\n  annotations: {lambda-eks.io/replicas-before-scale-down: many}\n" +
		"spec:\n  replicas: 0\n  selector: {matchLabels: {app: " + id + "}}\n  template:\n    metadata: {labels: {app: " + id + "}}\n" +
		"    spec: {containers: [{name: c, image: nginx:1.27}]}\n"
	h.kubectl(t, dep, "apply", "-n", "default", "-f", "-")
	t.Cleanup(func() { _, _ = h.kubectlErr("", "delete", "-n", "default", "--ignore-not-found", "deployment", id) })
	// The object's state, not the event or the network, stands in the way.
	fe := mustFailManage(t, fn, event(t, map[string]any{"action": "scale", "name": id, "replicas": "restore"}), "Conflict")
	t.Logf("Conflict: %s", fe.Message)
	for _, want := range []string{"Deployment default/" + id, `replicas-before-scale-down="many"`, "nothing was changed"} {
		if !strings.Contains(fe.Message, want) || strings.Contains(fe.Message, "network") {
			t.Errorf("message %q does not say %q, or blames the network", fe.Message, want)
		}
	}
	d, err := h.admin.AppsV1().Deployments("default").Get(ctx, id, metav1.GetOptions{})
	if err != nil || *d.Spec.Replicas != 0 || d.Annotations["lambda-eks.io/replicas-before-scale-down"] != "many" {
		t.Errorf("deployment %s changed by a refused restore: %v", id, err)
	}
}
