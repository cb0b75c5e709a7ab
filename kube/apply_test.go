package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/lambda-eks/lambda-eks/internal/kubefake"
)

func mustManifest(tb testing.TB, docs ...string) Manifest {
	tb.Helper()
	m, err := DecodeManifest([]byte(strings.Join(docs, "\n---\n")), MaxDocuments)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func configMap(name string, data string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {" + data + "}\n"
}

// TestApplyResults walks one object through what happens to objects in a
// cluster and checks each result and the requests it cost.
func TestApplyResults(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	c := srv.client(t)
	ctx := context.Background()
	red := mustManifest(t, configMap("a", "color: red"))
	setColor := func(color string) func(*unstructured.Unstructured) {
		return func(u *unstructured.Unstructured) { _ = unstructured.SetNestedField(u.Object, color, "data", "color") }
	}
	steps := []struct {
		name      string
		c         *Client
		m         Manifest
		before    func(*unstructured.Unstructured) // another writer, before the apply
		dryRun    bool
		want      Result
		wantVerbs []string
	}{
		{"first sight reads, then creates", c, red, nil, false, Created, []string{"get", "patch"}},
		{"warm re-apply within seconds is preconditioned", c, red, nil, false, Unchanged, []string{"patch"}},
		{"warm re-apply later is one request", c, red, nil, false, Unchanged, []string{"patch"}},
		{"someone edits an owned field, a forced apply restores it", c, red, setColor("blue"), false, Configured, []string{"patch"}},
		{"a controller writes status", c, red, func(u *unstructured.Unstructured) { u.Object["status"] = map[string]any{"seen": true} },
			false, Unchanged, []string{"patch"}},
		{"another manager adds its own field", c, red, func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "x", "data", "theirs")
		}, false, Unchanged, []string{"patch"}},
		{"the manifest adds a field", c, mustManifest(t, configMap("a", "color: red, size: big")), nil, false, Configured, []string{"patch"}},
		{"an edit right after lambda-eks's own change: precondition, read, apply", c, mustManifest(t, configMap("a", "color: red, size: big")),
			setColor("pink"), false, Configured, []string{"patch", "get", "patch"}},
		{"a dry run reads what is there now", c, red, setColor("green"), true, Configured, []string{"get", "patch(dry)"}},
		{"a new process reads first", srv.client(t), mustManifest(t, configMap("a", "color: red, size: big")), nil, false, Configured,
			[]string{"get", "patch"}},
		{"deleted and made again by someone else", c, red, func(u *unstructured.Unstructured) {
			u.SetUID("someone-else")
		}, false, Created, []string{"patch"}},
	}
	for _, s := range steps {
		srv.clock.Advance(10 * time.Second)
		if strings.Contains(s.name, "within seconds") || strings.Contains(s.name, "right after") {
			srv.clock.Advance(-9 * time.Second)
		}
		if s.before != nil {
			if err := srv.Edit(configMaps, "team", "a", s.before); err != nil {
				t.Fatal(err)
			}
		}
		srv.ClearRequests()
		got, err := s.c.Apply(ctx, s.m, ApplyOptions{Namespace: "team", Force: true, DryRun: s.dryRun})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got[0].Result != s.want {
			t.Errorf("%s: %s, want %s", s.name, got[0].Result, s.want)
		}
		if diff := cmp.Diff(s.wantVerbs, srv.verbs()); diff != "" {
			t.Errorf("%s: requests (-want +got):\n%s", s.name, diff)
		}
	}
	cur, err := srv.Get(configMaps, "team", "a")
	if err != nil {
		t.Fatal(err)
	}
	if color, _, _ := unstructured.NestedString(cur.Object, "data", "color"); color != "red" {
		t.Errorf("color %q after the last apply, want red", color)
	}
}

