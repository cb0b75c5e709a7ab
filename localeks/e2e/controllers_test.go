package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// Issue 9: the replica behaves like a cluster. kube-controller-manager makes
// ReplicaSets and Pods, kube-scheduler puts the pods on kwok's simulated
// nodes, kwok runs them; the function's wait, restart, scale, delete and
// status meet real controllers, through the built bootstrap.

// settle bounds how long the controllers may take to act: generous, as a
// shared 2-core machine is slow; a controller that never acts fails the test.
const settle = 90 * time.Second

// eventually polls cond until it holds, failing the test with its last
// report after settle.
func eventually(tb testing.TB, what string, cond func() (bool, string)) {
	tb.Helper()
	var last string
	for deadline := time.Now().Add(settle); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	tb.Fatalf("%s: not within %s; last seen: %s", what, settle, last)
}

func webManifest(name string, replicas int, extraLabels string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  replicas: %d
  progressDeadlineSeconds: 6
  selector:
    matchLabels: {app: %s}
  template:
    metadata:
      labels: {app: %s%s}
    spec:
      containers:
      - {name: web, image: "nginx:1.27"}
`, name, replicas, name, name, extraLabels)
}

// pods lists the pods of app name, those being deleted too.
func (h *harness) pods(tb testing.TB, name string) []corev1.Pod {
	tb.Helper()
	list, err := h.admin.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		tb.Fatal(err)
	}
	return list.Items
}

// podSummary is pods' states, "phase/ready/node-kind", with "/deleting"
// for a pod being deleted, sorted.
func podSummary(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		ready := "not-ready"
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = "ready"
			}
		}
		node := "unscheduled"
		if strings.HasPrefix(p.Spec.NodeName, "kwok-node-") {
			node = "kwok"
		}
		state := string(p.Status.Phase) + "/" + ready + "/" + node
		if p.DeletionTimestamp != nil {
			state += "/deleting"
		}
		out = append(out, state)
	}
	slices.Sort(out)
	return out
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// waitPods waits until the app's pods are exactly want (sorted states).
func (h *harness) waitPods(tb testing.TB, name string, want []string) {
	tb.Helper()
	eventually(tb, "pods of "+name, func() (bool, string) {
		got := podSummary(h.pods(tb, name))
		return cmp.Equal(want, got) || len(want) == 0 && len(got) == 0, fmt.Sprint(got)
	})
}

func TestRolloutByControllers(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{timeout: 120 * time.Second})
	name := "web-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })

	t.Run("apply with wait is ready once the pods run", func(t *testing.T) {
		r := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": webManifest(name, 3, ""), "wait": "100s"}))
		o := r.Objects[0]
		if o.Result != "created" || o.Readiness == nil || o.Readiness.Status != "Current" || o.Readiness.Ready != 3 || o.Readiness.Available != 3 {
			t.Fatalf("apply with wait: %s %+v, want created and rolled out (3 ready)", o.Result, o.Readiness)
		}
		// The controller did it: three pods, scheduled on simulated nodes.
		if diff := cmp.Diff(repeat("Running/ready/kwok", 3), podSummary(h.pods(t, name))); diff != "" {
			t.Errorf("pods after the rollout (-want +got):\n%s", diff)
		}
		if got := mustManage(t, fn, event(t, map[string]any{"action": "status", "name": name})); got.Objects[0].Result != "ready" {
			t.Errorf("status after the rollout: %s %+v, want ready", got.Objects[0].Result, got.Objects[0].Readiness)
		}
	})

	t.Run("restart makes a new ReplicaSet and the old pods go", func(t *testing.T) {
		before := h.replicaSets(t, name)
		r := mustManage(t, fn, event(t, map[string]any{"action": "restart", "name": name, "wait": "100s"}))
		if o := r.Objects[0]; o.Result != "restarted" || o.Readiness == nil || o.Readiness.Updated != 3 || o.Readiness.Ready != 3 {
			t.Fatalf("restart with wait: %s %+v, want restarted with 3 updated and ready", o.Result, o.Readiness)
		}
		after := h.replicaSets(t, name)
		if len(after) != len(before)+1 {
			t.Fatalf("ReplicaSets %v after the restart, want one more than %v", after, before)
		}
		current := ""
		for rs, n := range after {
			if _, old := before[rs]; !old && n == 3 {
				current = rs
			}
		}
		if current == "" {
			t.Fatalf("no new ReplicaSet with 3 replicas among %v", after)
		}
		eventually(t, "only the new ReplicaSet's pods", func() (bool, string) {
			pods := h.pods(t, name)
			var owners []string
			for _, p := range pods {
				for _, ref := range p.OwnerReferences {
					owners = append(owners, ref.Name)
				}
			}
			return cmp.Equal(repeat(current, 3), owners), fmt.Sprint(owners, podSummary(pods))
		})
	})

	t.Run("scale to 0 removes the pods, restore brings them back", func(t *testing.T) {
		mustManage(t, fn, event(t, map[string]any{"action": "scale", "name": name, "replicas": 0, "wait": "100s"}))
		h.waitPods(t, name, nil)
		r := mustManage(t, fn, event(t, map[string]any{"action": "scale", "name": name, "replicas": "restore", "wait": "100s"}))
		if o := r.Objects[0]; o.Result != "scaled" || o.Readiness == nil || o.Readiness.Ready != 3 {
			t.Fatalf("restore with wait: %s %+v, want scaled with 3 ready", o.Result, o.Readiness)
		}
		h.waitPods(t, name, repeat("Running/ready/kwok", 3))
	})

	t.Run("delete with Background propagation: the garbage collector removes ReplicaSets and Pods", func(t *testing.T) {
		r := mustManage(t, fn, event(t, map[string]any{"action": "delete", "kind": "Deployment", "name": name, "propagation": "Background"}))
		if diff := cmp.Diff([]string{"Deployment/" + name + "=deleted"}, results(r)); diff != "" {
			t.Fatalf("delete (-want +got):\n%s", diff)
		}
		eventually(t, "ReplicaSets of "+name+" collected", func() (bool, string) {
			rs := h.replicaSets(t, name)
			return len(rs) == 0, fmt.Sprint(rs)
		})
		h.waitPods(t, name, nil)
	})
}

// ensure-nginx writes the Deployment; the controllers roll it out and status
// says ready.
func TestEnsureNginxRollsOut(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{})
	name := "nginx-rollout-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })
	mustSucceed(t, fn, `{"action":"ensure-nginx","name":"`+name+`","replicas":2}`)
	eventually(t, "status of "+name+" ready", func() (bool, string) {
		r := mustManage(t, fn, event(t, map[string]any{"action": "status", "name": name}))
		return r.Objects[0].Result == "ready", fmt.Sprintf("%s %+v", r.Objects[0].Result, r.Objects[0].Readiness)
	})
	list, err := h.admin.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, p := range list.Items {
		if strings.HasPrefix(p.Name, name+"-") && p.Status.Phase == corev1.PodRunning && strings.HasPrefix(p.Spec.NodeName, "kwok-node-") {
			running++
		}
	}
	if running != 2 {
		t.Errorf("%d pods of %s running on simulated nodes, want 2", running, name)
	}
}

// A Job waited for completes: kwok completes its pod, the Job controller
// marks it Complete.
func TestJobWaitedForCompletes(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{timeout: 120 * time.Second})
	name := "job-" + runID()
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		_ = h.admin.BatchV1().Jobs("default").Delete(context.Background(), name, metav1.DeleteOptions{PropagationPolicy: &bg})
	})
	manifest := fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: %s}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {app: %s}
    spec:
      restartPolicy: Never
      containers:
      - {name: work, image: "busybox:1.36", command: ["true"]}
`, name, name)
	r := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": manifest, "wait": "100s"}))
	o := r.Objects[0]
	if o.Result != "created" || o.Readiness == nil || o.Readiness.Status != "Current" || !hasCondition(o.Readiness, "Complete", "True") {
		t.Fatalf("job with wait: %s %+v, want created and Complete", o.Result, o.Readiness)
	}
	var phases []string
	for _, p := range h.pods(t, name) {
		phases = append(phases, string(p.Status.Phase)+" on "+strings.TrimRight(p.Spec.NodeName, "0123456789"))
	}
	if diff := cmp.Diff([]string{"Succeeded on kwok-node-"}, phases); diff != "" {
		t.Errorf("job pods (-want +got):\n%s", diff)
	}
}

