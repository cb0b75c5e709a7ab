package kube

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/internal/kubefake"
)

const configMapDoc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\ndata: {k: v}\n"

// TestDiscoveryUnauthorized: a 401 while reading discovery is
// apierrors.IsUnauthorized in an *OpError (so the function drops the
// connection, as for any 401), and the refused token is not used again.
func TestDiscoveryUnauthorized(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/api", "/apis", "/api/v1"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			srv := newFakeCluster(t)
			var refuse atomic.Bool
			refuse.Store(true)
			srv.React(func(r kubefake.Request) error {
				if r.Path == path && refuse.Load() {
					return apierrors.NewUnauthorized("Unauthorized")
				}
				return nil
			})
			c := srv.clientWithToken(t, &countingTokens{})
			ctx := context.Background()
			_, err := c.Apply(ctx, mustManifest(t, configMapDoc), ApplyOptions{})
			var op *OpError
			if !apierrors.IsUnauthorized(err) || !errors.As(err, &op) {
				t.Fatalf("err = %v (%T), want a 401 in an *OpError", err, err)
			}
			refuse.Store(false)
			srv.ClearRequests()
			if _, err := c.Apply(ctx, mustManifest(t, configMapDoc), ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, r := range srv.Requests() {
				if got := r.Header.Get("Authorization"); got == "Bearer token-1" {
					t.Errorf("%s after the 401 carries the refused token", r)
				}
			}
		})
	}
}