func TestResultOf(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	was := state{exists: true, uid: "u1", resourceVersion: "7", applied: t0}
	tests := []struct {
		name      string
		before    state
		after     state
		dryRun    bool
		exclusive bool
		want      Result
	}{
		{"absent before", state{}, state{exists: true, uid: "u1", resourceVersion: "1"}, false, false, Created},
		{"another uid", was, state{exists: true, uid: "u2", resourceVersion: "9"}, false, false, Created},
		{"same resourceVersion", was, state{exists: true, uid: "u1", resourceVersion: "7", applied: t0}, false, false, Unchanged},
		{"others wrote, lambda-eks's time still", was, state{exists: true, uid: "u1", resourceVersion: "9", applied: t0}, false, false, Unchanged},
		{"lambda-eks's time moved", was, state{exists: true, uid: "u1", resourceVersion: "9", applied: t0.Add(time.Minute)}, false, false, Configured},
		{"exclusive and written", state{exists: true, uid: "u1", resourceVersion: "7", applied: t0, content: "a"},
			state{exists: true, uid: "u1", resourceVersion: "8", applied: t0, content: "b"}, false, true, Configured},
		{"exclusive, bookkeeping only (managed fields moved)", state{exists: true, uid: "u1", resourceVersion: "7", applied: t0, content: "a"},
			state{exists: true, uid: "u1", resourceVersion: "8", applied: t0, content: "a"}, false, true, Unchanged},
		{"dry run: content differs", state{exists: true, uid: "u1", resourceVersion: "7", content: "a"},
			state{exists: true, uid: "u1", resourceVersion: "7", content: "b"}, true, false, Configured},
		{"dry run: nothing would change", state{exists: true, uid: "u1", resourceVersion: "7", content: "a", applied: t0},
			state{exists: true, uid: "u1", resourceVersion: "7", content: "a", applied: t0}, true, false, Unchanged},
		{"dry run: a controller wrote since the read, nothing would change", state{exists: true, uid: "u1", resourceVersion: "7", content: "a", applied: t0},
			state{exists: true, uid: "u1", resourceVersion: "8", content: "b", applied: t0}, true, false, Unchanged},
		{"dry run: a controller wrote since the read, the apply would change it", state{exists: true, uid: "u1", resourceVersion: "7", content: "a", applied: t0},
			state{exists: true, uid: "u1", resourceVersion: "8", content: "b", applied: t0.Add(time.Minute)}, true, false, Configured},
	}
	for _, tt := range tests {
		if got := resultOf(tt.before, tt.after, tt.dryRun, tt.exclusive); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestApplyChecksBeforeWriting: one document the server refuses means no
// write at all; an unchanged warm re-apply skips the dry run.
func TestApplyChecksBeforeWriting(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	c := srv.client(t)
	ctx := context.Background()
	srv.React(func(r kubefake.Request) error {
		if r.Verb == "patch" && r.Resource == configMaps && r.Name == "bad" {
			return apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "bad",
				field.ErrorList{field.Invalid(field.NewPath("data", "k"), 1, "must be a string")})
		}
		return nil
	})
	good := []string{configMap("a", "k: v"), configMap("b", "k: v")}
	_, err := c.Apply(ctx, mustManifest(t, append(good, configMap("bad", "k: v"))...), ApplyOptions{Namespace: "team"})
	var me *ManifestError
	if !errors.As(err, &me) || me.Index != 3 || !strings.Contains(me.Error(), "must be a string") {
		t.Fatalf("err = %v, want a *ManifestError for document 3 quoting the server", err)
	}
	if slices.Contains(srv.verbs(), "patch") {
		t.Errorf("requests %v: a refused manifest must write nothing", srv.verbs())
	}

	if _, err := c.Apply(ctx, mustManifest(t, good...), ApplyOptions{Namespace: "team"}); err != nil {
		t.Fatal(err)
	}
	srv.clock.Advance(10 * time.Second)
	srv.ClearRequests()
	if _, err := c.Apply(ctx, mustManifest(t, good...), ApplyOptions{Namespace: "team"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"patch", "patch"}, srv.verbs()); diff != "" {
		t.Errorf("warm unchanged re-apply requests (-want +got):\n%s", diff)
	}
}

// TestApplyErrorNamesWhatWasWritten: a failure after writes says which.
func TestApplyErrorNamesWhatWasWritten(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	srv.React(func(r kubefake.Request) error {
		if r.Verb == "patch" && r.Resource == configMaps && !r.DryRun {
			return apierrors.NewForbidden(configMaps.GroupResource(), "a", errors.New("quota"))
		}
		return nil
	})
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
	_, err := srv.client(t).Apply(context.Background(), mustManifest(t, ns, configMap("a", "k: v")), ApplyOptions{Namespace: "team"})
	var ae *ApplyError
	if !errors.As(err, &ae) || len(ae.Written) != 1 || ae.Written[0].Kind != "Namespace" || !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want an *ApplyError naming the Namespace, wrapping the 403", err)
	}
}

