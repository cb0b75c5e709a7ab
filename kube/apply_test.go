package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	k8stesting "k8s.io/client-go/testing"
)

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

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
	srv := newFakeServer()
	c := srv.client()
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
		{"a new process reads first", srv.client(), mustManifest(t, configMap("a", "color: red, size: big")), nil, false, Configured,
			[]string{"get", "patch"}},
		{"deleted and made again by someone else", c, red, func(u *unstructured.Unstructured) {
			u.SetUID("someone-else")
		}, false, Created, []string{"patch"}},
	}
	for _, s := range steps {
		srv.tick(10 * time.Second)
		if strings.Contains(s.name, "within seconds") || strings.Contains(s.name, "right after") {
			srv.tick(-9 * time.Second)
		}
		if s.before != nil {
			if err := srv.edit(configMaps, "team", "a", s.before); err != nil {
				t.Fatal(err)
			}
		}
		srv.ClearActions()
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
	cur, err := srv.get(configMaps, "team", "a")
	if err != nil {
		t.Fatal(err)
	}
	if color, _, _ := unstructured.NestedString(cur.Object, "data", "color"); color != "red" {
		t.Errorf("color %q after the last apply, want red", color)
	}
}

func TestResultOf(t *testing.T) {
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
	srv := newFakeServer()
	c := srv.client()
	ctx := context.Background()
	srv.PrependReactor("patch", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.PatchActionImpl).GetName() == "bad" {
			return true, nil, apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "bad",
				field.ErrorList{field.Invalid(field.NewPath("data", "k"), 1, "must be a string")})
		}
		return false, nil, nil
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
	srv.tick(10 * time.Second)
	srv.ClearActions()
	if _, err := c.Apply(ctx, mustManifest(t, good...), ApplyOptions{Namespace: "team"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"patch", "patch"}, srv.verbs()); diff != "" {
		t.Errorf("warm unchanged re-apply requests (-want +got):\n%s", diff)
	}
}

// TestApplyErrorNamesWhatWasWritten: a failure after writes says which.
func TestApplyErrorNamesWhatWasWritten(t *testing.T) {
	srv := newFakeServer()
	srv.PrependReactor("patch", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if len(a.(k8stesting.PatchActionImpl).PatchOptions.DryRun) == 0 {
			return true, nil, apierrors.NewForbidden(configMaps.GroupResource(), "a", errors.New("quota"))
		}
		return false, nil, nil
	})
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
	_, err := srv.client().Apply(context.Background(), mustManifest(t, ns, configMap("a", "k: v")), ApplyOptions{Namespace: "team"})
	var ae *ApplyError
	if !errors.As(err, &ae) || len(ae.Written) != 1 || ae.Written[0].Kind != "Namespace" || !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want an *ApplyError naming the Namespace, wrapping the 403", err)
	}
}

func TestApplyOwner(t *testing.T) {
	srv := newFakeServer()
	if _, err := srv.client().Apply(context.Background(), mustManifest(t, configMap("a", "k: v")), ApplyOptions{Namespace: "team", Owner: "stack/A"}); err != nil {
		t.Fatal(err)
	}
	cur, err := srv.get(configMaps, "team", "a")
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
	srv := newFakeServer()
	mapper := newTestMapper()
	c := New(srv, mapper)
	c.now = srv.clock
	cold := srv.client()
	cold.mapper = mapper
	ctx := context.Background()
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
		srv.tick(10 * time.Second)
		srv.ClearActions()
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
	}
	if mapper.lookups != 0 {
		t.Errorf("%d REST mapper lookups, want none: an apps/v1 workload's mapping is fixed", mapper.lookups)
	}
	list, err := srv.Resource(workloads[KindDeployment].mapping.Resource).Namespace("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("%d deployments, want exactly 1: an apply must never create another", len(list.Items))
	}
}

func TestDoRetriesOnceAfter401(t *testing.T) {
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

func TestObjectMemoryIsBounded(t *testing.T) {
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
	defer func(b []time.Duration) { conflictBackoff = b }(conflictBackoff)
	conflictBackoff = []time.Duration{0, 0, 0}
	srv := newFakeServer()
	c := srv.client()
	ctx := context.Background()
	force := ApplyOptions{Force: true}
	if _, err := c.Apply(ctx, mustManifest(t, deployment("web", 2)), force); err != nil {
		t.Fatal(err)
	}
	deployments := workloads[KindDeployment].mapping.Resource
	writes := 0
	srv.PrependReactor("patch", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		writes++
		err := srv.edit(deployments, "default", "web", func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"observedGeneration": int64(writes)}
		})
		return false, nil, err
	})
	srv.ClearActions()
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
