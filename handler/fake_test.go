package handler

import (
	"context"
	"reflect"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// newFakeDynamic is a dynamic fake that knows the kinds the handler tests
// use and answers server-side apply (create, or merge into the stored
// object and write only when that changes it) and the scale subresource as
// an API server does, closely enough for the handler's tests: the kube
// package's own tests prove its results.
func newFakeDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		{Group: "apps", Version: "v1", Resource: "deployments"}:  "DeploymentList",
		{Group: "apps", Version: "v1", Resource: "statefulsets"}: "StatefulSetList",
		{Group: "apps", Version: "v1", Resource: "daemonsets"}:   "DaemonSetList",
		{Version: "v1", Resource: "configmaps"}:                  "ConfigMapList",
	}, objs...)
	var mu sync.Mutex
	rv := 100
	nextRV := func() string { rv++; return strconv.Itoa(rv) }
	get := func(gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
		obj, err := dyn.Tracker().Get(gvr, ns, name)
		if err != nil {
			return nil, err
		}
		return obj.(*unstructured.Unstructured).DeepCopy(), nil
	}
	stamp := func(u *unstructured.Unstructured) {
		now := metav1.Now()
		u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: kube.FieldManager, Operation: metav1.ManagedFieldsOperationApply, Time: &now}})
		u.SetResourceVersion(nextRV())
	}
	dyn.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p, ok := a.(k8stesting.PatchActionImpl)
		if !ok || p.GetSubresource() != "" {
			return false, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		gvr, ns, name := p.GetResource(), p.GetNamespace(), p.GetName()
		var applied map[string]any
		if err := utiljson.Unmarshal(p.GetPatch(), &applied); err != nil {
			return true, nil, apierrors.NewBadRequest(err.Error())
		}
		dryRun := len(p.PatchOptions.DryRun) > 0
		cur, err := get(gvr, ns, name)
		if apierrors.IsNotFound(err) && p.GetPatchType() == types.ApplyPatchType {
			u := &unstructured.Unstructured{Object: applied}
			u.SetUID(types.UID("uid-" + name))
			u.SetGeneration(1)
			stamp(u)
			if dryRun {
				return true, u, nil
			}
			return true, u, dyn.Tracker().Create(gvr, u, ns)
		} else if err != nil {
			return true, nil, err
		}
		merged := cur.DeepCopy()
		merge(merged.Object, applied)
		if reflect.DeepEqual(merged.Object, cur.Object) {
			return true, cur, nil
		}
		merged.SetGeneration(cur.GetGeneration() + 1)
		stamp(merged)
		if dryRun {
			return true, merged, nil
		}
		return true, merged, dyn.Tracker().Update(gvr, merged, ns)
	})
	dyn.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		u := a.(k8stesting.UpdateActionImpl)
		sc := u.GetObject().(*unstructured.Unstructured)
		if len(u.UpdateOptions.DryRun) > 0 {
			return true, sc, nil
		}
		mu.Lock()
		defer mu.Unlock()
		cur, err := get(u.GetResource(), sc.GetNamespace(), sc.GetName())
		if err != nil {
			return true, nil, err
		}
		n, _, _ := unstructured.NestedInt64(sc.Object, "spec", "replicas")
		if err := unstructured.SetNestedField(cur.Object, n, "spec", "replicas"); err != nil {
			return true, nil, err
		}
		cur.SetResourceVersion(nextRV())
		return true, sc, dyn.Tracker().Update(u.GetResource(), cur, sc.GetNamespace())
	})
	return dyn
}

// merge copies src into dst, recursing into objects both have; a null
// removes the field, as in a merge patch.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// testMapper maps the kinds of newFakeDynamic without discovery.
type testMapper struct{ meta.RESTMapperWithContext }

func (testMapper) Reset() {}

func (testMapper) ResetWithContext(context.Context) {}

func newTestMapper() testMapper {
	dm := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "apps", Version: "v1"}})
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "ConfigMap"},
		{Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "apps", Version: "v1", Kind: "StatefulSet"},
		{Group: "apps", Version: "v1", Kind: "DaemonSet"},
	} {
		dm.Add(gvk, meta.RESTScopeNamespace)
	}
	return testMapper{meta.ToRESTMapperWithContext(dm)}
}

// fakeConnector connects every target to one dynamic fake and counts
// connects.
func fakeConnector(dyn *dynamicfake.FakeDynamicClient, connects *int) Connector {
	var mu sync.Mutex
	return func(context.Context, auth.Target) (*Conn, error) {
		mu.Lock()
		*connects++
		mu.Unlock()
		return &Conn{Client: kube.New(dyn, newTestMapper())}, nil
	}
}
