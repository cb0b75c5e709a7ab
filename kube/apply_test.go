package kube

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeApply makes the dynamic fake answer server-side apply as a JSON
// merge of the applied object into the stored one (creating it when
// absent): enough to test how results are told apart.
func fakeApply(dyn *dynamicfake.FakeDynamicClient) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		p, ok := a.(k8stesting.PatchActionImpl)
		if !ok || p.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		gvr, ns, name := p.GetResource(), p.GetNamespace(), p.GetName()
		var applied map[string]any
		if err := json.Unmarshal(p.GetPatch(), &applied); err != nil {
			return true, nil, err
		}
		delete(applied["metadata"].(map[string]any), "resourceVersion")
		cur, err := dyn.Tracker().Get(gvr, ns, name)
		if apierrors.IsNotFound(err) {
			u := &unstructured.Unstructured{Object: applied}
			return true, u, dyn.Tracker().Create(gvr, u, ns)
		}
		if err != nil {
			return true, nil, err
		}
		u := cur.(*unstructured.Unstructured).DeepCopy()
		merge(u.Object, applied)
		return true, u, dyn.Tracker().Update(gvr, u, ns)
	}
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

func TestApplyResultsAndWarmRequests(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	dyn.PrependReactor("patch", "*", fakeApply(dyn))
	c := New(nil, dyn, newTestMapper())
	ctx := context.Background()
	manifest := func(color string) Manifest {
		m, err := DecodeManifest([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {color: "+color+"}\n---\n"+
			"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {size: \"1\"}\n"), MaxDocuments)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	steps := []struct {
		name      string
		c         *Client
		m         Manifest
		dryRun    bool
		want      []Result
		wantVerbs []string
	}{
		{"first apply reads, then creates", c, manifest("blue"), false, []Result{Created, Created}, []string{"get", "get", "patch", "patch"}},
		{"warm re-apply is one request per object", c, manifest("blue"), false, []Result{Unchanged, Unchanged}, []string{"patch", "patch"}},
		{"a change", c, manifest("red"), false, []Result{Configured, Unchanged}, []string{"patch", "patch"}},
		{"a dry run reads what is there now", c, manifest("green"), true, []Result{Configured, Unchanged}, []string{"get", "get", "patch", "patch"}},
		{"a new process reads first", New(nil, dyn, newTestMapper()), manifest("red"), false, []Result{Unchanged, Unchanged}, []string{"get", "get", "patch", "patch"}},
	}
	for _, s := range steps {
		dyn.ClearActions()
		got, err := s.c.Apply(ctx, s.m, ApplyOptions{Namespace: "team", DryRun: s.dryRun})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var results []Result
		for _, r := range got {
			results = append(results, r.Result)
		}
		if diff := cmp.Diff(s.want, results); diff != "" {
			t.Errorf("%s: results (-want +got):\n%s", s.name, diff)
		}
		var verbs []string
		for _, a := range dyn.Actions() {
			verbs = append(verbs, a.GetVerb())
		}
		slices.Sort(verbs)
		if diff := cmp.Diff(s.wantVerbs, verbs); diff != "" {
			t.Errorf("%s: requests (-want +got):\n%s", s.name, diff)
		}
		if s.dryRun {
			// The fake keeps dry runs; put the object back as the server would have.
			if _, err := c.Apply(ctx, manifest("red"), ApplyOptions{Namespace: "team"}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestSeenObjectComparisons(t *testing.T) {
	was := seenObject{exists: true, uid: "u1", resourceVersion: "7", fingerprint: "a"}
	tests := []struct {
		name                  string
		now                   seenObject
		wantCreated, wantDiff bool
	}{
		{"same resourceVersion", seenObject{exists: true, uid: "u1", resourceVersion: "7", fingerprint: "a"}, false, false},
		{"new resourceVersion, new content", seenObject{exists: true, uid: "u1", resourceVersion: "8", fingerprint: "b"}, false, true},
		{"new resourceVersion, bookkeeping only", seenObject{exists: true, uid: "u1", resourceVersion: "8", fingerprint: "a"}, false, false},
		{"deleted and made again", seenObject{exists: true, uid: "u2", resourceVersion: "9", fingerprint: "c"}, true, true},
		{"a server without uids or resourceVersions", seenObject{exists: true, fingerprint: "b"}, false, true},
	}
	for _, tt := range tests {
		if got := tt.now.createdSince(was); got != tt.wantCreated {
			t.Errorf("%s: createdSince = %v, want %v", tt.name, got, tt.wantCreated)
		}
		if got := tt.now.changedSince(was); got != tt.wantDiff {
			t.Errorf("%s: changedSince = %v, want %v", tt.name, got, tt.wantDiff)
		}
	}
	if !was.createdSince(seenObject{}) {
		t.Error("an object that was absent must count as created")
	}
}
