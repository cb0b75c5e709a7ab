package kube

import (
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeServer makes the dynamic fake answer as an API server does where
// lambda-eks's results depend on it: server-side apply merges the applied
// object into the stored one, writes (new resourceVersion, lambda-eks's
// managed-fields time) only when that changes something, honours a
// resourceVersion precondition and dry runs; the scale subresource sets
// spec.replicas. Others write through edit.
type fakeServer struct {
	*dynamicfake.FakeDynamicClient
	mu  sync.Mutex
	now time.Time
	rv  int
	uid int
}

func newFakeServer(objs ...runtime.Object) *fakeServer {
	s := &fakeServer{FakeDynamicClient: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{
			{Group: "apps", Version: "v1", Resource: "deployments"}:  "DeploymentList",
			{Group: "apps", Version: "v1", Resource: "statefulsets"}: "StatefulSetList",
			{Version: "v1", Resource: "configmaps"}:                  "ConfigMapList",
		}, objs...),
		now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), rv: 100}
	s.PrependReactor("patch", "*", s.apply)
	s.PrependReactor("update", "*", s.scale)
	return s
}

// clock is the time the fake server and the client share; tick moves it.
func (s *fakeServer) clock() time.Time { s.mu.Lock(); defer s.mu.Unlock(); return s.now }

func (s *fakeServer) tick(d time.Duration) { s.mu.Lock(); defer s.mu.Unlock(); s.now = s.now.Add(d) }

func (s *fakeServer) client() *Client {
	c := New(s, newTestMapper())
	c.now = s.clock
	return c
}

func (s *fakeServer) nextRV() string { s.rv++; return strconv.Itoa(s.rv) }

func (s *fakeServer) get(gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	obj, err := s.Tracker().Get(gvr, ns, name)
	if err != nil {
		return nil, err
	}
	return obj.(*unstructured.Unstructured).DeepCopy(), nil
}

// edit changes a stored object as another writer would.
func (s *fakeServer) edit(gvr schema.GroupVersionResource, ns, name string, fn func(u *unstructured.Unstructured)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.get(gvr, ns, name)
	if err != nil {
		return err
	}
	fn(u)
	u.SetResourceVersion(s.nextRV())
	return s.Tracker().Update(gvr, u, ns)
}

func (s *fakeServer) apply(a k8stesting.Action) (bool, runtime.Object, error) {
	p, ok := a.(k8stesting.PatchActionImpl)
	if !ok || p.GetPatchType() != types.ApplyPatchType {
		return false, nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	gvr, ns, name := p.GetResource(), p.GetNamespace(), p.GetName()
	var applied map[string]any
	if err := utiljson.Unmarshal(p.GetPatch(), &applied); err != nil {
		return true, nil, err
	}
	md := applied["metadata"].(map[string]any)
	precondition, _ := md["resourceVersion"].(string)
	delete(md, "resourceVersion")
	dryRun := len(p.PatchOptions.DryRun) > 0
	cur, err := s.get(gvr, ns, name)
	switch {
	case apierrors.IsNotFound(err):
		if precondition != "" {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), name, fmt.Errorf("the object has been deleted"))
		}
		u := &unstructured.Unstructured{Object: applied}
		s.uid++
		u.SetUID(types.UID(fmt.Sprintf("uid-%d", s.uid)))
		u.SetResourceVersion(s.nextRV())
		s.stamp(u)
		if dryRun {
			return true, u, nil
		}
		return true, u, s.Tracker().Create(gvr, u, ns)
	case err != nil:
		return true, nil, err
	}
	if precondition != "" && precondition != cur.GetResourceVersion() {
		return true, nil, apierrors.NewConflict(gvr.GroupResource(), name, fmt.Errorf("the object has been modified"))
	}
	merged := cur.DeepCopy()
	merge(merged.Object, applied)
	if reflect.DeepEqual(merged.Object, cur.Object) {
		return true, cur, nil // a no-op writes nothing
	}
	merged.SetResourceVersion(s.nextRV())
	if !reflect.DeepEqual(merged.Object["spec"], cur.Object["spec"]) {
		merged.SetGeneration(cur.GetGeneration() + 1)
	}
	s.stamp(merged)
	if dryRun {
		merged.SetResourceVersion(cur.GetResourceVersion())
		return true, merged, nil
	}
	return true, merged, s.Tracker().Update(gvr, merged, ns)
}

// stamp sets lambda-eks's Apply entry to now, as a changing apply does.
func (s *fakeServer) stamp(u *unstructured.Unstructured) {
	t := metav1.NewTime(s.now)
	u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationApply, Time: &t}})
}

func (s *fakeServer) scale(a k8stesting.Action) (bool, runtime.Object, error) {
	if a.GetSubresource() != "scale" {
		return false, nil, nil
	}
	u := a.(k8stesting.UpdateActionImpl)
	sc := u.GetObject().(*unstructured.Unstructured)
	if len(u.UpdateOptions.DryRun) > 0 {
		return true, sc, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.get(u.GetResource(), sc.GetNamespace(), sc.GetName())
	if err != nil {
		return true, nil, err
	}
	if rv := sc.GetResourceVersion(); rv != "" && rv != cur.GetResourceVersion() {
		return true, nil, apierrors.NewConflict(u.GetResource().GroupResource(), sc.GetName(), fmt.Errorf("modified"))
	}
	n, _, _ := unstructured.NestedInt64(sc.Object, "spec", "replicas")
	if err := unstructured.SetNestedField(cur.Object, n, "spec", "replicas"); err != nil {
		return true, nil, err
	}
	cur.SetResourceVersion(s.nextRV())
	return true, sc, s.Tracker().Update(u.GetResource(), cur, sc.GetNamespace())
}

// merge copies src into dst, recursing into objects both have.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

func unstructuredObj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns, "generation": int64(1)}}}
	for k, v := range fields {
		u.Object[k] = v
	}
	return u
}

// verbs lists the requests the fake has seen since the last ClearActions,
// dry runs marked.
func (s *fakeServer) verbs() []string {
	var out []string
	for _, a := range s.Actions() {
		v := a.GetVerb()
		if p, ok := a.(k8stesting.PatchActionImpl); ok && len(p.PatchOptions.DryRun) > 0 {
			v += "(dry)"
		}
		out = append(out, v)
	}
	return out
}
