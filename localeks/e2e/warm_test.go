package e2e

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// TestWarmInvocationWithController: the replica's Deployment controller
// writes status between warm invocations, as a real cluster does. Its status
// updates leave a warm ensure-nginx at one request of the function's own
// (the audit log is read per user: the controllers' writes are theirs) and
// "unchanged"; another writer's change to the spec is put back and reported
// "configured".
func TestWarmInvocationWithController(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	const ns, name = "default", "nginx-warm"
	h.mustDeleteDeployment(t, ns, name)
	t.Cleanup(func() { h.mustDeleteDeployment(t, ns, name) })
	fn, id := h.startFunctionAs(t, fnOptions{})
	event := `{"action":"ensure-nginx","name":"` + name + `","replicas":2}`
	deployments := h.admin.AppsV1().Deployments(ns)

	if got := mustSucceed(t, fn, event).Objects[0].Result; got != "created" {
		t.Fatalf("first invocation: %s, want created", got)
	}

	// The Deployment controller rolls it out: only status and
	// resourceVersion move (and keep moving while the controllers work).
	eventually(t, name+" rolled out", func() (bool, string) {
		d, err := deployments.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ObservedGeneration == d.Generation && d.Status.AvailableReplicas == 2 && d.Status.UpdatedReplicas == 2,
			fmt.Sprintf("%+v", d.Status)
	})
	// Within seconds of its own change the function cannot tell another
	// writer's change from its own by the managed-fields time (one-second
	// resolution), and preconditions its apply: the controllers' writes
	// then cost a 409, a GET and a second apply. Past that window, one request.
	h.settleDeployment(t, ns, name)
	mark := h.auditMark(t)
	if got := mustSucceed(t, fn, event).Objects[0].Result; got != "unchanged" {
		t.Errorf("after a status update: %s, want unchanged", got)
	}
	if reqs := h.auditSince(t, mark, id.User); len(reqs) != 1 {
		t.Errorf("after a status update the warm invocation made %d requests, want 1:%s", len(reqs), describe(reqs))
	}

	// Someone scales it by hand: the function puts its replicas back.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deployments.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		five := int32(5)
		d.Spec.Replicas = &five
		_, err = deployments.Update(ctx, d, metav1.UpdateOptions{FieldManager: "someone"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustSucceed(t, fn, event).Objects[0].Result; got != "configured" {
		t.Errorf("after a manual scale: %s, want configured", got)
	}
	d, err := deployments.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2 again", *d.Spec.Replicas)
	}
}
