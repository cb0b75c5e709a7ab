package kube

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestHash: equal values give equal digests whatever their maps' order;
// values that JSON would tell apart give different ones.
func TestHash(t *testing.T) {
	t.Parallel()
	must := func(v any) string {
		h, err := hash(v)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a := map[string]any{"x": int64(1), "y": []any{"a", map[string]any{"b": true, "c": nil}}, "z": 1.5}
	b := map[string]any{"z": 1.5, "y": []any{"a", map[string]any{"c": nil, "b": true}}, "x": int64(1)}
	if must(a) != must(b) {
		t.Error("the same values in another order hash differently")
	}
	distinct := []any{
		map[string]any{}, []any{}, "", nil, "1", int64(1), 1.5, true, "true",
		map[string]any{"a": "b"}, map[string]any{"ab": ""}, []any{"ab"}, []any{"a", "b"}, map[string]any{"a": []any{}},
		map[string]any{"a": map[string]any{}}, []any{map[string]any{}}, []any{[]any{}},
	}
	seen := map[string]int{}
	for i, v := range distinct {
		if j, ok := seen[must(v)]; ok {
			t.Errorf("%#v and %#v hash the same", distinct[j], v)
		}
		seen[must(v)] = i
	}
}

// TestApplyBodyUnescaped: an apply sends '<', '>' and '&' as they are (not
// six-byte escapes), and a precondition leaves the manifest's object as it
// was.
func TestApplyBodyUnescaped(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t)
	m := mustManifest(t, configMap("a", "k: '<&>'"))
	if _, err := srv.client(t).Apply(context.Background(), m, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range srv.Requests() {
		if r.Verb == "patch" && !bytes.Contains(r.Body, []byte("<&>")) {
			t.Errorf("%s body %s: want <&> unescaped", r, r.Body)
		}
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "a"}}}
	body, err := applyBody(obj, "42")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte(`"resourceVersion":"42"`)) || obj.GetResourceVersion() != "" {
		t.Errorf("body %s, object's resourceVersion %q: want the precondition in the body only", body, obj.GetResourceVersion())
	}
}

// TestShortQuoted: only what %q quotes is cut, to MaxQuoted bytes of whole
// runes and the length it had.
func TestShortQuoted(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxQuoted) + "é" + strings.Repeat("b", 1<<20)
	cut := strings.Repeat("a", MaxQuoted) + "... (" + strconv.Itoa(len(long)) + " bytes)"
	for _, tt := range []struct {
		format string
		args   []any
		want   []any
	}{
		{"name %q: %s", []any{long, long}, []any{cut, long}},
		{"100%% %5.2f %q %-10q %v", []any{1.5, "short", long, long}, []any{1.5, "short", cut, long}},
		{"%s %q", []any{long, 3}, []any{long, 3}},
		{"%q", []any{strings.Repeat("é", MaxQuoted)}, []any{strings.Repeat("é", MaxQuoted/2) + "... (" + strconv.Itoa(2*MaxQuoted) + " bytes)"}},
		{"%q %q", []any{"x"}, []any{"x"}},
	} {
		if diff := cmp.Diff(tt.want, ShortQuoted(tt.format, tt.args)); diff != "" {
			t.Errorf("%s (-want +got):\n%.500s", tt.format, diff)
		}
	}
	err := &ManifestError{Index: 1, Kind: "ConfigMap", Name: long, Problem: "metadata.name is longer than 253 characters"}
	if n := len(err.Error()); n > 2*MaxQuoted {
		t.Errorf("a manifest error naming a 1 MiB name is %d bytes", n)
	}
}