// TestDiscoveryReadOnceUntilReset: discovery is read on first use and kept
// for the life of the client; an unknown kind resets it once.
func TestDiscoveryReadOnceUntilReset(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	c := srv.client(t)
	ctx := context.Background()
	for range 2 {
		if _, err := c.Apply(ctx, mustManifest(t, configMapDoc), ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	first := srv.discoveryReads()
	if first == 0 {
		t.Fatal("no discovery read for a ConfigMap")
	}
	srv.ClearRequests()
	if _, err := c.Apply(ctx, mustManifest(t, configMapDoc), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := srv.discoveryReads(); n != 0 {
		t.Errorf("%d discovery reads by a warm client, want 0", n)
	}
	_, err := c.Apply(ctx, mustManifest(t, "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g, namespace: default}\n"), ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "Gadget") {
		t.Errorf("an unknown kind: %v", err)
	}
	if n := srv.discoveryReads(); n != first {
		t.Errorf("%d discovery reads after an unknown kind, want %d (one reset)", n, first)
	}
}

// TestDiscoveryGroupVersionDown: a group version whose discovery fails (an
// aggregated API that is down) is left out, as client-go's mapper does;
// the others still map.
func TestDiscoveryGroupVersionDown(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	srv.React(func(r kubefake.Request) error {
		if r.Path == "/apis/rbac.authorization.k8s.io/v1" {
			return apierrors.NewServiceUnavailable("metrics-server is down")
		}
		return nil
	})
	if _, err := srv.client(t).Apply(context.Background(), mustManifest(t, configMapDoc), ApplyOptions{}); err != nil {
		t.Fatalf("a ConfigMap with rbac's discovery down: %v", err)
	}
}

// TestAggregatedDiscovery: the mapper built from aggregated discovery
// (apidiscovery.k8s.io/v2) prefers each group's first version, skips stale
// versions, subresources and resources without a kind, and resolves
// singular and lowercase names as client-go's does.
func TestAggregatedDiscovery(t *testing.T) {
	t.Parallel()
	const apis = `{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","items":[
	 {"metadata":{"name":"apps"},"versions":[{"version":"v1","resources":[
	   {"resource":"deployments","responseKind":{"group":"","version":"","kind":"Deployment"},"scope":"Namespaced","singularResource":"deployment",
	    "subresources":[{"subresource":"scale","responseKind":{"kind":"Scale"}}]}]}]},
	 {"metadata":{"name":"example.com"},"versions":[
	   {"version":"v2","resources":[{"resource":"widgets","responseKind":{"kind":"Widget"},"scope":"Cluster","singularResource":"widget"}]},
	   {"version":"v1","resources":[{"resource":"widgets","responseKind":{"kind":"Widget"},"scope":"Cluster","singularResource":"widget"},
	     {"resource":"gadgets","responseKind":{"kind":"Gadget"},"scope":"Namespaced","singularResource":""},
	     {"resource":"kindless","scope":"Namespaced"}]},
	   {"version":"v3","freshness":"Stale","resources":[{"resource":"widgets","responseKind":{"kind":"Widget"},"scope":"Cluster"}]}]}]}`
	const core = `{"kind":"APIGroupDiscoveryList","items":[{"metadata":{},"versions":[{"version":"v1","resources":[
	   {"resource":"configmaps","responseKind":{"kind":"ConfigMap"},"scope":"Namespaced","singularResource":"configmap"}]}]}]}`
	var c, a apidiscoveryv2.APIGroupDiscoveryList
	for _, x := range []struct {
		s string
		v *apidiscoveryv2.APIGroupDiscoveryList
	}{{core, &c}, {apis, &a}} {
		if err := json.Unmarshal([]byte(x.s), x.v); err != nil {
			t.Fatal(err)
		}
	}
	m := newRESTMapper(append(aggregatedGroups(c.Items), aggregatedGroups(a.Items)...))
	ctx := context.Background()
	for _, tt := range []struct {
		gk       schema.GroupKind
		versions []string
		want     schema.GroupVersionResource
		scope    meta.RESTScopeName
	}{
		{schema.GroupKind{Kind: "ConfigMap"}, nil, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, meta.RESTScopeNameNamespace},
		{schema.GroupKind{Group: "apps", Kind: "Deployment"}, nil, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, meta.RESTScopeNameNamespace},
		{schema.GroupKind{Group: "example.com", Kind: "Widget"}, nil, schema.GroupVersionResource{Group: "example.com", Version: "v2", Resource: "widgets"}, meta.RESTScopeNameRoot},
		{schema.GroupKind{Group: "example.com", Kind: "Widget"}, []string{"v1"}, schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}, meta.RESTScopeNameRoot},
		{schema.GroupKind{Group: "example.com", Kind: "Gadget"}, nil, schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "gadgets"}, meta.RESTScopeNameNamespace},
	} {
		mp, err := m.RESTMappingWithContext(ctx, tt.gk, tt.versions...)
		if err != nil {
			t.Errorf("%v %v: %v", tt.gk, tt.versions, err)
			continue
		}
		if diff := cmp.Diff(tt.want, mp.Resource); diff != "" || mp.Scope.Name() != tt.scope {
			t.Errorf("%v %v: scope %s (-want +got):\n%s", tt.gk, tt.versions, mp.Scope.Name(), diff)
		}
	}
	for _, gk := range []schema.GroupKind{{Group: "example.com", Kind: "Kindless"}, {Group: "apps", Kind: "Scale"}} {
		if _, err := m.RESTMappingWithContext(ctx, gk); !meta.IsNoMatchError(err) {
			t.Errorf("%v: err = %v, want no match", gk, err)
		}
	}
	if _, err := m.RESTMappingWithContext(ctx, schema.GroupKind{Group: "example.com", Kind: "Widget"}, "v3"); !meta.IsNoMatchError(err) {
		t.Errorf("a stale version: err = %v, want no match", err)
	}
	for res, want := range map[string]schema.GroupVersionKind{
		"deployment": {Group: "apps", Version: "v1", Kind: "Deployment"},
		"widget":     {Group: "example.com", Version: "v2", Kind: "Widget"},
		"gadget":     {Group: "example.com", Version: "v1", Kind: "Gadget"},
	} {
		got, err := m.KindForWithContext(ctx, schema.GroupVersionResource{Resource: res})
		if err != nil || got != want {
			t.Errorf("KindFor(%s) = %v, %v; want %v", res, got, err, want)
		}
	}
}
