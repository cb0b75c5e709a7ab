package kube

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// testMapper is a fixed REST mapper that counts lookups and resets.
type testMapper struct {
	meta.RESTMapperWithContext
	lookups, resets int
}

func (m *testMapper) ResetWithContext(context.Context) { m.resets++ }

func (m *testMapper) RESTMappingWithContext(ctx context.Context, gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m.lookups++
	return m.RESTMapperWithContext.RESTMappingWithContext(ctx, gk, versions...)
}

func newTestMapper() *testMapper {
	dm := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "apps", Version: "v1"},
		{Group: "batch", Version: "v1"}, {Group: "apiextensions.k8s.io", Version: "v1"}})
	for _, k := range []struct {
		gvk   schema.GroupVersionKind
		scope meta.RESTScope
	}{
		{schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}, meta.RESTScopeRoot},
	} {
		dm.Add(k.gvk, k.scope)
	}
	return &testMapper{RESTMapperWithContext: meta.ToRESTMapperWithContext(dm)}
}

const crdDoc = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

func TestDecodeManifest(t *testing.T) {
	type obj struct {
		Index, Item                 int
		APIVersion, Kind, Namespace string
		Name                        string
	}
	tests := []struct {
		name     string
		manifest string
		max      int
		want     []obj
		wantErr  string // substring of the *ManifestError; "" for success
		wantDoc  int
	}{
		{"multi-document YAML with empty documents", "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n  namespace: web\n", 0,
			[]obj{{1, 0, "v1", "ConfigMap", "", "a"}, {2, 0, "apps/v1", "Deployment", "web", "b"}}, "", 0},
		{"JSON", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"},"data":{"n":"1"}}`, 0,
			[]obj{{1, 0, "v1", "ConfigMap", "", "j"}}, "", 0},
		{"List expanded", "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: x1}}\n- {apiVersion: v1, kind: Secret, metadata: {name: y1}}\n", 0,
			[]obj{{1, 1, "v1", "ConfigMap", "", "x1"}, {1, 2, "v1", "Secret", "", "y1"}}, "", 0},
		{"no kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n", 0, nil, "kind is missing", 2},
		{"no name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n", 0, nil, "metadata.name is missing", 1},
		{"generateName", "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: a-}\n", 0, nil, "generateName is not supported", 1},
		{"no metadata", "apiVersion: v1\nkind: ConfigMap\n", 0, nil, "metadata is missing", 1},
		{"bad name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a/b}\n", 0, nil, "metadata.name", 1},
		{"bad namespace", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: Not_OK}\n", 0, nil, "metadata.namespace", 1},
		{"bad apiVersion", "apiVersion: a/b/c\nkind: ConfigMap\nmetadata: {name: a}\n", 0, nil, "apiVersion", 1},
		{"broken YAML in the middle", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: [\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", 0, nil, "not valid YAML", 2},
		{"a scalar", "just text\n", 0, nil, "not an object", 1},
		{"nothing", "---\n---\n", 0, nil, "no objects", 1},
		{"too many", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n", 1, nil, "more than 1 objects", 2},
		{"a name YAML reads as a boolean", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: y}\n", 0, nil, "metadata.namespace is not a string", 1},
		{"bad List item", "apiVersion: v1\nkind: List\nitems: [3]\n", 0, nil, "item 1 of the List is not an object", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = MaxDocuments
			}
			m, err := DecodeManifest([]byte(tt.manifest), max)
			if tt.wantErr != "" {
				var me *ManifestError
				if !errors.As(err, &me) {
					t.Fatalf("err = %v, want a *ManifestError", err)
				}
				if !strings.Contains(me.Error(), tt.wantErr) || me.Index != tt.wantDoc {
					t.Errorf("error %q (document %d), want %q in document %d", me.Error(), me.Index, tt.wantErr, tt.wantDoc)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []obj
			for _, o := range m {
				got = append(got, obj{o.Index, o.Item, o.Object.GetAPIVersion(), o.Object.GetKind(), o.Object.GetNamespace(), o.Object.GetName()})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeManifestKeepsIntegers(t *testing.T) {
	m, err := DecodeManifest([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 3}\n"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := m[0].Object.Object["spec"].(map[string]any)["replicas"]; got != int64(3) {
		t.Errorf("replicas decoded as %T %v, want int64 3 (unstructured's integer type)", got, got)
	}
}

func TestResolveManifest(t *testing.T) {
	type resolved struct {
		Resource, Namespace, Name, DefinedBy string
		First                                bool
	}
	tests := []struct {
		name       string
		manifest   string
		want       []resolved
		wantErr    string
		wantResets int
	}{
		{"namespace defaulted for namespaced kinds only",
			"apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: team}\n",
			[]resolved{{"namespaces", "", "team", "", true}, {"configmaps", "dflt", "a", "", false}, {"deployments.apps", "team", "d", "", false}}, "", 0},
		{"a custom resource of a CRD in the same manifest",
			crdDoc + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
			[]resolved{{"customresourcedefinitions.apiextensions.k8s.io", "", "widgets.example.com", "", true},
				{"widgets.example.com", "dflt", "w", "widgets.example.com", false}}, "", 1},
		{"a version the CRD does not serve", crdDoc + "---\napiVersion: example.com/v2\nkind: Widget\nmetadata: {name: w}\n", nil, "does not serve version v2", 1},
		{"an unknown kind, after one discovery refresh", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n",
			nil, "document 2 (Gadget \"g\"): kind Gadget of apiVersion example.com/v1 is not known", 1},
		{"a namespace on a cluster-scoped kind", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n", nil, "cluster-scoped", 0},
		{"the same object twice", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: dflt}\n", nil, "same object as document 1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeManifest([]byte(tt.manifest), MaxDocuments)
			if err != nil {
				t.Fatal(err)
			}
			mapper := newTestMapper()
			c := New(nil, mapper)
			ts, err := c.resolveManifest(context.Background(), m, "dflt")
			if mapper.resets != tt.wantResets {
				t.Errorf("discovery reset %d times, want %d", mapper.resets, tt.wantResets)
			}
			if tt.wantErr != "" {
				var me *ManifestError
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a *ManifestError with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []resolved
			for _, tg := range ts {
				got = append(got, resolved{tg.gr(), tg.namespace, tg.name, tg.definedBy, tg.first()})
				if tg.obj.GetNamespace() != tg.namespace {
					t.Errorf("%s: object namespace %q, resolved %q", tg.name, tg.obj.GetNamespace(), tg.namespace)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("resolved (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveRef(t *testing.T) {
	c := New(nil, newTestMapper())
	tests := []struct {
		ref          Ref
		wantResource string
		wantNS       string
	}{
		{Ref{Kind: "Deployment", Namespace: "n", Name: "d"}, "deployments.apps", "n"},
		{Ref{Kind: "Deployment.apps", Namespace: "n", Name: "d"}, "deployments.apps", "n"},
		{Ref{APIVersion: "batch/v1", Kind: "Job", Namespace: "n", Name: "j"}, "jobs.batch", "n"},
		{Ref{Kind: "Namespace", Namespace: "n", Name: "x"}, "namespaces", ""},
	}
	for _, tt := range tests {
		tg, err := c.resolveRef(context.Background(), &mapper{c: c}, tt.ref)
		if err != nil {
			t.Fatalf("%+v: %v", tt.ref, err)
		}
		if tg.gr() != tt.wantResource || tg.namespace != tt.wantNS {
			t.Errorf("%+v: resolved %s in %q, want %s in %q", tt.ref, tg.gr(), tg.namespace, tt.wantResource, tt.wantNS)
		}
	}
	_, err := c.resolveRef(context.Background(), &mapper{c: c}, Ref{Kind: "Gadget", Name: "g"})
	var re *RefError
	if !errors.As(err, &re) {
		t.Errorf("unknown kind: err = %v, want a *RefError", err)
	}
}

func FuzzDecodeManifest(f *testing.F) {
	for _, seed := range []string{"", "---", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", crdDoc,
		`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}`,
		"apiVersion: v1\nkind: List\nitems: 3\n", "a: [", "- 1\n- 2\n", "apiVersion: 1\nkind: {}\nmetadata: []\n"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data, 10)
		if err != nil {
			var me *ManifestError
			if !errors.As(err, &me) {
				t.Fatalf("error %v is not a *ManifestError", err)
			}
			return
		}
		if len(m) == 0 || len(m) > 10 {
			t.Fatalf("%d objects accepted, want 1..10", len(m))
		}
		for _, o := range m {
			if o.Object.GetAPIVersion() == "" || o.Object.GetKind() == "" || o.Object.GetName() == "" {
				t.Fatalf("accepted an object without apiVersion, kind or name: %v", o.Object.Object)
			}
			_ = o.Object.DeepCopy() // panics on values unstructured cannot hold
		}
	})
}

// TestErrorsKeepTheirCause: the problems worded from another error keep it
// (errors.As and errors.Is reach it), and their text is what users saw
// before the cause was kept.
func TestErrorsKeepTheirCause(t *testing.T) {
	t.Parallel()
	_, badAPIVersion := DecodeManifest([]byte("apiVersion: a/b/c\nkind: ConfigMap\nmetadata: {name: x}\n"), MaxDocuments)
	_, badYAML := DecodeManifest([]byte("a: [\n"), MaxDocuments)
	m := mustManifest(t, crdDoc, "apiVersion: example.com/v2\nkind: Widget\nmetadata: {name: w}\n")
	_, unserved := New(nil, newTestMapper()).resolveManifest(context.Background(), m, "dflt")
	c := New(nil, newTestMapper())
	_, badRef := c.resolveRef(context.Background(), &mapper{c: c}, Ref{APIVersion: "a/b/c", Kind: "Widget", Name: "w"})
	_, badAnnotations := New(nil, newTestMapper()).Apply(context.Background(),
		mustManifest(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, annotations: plain}\n"), ApplyOptions{Namespace: "n", Owner: "stack/A"})
	_, badCount := planScale(new(int32(0)), map[string]string{ReplicasAnnotation: "many"}, 0, true)

	tests := []struct {
		name      string
		err       error
		wantText  string
		wantCause func(error) bool
	}{
		{"apiVersion that does not parse", badAPIVersion,
			`manifest document 1 (ConfigMap "x"): apiVersion "a/b/c": unexpected GroupVersion string: a/b/c`,
			func(err error) bool {
				return errors.Unwrap(err) != nil && strings.Contains(errors.Unwrap(err).Error(), "unexpected GroupVersion")
			}},
		{"YAML that does not parse", badYAML, "", func(err error) bool { return errors.Unwrap(err) != nil }},
		{"a version the manifest's CRD does not serve", unserved,
			`manifest document 2 (Widget "w"): CustomResourceDefinition widgets.example.com in this manifest does not serve version v2`,
			func(err error) bool { return errors.Unwrap(err) != nil }},
		{"annotations that are not a map", badAnnotations,
			`manifest document 1 (ConfigMap "a"): metadata.annotations: value cannot be set because .metadata.annotations is not a map[string]interface{}`,
			func(err error) bool { return errors.Unwrap(err) != nil }},
		{"a Ref's apiVersion that does not parse", badRef, `Widget "w": unexpected GroupVersion string: a/b/c`,
			func(err error) bool { return errors.Unwrap(err) != nil }},
		{"a remembered count that is not a number", badCount,
			` : annotation ` + ReplicasAnnotation + `="many" is not a replica count`,
			func(err error) bool { return errors.Is(err, strconv.ErrSyntax) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error")
			}
			if tt.wantText != "" && tt.err.Error() != tt.wantText {
				t.Errorf("message\n %q, want\n %q", tt.err.Error(), tt.wantText)
			}
			if !tt.wantCause(tt.err) {
				t.Errorf("%v (%T): the cause is not in the chain", tt.err, tt.err)
			}
		})
	}
}