func TestApplyOwner(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	if _, err := srv.client(t).Apply(context.Background(), mustManifest(t, configMap("a", "k: v")), ApplyOptions{Namespace: "team", Owner: "stack/A"}); err != nil {
		t.Fatal(err)
	}
	cur, err := srv.Get(configMaps, "team", "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := cur.GetAnnotations()[OwnerAnnotation]; got != "stack/A" {
		t.Errorf("owner annotation %q, want stack/A", got)
	}
}

func deployment(name string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: default}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec: {containers: [{name: nginx, image: "nginx:1.27"}]}
`, name, replicas)
}

// TestApplyWorkload: an apply of an apps/v1 workload (ensure-nginx's) never
// reads discovery, and a warm one is one request.
func TestApplyWorkload(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	c := srv.client(t)
	cold := srv.client(t)
	ctx := context.Background()
	discovery := 0
	steps := []struct {
		name      string
		c         *Client
		replicas  int
		want      Result
		wantVerbs []string
	}{
		{"first call reads and creates", c, 2, Created, []string{"get", "patch"}},
		{"same again is one request, unchanged", c, 2, Unchanged, []string{"patch"}},
		{"other replicas configure", c, 3, Configured, []string{"patch"}},
		{"a new process (cold) sees the change", cold, 2, Configured, []string{"get", "patch"}},
	}
	for _, s := range steps {
		srv.clock.Advance(10 * time.Second)
		srv.ClearRequests()
		res, err := s.c.Apply(ctx, mustManifest(t, deployment("nginx", s.replicas)), ApplyOptions{Force: true})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want := []ObjectResult{{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "default", Name: "nginx", Result: s.want}}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
		if diff := cmp.Diff(s.wantVerbs, srv.verbs()); diff != "" {
			t.Errorf("%s: requests (-want +got):\n%s", s.name, diff)
		}
		discovery += srv.discoveryReads()
	}
	if discovery != 0 {
		t.Errorf("%d discovery requests, want none: an apps/v1 workload's mapping is fixed", discovery)
	}
	if n := len(srv.List(deployments, "default")); n != 1 {
		t.Errorf("%d deployments, want exactly 1: an apply must never create another", n)
	}
}

func TestDoRetriesOnceAfter401(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		errs    []error
		wantErr func(error) bool
		calls   int
	}{
		{"one 401 is retried with a new token", []error{apierrors.NewUnauthorized("expired"), nil}, nil, 2},
		{"a second 401 is returned", []error{apierrors.NewUnauthorized("a"), apierrors.NewUnauthorized("b")}, apierrors.IsUnauthorized, 2},
		{"a 503 is client-go's to retry, not ours", []error{apierrors.NewServiceUnavailable("down")}, apierrors.IsServiceUnavailable, 1},
		{"a 403 is returned at once", []error{apierrors.NewForbidden(configMaps.GroupResource(), "a", errors.New("no"))}, apierrors.IsForbidden, 1},
	}
	for _, tt := range tests {
		calls := 0
		err := do(context.Background(), OpError{Verb: "patch", Resource: "configmaps", Namespace: "team", Name: "a"}, func(context.Context) error {
			calls++
			return tt.errs[calls-1]
		})
		if calls != tt.calls {
			t.Errorf("%s: %d calls, want %d", tt.name, calls, tt.calls)
		}
		var op *OpError
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("%s: err = %v, want success", tt.name, err)
		case tt.wantErr != nil && (!errors.As(err, &op) || !tt.wantErr(err) || op.Verb != "patch"):
			t.Errorf("%s: err = %v, want an *OpError of the right kind", tt.name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := do(ctx, OpError{}, func(context.Context) error { t.Error("called after cancel"); return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// countingTokens mints a new token on every call, as the auth package's
// source does when client-go's cache asks.
type countingTokens struct{ n atomic.Int32 }

func (c *countingTokens) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: fmt.Sprintf("token-%d", c.n.Add(1)), Expiry: time.Now().Add(time.Hour)}, nil
}

// TestUnauthorizedRetriedWithAFreshToken: through client-go's real
// transport, a 401 drops the cached token (one minted before the request),
// and the one retry carries a new one; a token refused twice is the 401.
func TestUnauthorizedRetriedWithAFreshToken(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	var refusals atomic.Int32
	srv.React(func(r kubefake.Request) error {
		if r.IsDiscovery() || refusals.Load() == 0 {
			return nil
		}
		refusals.Add(-1)
		return apierrors.NewUnauthorized("Unauthorized")
	})
	tokens := &countingTokens{}
	c := srv.clientWithToken(t, tokens)
	ctx := context.Background()
	if _, err := c.Apply(ctx, mustManifest(t, deployment("web", 1)), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	bearers := func() []string {
		var out []string
		for _, r := range srv.Requests() {
			out = append(out, r.Verb+" "+r.Header.Get("Authorization"))
		}
		srv.ClearRequests()
		return out
	}
	if diff := cmp.Diff([]string{"get Bearer token-1", "patch Bearer token-1"}, bearers()); diff != "" {
		t.Errorf("apply's requests (-want +got):\n%s", diff)
	}

	refusals.Store(1)
	if _, err := c.Get(ctx, "apps/v1", "Deployment", "default", "web"); err != nil {
		t.Fatalf("one 401: %v, want the retry with a fresh token to succeed", err)
	}
	if diff := cmp.Diff([]string{"get Bearer token-1", "get Bearer token-2"}, bearers()); diff != "" {
		t.Errorf("requests after a 401 (-want +got):\n%s", diff)
	}

	refusals.Store(2)
	_, err := c.Get(ctx, "apps/v1", "Deployment", "default", "web")
	var op *OpError
	if !apierrors.IsUnauthorized(err) || !errors.As(err, &op) || op.Verb != "get" {
		t.Errorf("a token refused twice: err = %v, want the 401 in an *OpError", err)
	}
	if diff := cmp.Diff([]string{"get Bearer token-2", "get Bearer token-3"}, bearers()); diff != "" {
		t.Errorf("requests after two 401s (-want +got):\n%s", diff)
	}
}

func TestOnlyOwnConflicts(t *testing.T) {
	t.Parallel()
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

func TestObjectMemoryIsBounded(t *testing.T) {
	t.Parallel()
	m := newObjectMemory(2)
	for _, n := range []string{"a", "b", "c"} {
		m.put(objectKey{resource: "configmaps", name: n}, state{exists: true})
	}
	if _, ok := m.get(objectKey{resource: "configmaps", name: "a"}); ok {
		t.Error("the least recently used object is still remembered past the bound")
	}
	if _, ok := m.get(objectKey{resource: "configmaps", name: "c"}); !ok {
		t.Error("the newest object is forgotten")
	}
}

// TestApplyBusyObject: a controller that writes between every read and
// apply (status after a change) cannot make a change read as unchanged.
func TestApplyBusyObject(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	c := srv.client(t)
	ctx := context.Background()
	force := ApplyOptions{Force: true}
	if _, err := c.Apply(ctx, mustManifest(t, deployment("web", 2)), force); err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	srv.React(func(r kubefake.Request) error {
		if r.Verb != "patch" || r.Resource != deployments {
			return nil
		}
		n := writes.Add(1)
		return srv.Edit(deployments, "default", "web", func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"observedGeneration": n}
		})
	})
	srv.ClearRequests()
	// Within the same second as the create:
	res, err := c.Apply(ctx, mustManifest(t, deployment("web", 3)), force)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Result != Configured {
		t.Errorf("result %s, want configured", res[0].Result)
	}
	want := []string{"patch", "get", "patch", "get", "patch", "get", "patch", "get", "patch"}
	if diff := cmp.Diff(want, srv.verbs()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestApplyCRDAndItsResources: a manifest's CRD is applied first and waited
// for until Established; its custom resources, answered 404 while the API
// server installs their handler, are applied once it serves them.
func TestApplyCRDAndItsResources(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	widgets := schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
	var notYet atomic.Int32
	notYet.Store(2)
	srv.React(func(r kubefake.Request) error {
		if r.Verb == "patch" && r.Resource == widgets && notYet.Load() > 0 {
			notYet.Add(-1)
			return apierrors.NewNotFound(widgets.GroupResource(), r.Name)
		}
		return nil
	})
	start := srv.clock.Now()
	m := mustManifest(t, crdDoc, "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n")
	got, err := srv.client(t).Apply(context.Background(), m, ApplyOptions{Namespace: "team"})
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, r := range got {
		results = append(results, r.Kind+" "+r.Name+" "+string(r.Result))
	}
	if diff := cmp.Diff([]string{"CustomResourceDefinition widgets.example.com created", "Widget w created"}, results); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if _, err := srv.Get(widgets, "team", "w"); err != nil {
		t.Errorf("the Widget is not stored: %v", err)
	}
	if waited := srv.clock.Now().Sub(start); waited != 2*crdPollInterval {
		t.Errorf("waited %s for the Widget's two 404s, want two poll intervals", waited)
	}
}
