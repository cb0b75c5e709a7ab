package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// settleDeployment waits until the Deployment controller has caught up
// with ns/name and lambda-eks's last change to it is more than 3 seconds
// old (settleApplied).
func (h *harness) settleDeployment(tb testing.TB, ns, name string) {
	tb.Helper()
	ctx := context.Background()
	eventually(tb, ns+"/"+name+" settled", func() (bool, string) {
		d, err := h.admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == d.Status.Replicas,
			fmt.Sprintf("%+v", d.Status)
	})
	d, err := h.admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	settleApplied(d)
}

// settleApplied sleeps until lambda-eks's last change to obj, the time of
// its Apply entry in obj's managed fields (one-second resolution), is more
// than 3 seconds old: from then on a warm apply of it needs no
// resourceVersion precondition (kube.Apply), so a test can count exactly
// one request. obj must have been read after that change.
func settleApplied(obj metav1.Object) {
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == fieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" && mf.Time != nil {
			time.Sleep(time.Until(mf.Time.Add(3500 * time.Millisecond)))
		}
	}
}
