package kube

import (
	"testing"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/internal/kubefake"
)

var (
	configMaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// fakeCluster is a fake API server and the clock it shares with its
// clients: waits, backoffs and "ten seconds later" move the clock, not
// real time.
type fakeCluster struct {
	*kubefake.Server
	clock *kubefake.Clock
}

func newFakeCluster(tb testing.TB, objs ...*unstructured.Unstructured) *fakeCluster {
	tb.Helper()
	clock := kubefake.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	return &fakeCluster{Server: kubefake.New(tb, kubefake.WithClock(clock.Now), kubefake.WithObjects(objs...)), clock: clock}
}

// client is the Client a new process would build for the cluster, through
// NewRESTConfig and NewForConfig: its own connections, discovery cache and
// memory of objects, on the cluster's clock.
func (f *fakeCluster) client(tb testing.TB) *Client {
	tb.Helper()
	return f.clientWithToken(tb, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "test-token"}))
}

func (f *fakeCluster) clientWithToken(tb testing.TB, ts oauth2.TokenSource) *Client {
	tb.Helper()
	cfg, err := NewRESTConfig(f.URL(), f.CAData(), ts)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := NewForConfig(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c.now, c.sleep = f.clock.Now, f.clock.Sleep
	return c
}

// verbs lists the requests for objects since the last ClearRequests, dry
// runs marked ("patch(dry)"); discovery is left out.
func (f *fakeCluster) verbs() []string {
	var out []string
	for _, r := range f.Requests() {
		if r.IsDiscovery() {
			continue
		}
		v := r.Verb
		if r.DryRun {
			v += "(dry)"
		}
		out = append(out, v)
	}
	return out
}

// discoveryReads counts the requests for discovery since the last
// ClearRequests.
func (f *fakeCluster) discoveryReads() int {
	n := 0
	for _, r := range f.Requests() {
		if r.IsDiscovery() {
			n++
		}
	}
	return n
}

func unstructuredObj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns, "generation": int64(1)}}}
	for k, v := range fields {
		u.Object[k] = v
	}
	return u
}