// A Deployment whose pods never become Ready ends failed, from the
// Deployment controller's own ProgressDeadlineExceeded.
func TestNeverReadyDeploymentFails(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{timeout: 120 * time.Second})
	name := "never-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })
	manifest := webManifest(name, 2, ", "+stack.NeverReadyLabel+`: "true"`)
	r := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": manifest, "wait": "100s"}))
	o := r.Objects[0]
	if o.Result != "failed" || o.Readiness == nil || !hasConditionReason(o.Readiness, "Progressing", "False", "ProgressDeadlineExceeded") {
		t.Fatalf("never-ready rollout: %s %+v, want failed with ProgressDeadlineExceeded", o.Result, o.Readiness)
	}
	if diff := cmp.Diff(repeat("Running/not-ready/kwok", 2), podSummary(h.pods(t, name))); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
	if got := mustManage(t, fn, event(t, map[string]any{"action": "status", "name": name})); got.Objects[0].Result != "failed" {
		t.Errorf("status: %s, want failed", got.Objects[0].Result)
	}
}

func hasCondition(r *readiness, typ, status string) bool {
	for _, c := range r.Conditions {
		if c.Type == typ && c.Status == status {
			return true
		}
	}
	return false
}

func hasConditionReason(r *readiness, typ, status, reason string) bool {
	for _, c := range r.Conditions {
		if c.Type == typ && c.Status == status && c.Reason == reason {
			return true
		}
	}
	return false
}

