package kube

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

func unstructuredObj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns, "generation": int64(1)}}}
	for k, v := range fields {
		u.Object[k] = v
	}
	return u
}

func TestDeleteAndStatusThroughTheDynamicClient(t *testing.T) {
	ready := unstructuredObj("apps/v1", "Deployment", "team", "web", map[string]any{
		"spec":   map[string]any{"replicas": int64(2)},
		"status": map[string]any{"observedGeneration": int64(1), "replicas": int64(2), "updatedReplicas": int64(2), "readyReplicas": int64(2), "availableReplicas": int64(2)},
	})
	cm := unstructuredObj("v1", "ConfigMap", "team", "settings", nil)
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), ready, cm)
	c := New(nil, dyn, newTestMapper())
	ctx := context.Background()
	refs := []Ref{{Kind: "Deployment", Name: "web"}, {Kind: "ConfigMap", Name: "settings"}, {Kind: "Deployment", Name: "gone"}}

	line := func(rs []ObjectResult) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.APIVersion+" "+r.Kind+" "+r.Namespace+"/"+r.Name+"="+string(r.Result))
		}
		return out
	}
	st, err := c.Status(ctx, refs, "team")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apps/v1 Deployment team/web=ready", "v1 ConfigMap team/settings=ready", "apps/v1 Deployment team/gone=absent"}, line(st)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if st[0].Readiness == nil || st[0].Readiness.Available != 2 {
		t.Errorf("deployment readiness %+v, want 2 available", st[0].Readiness)
	}

	// The fake ignores dryRun; what matters is that every delete asks for it.
	dryDyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), ready.DeepCopy(), cm.DeepCopy())
	del, err := New(nil, dryDyn, newTestMapper()).Delete(ctx, refs, DeleteOptions{Namespace: "team", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apps/v1 Deployment team/web=deleted", "v1 ConfigMap team/settings=deleted", "apps/v1 Deployment team/gone=absent"}, line(del)); diff != "" {
		t.Errorf("dry-run delete (-want +got):\n%s", diff)
	}
	for _, a := range dryDyn.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok && !cmp.Equal(d.DeleteOptions.DryRun, []string{metav1.DryRunAll}) {
			t.Errorf("delete of %s/%s without dryRun: %+v", d.GetResource().Resource, d.Name, d.DeleteOptions)
		}
	}

	del, err = c.Delete(ctx, refs, DeleteOptions{Namespace: "team", Propagation: metav1.DeletePropagationForeground})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apps/v1 Deployment team/web=deleted", "v1 ConfigMap team/settings=deleted", "apps/v1 Deployment team/gone=absent"}, line(del)); diff != "" {
		t.Errorf("delete (-want +got):\n%s", diff)
	}
	del, err = c.Delete(ctx, refs, DeleteOptions{Namespace: "team"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apps/v1 Deployment team/web=absent", "v1 ConfigMap team/settings=absent", "apps/v1 Deployment team/gone=absent"}, line(del)); diff != "" {
		t.Errorf("delete again (-want +got):\n%s", diff)
	}
}

func TestOnlyOwnConflicts(t *testing.T) {
	conflict := func(managers ...string) error {
		st := metav1.Status{Status: metav1.StatusFailure, Code: 409, Reason: metav1.StatusReasonConflict, Details: &metav1.StatusDetails{}}
		for _, m := range managers {
			st.Details.Causes = append(st.Details.Causes, metav1.StatusCause{Type: metav1.CauseTypeFieldManagerConflict,
				Message: "conflict with " + m + " using apps/v1", Field: ".spec.replicas"})
		}
		return &apierrors.StatusError{ErrStatus: st}
	}
	tests := []struct {
		err  error
		want bool
	}{
		{conflict(`"lambda-eks" with subresource "scale"`), true},
		{conflict(`"lambda-eks" with subresource "scale"`, `"kubectl"`), false},
		{conflict(`"lambda-eks-other"`), false},
		{conflict(), false},
		{apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "a", errors.New("stale")), false},
	}
	for i, tt := range tests {
		if got := onlyOwnConflicts(tt.err); got != tt.want {
			t.Errorf("case %d: onlyOwnConflicts = %v, want %v", i, got, tt.want)
		}
	}
}
