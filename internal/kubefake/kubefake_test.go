package kubefake_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/lambda-eks/lambda-eks/internal/kubefake"
)

var (
	configMaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	widgets     = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
)

func obj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns}}}
	for k, v := range fields {
		u.Object[k] = v
	}
	return u
}

func dynamicClient(tb testing.TB, srv *kubefake.Server) dynamic.Interface {
	tb.Helper()
	dyn, err := dynamic.NewForConfig(srv.RESTConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return dyn
}

// TestApply: server-side apply creates, writes only a change (new
// resourceVersion, the manager's time), honours a resourceVersion
// precondition and keeps nothing of a dry run.
func TestApply(t *testing.T) {
	t.Parallel()
	clock := kubefake.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	srv := kubefake.New(t, kubefake.WithClock(clock.Now))
	cms := dynamicClient(t, srv).Resource(configMaps).Namespace("team")
	ctx := context.Background()
	apply := func(data map[string]any, opts metav1.ApplyOptions) (*unstructured.Unstructured, error) {
		opts.FieldManager = "test"
		return cms.Apply(ctx, "a", obj("v1", "ConfigMap", "team", "a", map[string]any{"data": data}), opts)
	}

	created, err := apply(map[string]any{"k": "v"}, metav1.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	same, err := apply(map[string]any{"k": "v"}, metav1.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if same.GetResourceVersion() != created.GetResourceVersion() || !cmp.Equal(same.GetManagedFields(), created.GetManagedFields()) {
		t.Errorf("a no-op apply wrote: resourceVersion %s -> %s", created.GetResourceVersion(), same.GetResourceVersion())
	}
	dry, err := apply(map[string]any{"k": "dry"}, metav1.ApplyOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil || dry.Object["data"].(map[string]any)["k"] != "dry" {
		t.Fatalf("dry run: %v %v, want the merged object", dry, err)
	}
	if cur, _ := srv.Get(configMaps, "team", "a"); cur.Object["data"].(map[string]any)["k"] != "v" {
		t.Errorf("a dry run was stored: %v", cur.Object["data"])
	}
	changed, err := apply(map[string]any{"k": "w"}, metav1.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if changed.GetResourceVersion() == created.GetResourceVersion() {
		t.Error("a change kept the resourceVersion")
	}
	if mf := changed.GetManagedFields(); len(mf) != 1 || mf[0].Manager != "test" || !mf[0].Time.Time.Equal(clock.Now()) {
		t.Errorf("managed fields %+v, want the manager's Apply entry at the clock's time", mf)
	}
	stale := obj("v1", "ConfigMap", "team", "a", map[string]any{"data": map[string]any{"k": "x"}})
	stale.SetResourceVersion(created.GetResourceVersion())
	if _, err := cms.Apply(ctx, "a", stale, metav1.ApplyOptions{FieldManager: "test"}); !apierrors.IsConflict(err) {
		t.Errorf("apply on a stale resourceVersion: err = %v, want Conflict", err)
	}
}

// TestScaleDeleteList: the scale subresource sets spec.replicas, a
// selector lists what it matches, a delete honours its preconditions.
func TestScaleDeleteList(t *testing.T) {
	t.Parallel()
	web := obj("apps/v1", "Deployment", "team", "web", map[string]any{"spec": map[string]any{"replicas": 3}})
	web.SetLabels(map[string]string{"tier": "front"})
	srv := kubefake.New(t, kubefake.WithObjects(web, obj("apps/v1", "Deployment", "team", "db", nil)))
	deps := dynamicClient(t, srv).Resource(deployments).Namespace("team")
	ctx := context.Background()

	list, err := deps.List(ctx, metav1.ListOptions{LabelSelector: "tier=front"})
	if err != nil || len(list.Items) != 1 || list.Items[0].GetName() != "web" {
		t.Fatalf("list tier=front: %v %v, want web", list, err)
	}
	scale := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "autoscaling/v1", "kind": "Scale",
		"metadata": map[string]any{"name": "web", "namespace": "team"}, "spec": map[string]any{"replicas": int64(0)}}}
	if _, err := deps.Update(ctx, scale, metav1.UpdateOptions{FieldManager: "test"}, "scale"); err != nil {
		t.Fatal(err)
	}
	cur, err := srv.Get(deployments, "team", "web")
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := unstructured.NestedInt64(cur.Object, "spec", "replicas"); n != 0 {
		t.Errorf("replicas %d after scaling to 0", n)
	}
	wrong := types.UID("another")
	if err := deps.Delete(ctx, "web", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrong}}); !apierrors.IsConflict(err) {
		t.Errorf("delete with another uid: err = %v, want Conflict", err)
	}
	uid := cur.GetUID()
	if err := deps.Delete(ctx, "web", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Get(deployments, "team", "web"); !apierrors.IsNotFound(err) {
		t.Errorf("after delete: err = %v, want NotFound", err)
	}
}

// TestDiscoveryAndCRDs: client-go's discovery-backed REST mapper resolves
// the served kinds, and a CustomResourceDefinition's kinds from its
// creation to its deletion.
func TestDiscoveryAndCRDs(t *testing.T) {
	t.Parallel()
	srv := kubefake.New(t)
	cfg := srv.RESTConfig()
	disc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	mapping := func(gk schema.GroupKind) (string, error) {
		groups, err := restmapper.GetAPIGroupResources(disc)
		if err != nil {
			return "", err
		}
		m, err := restmapper.NewDiscoveryRESTMapper(groups).RESTMapping(gk)
		if err != nil {
			return "", err
		}
		return m.Resource.String() + " " + string(m.Scope.Name()), nil
	}
	if got, err := mapping(schema.GroupKind{Group: "apps", Kind: "Deployment"}); err != nil || got != "apps/v1, Resource=deployments namespace" {
		t.Errorf("Deployment: %q %v", got, err)
	}
	widget := schema.GroupKind{Group: "example.com", Kind: "Widget"}
	if _, err := mapping(widget); err == nil {
		t.Fatal("Widget resolved before its CRD exists")
	}
	crd := obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.example.com", map[string]any{"spec": map[string]any{
		"group": "example.com", "scope": "Namespaced", "names": map[string]any{"kind": "Widget", "plural": "widgets"},
		"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true}}}})
	dyn := dynamicClient(t, srv)
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	got, err := crds.Apply(context.Background(), crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions"); len(conds) == 0 {
		t.Error("the CRD is not Established")
	}
	if got, err := mapping(widget); err != nil || got != "example.com/v1, Resource=widgets namespace" {
		t.Errorf("Widget after its CRD: %q %v", got, err)
	}
	if _, err := dyn.Resource(widgets).Namespace("team").Apply(context.Background(), "w", obj("example.com/v1", "Widget", "team", "w", nil),
		metav1.ApplyOptions{FieldManager: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := crds.Delete(context.Background(), crd.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := mapping(widget); err == nil {
		t.Error("Widget still resolves after its CRD was deleted")
	}
	if n := len(srv.List(widgets, "")); n != 0 {
		t.Errorf("%d widgets left after their CRD was deleted", n)
	}
}

// TestReactAndRequests: a reactor's error answers a request as the API
// server would, a dropped connection is a transport error, and every
// request is recorded with what the tests compare.
func TestReactAndRequests(t *testing.T) {
	t.Parallel()
	srv := kubefake.New(t, kubefake.WithObjects(obj("v1", "ConfigMap", "team", "a", nil)))
	srv.React(func(r kubefake.Request) error {
		switch r.Name {
		case "forbidden":
			return apierrors.NewForbidden(configMaps.GroupResource(), r.Name, errors.New("no"))
		case "dropped":
			return kubefake.ErrDropConnection
		}
		return nil
	})
	cms := dynamicClient(t, srv).Resource(configMaps).Namespace("team")
	ctx := context.Background()
	if _, err := cms.Apply(ctx, "forbidden", obj("v1", "ConfigMap", "team", "forbidden", nil), metav1.ApplyOptions{FieldManager: "m"}); !apierrors.IsForbidden(err) {
		t.Errorf("err = %v, want Forbidden", err)
	}
	var status apierrors.APIStatus
	if err := cms.Delete(ctx, "dropped", metav1.DeleteOptions{}); err == nil || errors.As(err, &status) {
		t.Errorf("dropped connection: err = %v, want a transport error", err)
	}
	if err := cms.Delete(ctx, "a", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range srv.Requests() {
		got = append(got, r.String())
	}
	want := []string{"patch configmaps team/forbidden", "delete configmaps team/dropped", "delete(dry) configmaps team/a"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if _, err := srv.Get(configMaps, "team", "a"); err != nil {
		t.Errorf("after a dry-run delete: %v", err)
	}
}

// TestFailTransport: a refused connect fails the request in the client's
// transport, once (client-go does not retry it), and the server sees
// nothing of it.
func TestFailTransport(t *testing.T) {
	t.Parallel()
	srv := kubefake.New(t, kubefake.WithObjects(obj("v1", "ConfigMap", "team", "a", nil)))
	var attempts atomic.Int32
	srv.FailTransport(func(r kubefake.Request) error {
		if r.Resource != configMaps {
			return nil
		}
		attempts.Add(1)
		return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	})
	cms := dynamicClient(t, srv).Resource(configMaps).Namespace("team")
	_, err := cms.Get(context.Background(), "a", metav1.GetOptions{})
	var uerr *url.Error
	if !errors.As(err, &uerr) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %v (%T), want a *url.Error around ECONNREFUSED", err, err)
	}
	if n := attempts.Load(); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
	if got := srv.Requests(); len(got) != 0 {
		t.Errorf("the server saw %v", got)
	}
	srv.FailTransport(nil)
	if _, err := cms.Get(context.Background(), "a", metav1.GetOptions{}); err != nil {
		t.Errorf("after the faults stop: %v", err)
	}
}