// replicaSets returns the ReplicaSets of Deployment name with their replicas.
func (h *harness) replicaSets(tb testing.TB, name string) map[string]int32 {
	tb.Helper()
	list, err := h.admin.AppsV1().ReplicaSets("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int32{}
	for _, rs := range list.Items {
		if owned(rs, name) {
			out[rs.Name] = *rs.Spec.Replicas
		}
	}
	return out
}

func owned(rs appsv1.ReplicaSet, deployment string) bool {
	for _, ref := range rs.OwnerReferences {
		if ref.Kind == "Deployment" && ref.Name == deployment {
			return true
		}
	}
	return false
}

// A StatefulSet with a partition is judged as kstatus judges it: a rollout
// is complete once the ordinals at or above the partition run the new
// template, and the controller leaves the others as they are.
func TestStatefulSetPartition(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{timeout: 120 * time.Second})
	name := "store-" + runID()
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		_ = h.admin.AppsV1().StatefulSets("default").Delete(context.Background(), name, metav1.DeleteOptions{PropagationPolicy: &bg})
	})
	manifest := func(image string) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: StatefulSet
metadata: {name: %s}
spec:
  replicas: 3
  serviceName: %s
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {partition: 2}
  selector:
    matchLabels: {app: %s}
  template:
    metadata:
      labels: {app: %s}
    spec:
      containers:
      - {name: db, image: %q}
`, name, name, name, name, image)
	}
	r := mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": manifest("nginx:1.27"), "wait": "100s"}))
	if o := r.Objects[0]; o.Result != "created" || o.Readiness == nil || o.Readiness.Status != "Current" || o.Readiness.Ready != 3 {
		t.Fatalf("apply with wait: %s %+v, want created with 3 ready", o.Result, o.Readiness)
	}
	r = mustManage(t, fn, event(t, map[string]any{"action": "apply", "manifest": manifest("nginx:1.28"), "wait": "100s"}))
	if o := r.Objects[0]; o.Result != "configured" || o.Readiness == nil || o.Readiness.Status != "Current" || o.Readiness.Updated != 1 {
		t.Fatalf("apply of a new image with wait: %s %+v, want configured and Current with 1 updated (ordinal 2 only)", o.Result, o.Readiness)
	}
	images := map[string]string{}
	for _, p := range h.pods(t, name) {
		if p.DeletionTimestamp == nil {
			images[p.Name] = p.Spec.Containers[0].Image
		}
	}
	want := map[string]string{name + "-0": "nginx:1.27", name + "-1": "nginx:1.27", name + "-2": "nginx:1.28"}
	if diff := cmp.Diff(want, images); diff != "" {
		t.Errorf("pod images after the partitioned rollout (-want +got):\n%s", diff)
	}
}
