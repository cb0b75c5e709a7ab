package kube

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// concurrency bounds the requests one invocation has in flight: enough to
// hide the round trip, few enough to stay a polite client of the API server.
const concurrency = 8

var (
	namespaceGK = schema.GroupKind{Kind: "Namespace"}
	crdGK       = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
	crdGVR      = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// Ref names one object by kind and name, for delete and status without a
// manifest. Kind is "Deployment", or qualified with its group
// ("Deployment.apps"); APIVersion, when set, pins the group and version.
type Ref struct {
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
}

// target is an object resolved against the cluster: its resource, scope
// and namespace are known.
type target struct {
	index, item int // position in the manifest; 0 for a Ref
	obj         *unstructured.Unstructured
	mapping     *meta.RESTMapping
	namespace   string
	name        string
	// definedBy is the manifest's CRD that defines this kind, when the
	// cluster did not know the kind yet.
	definedBy string
}

// intent hashes what t applies, to tell whether it was applied before.
func (t target) intent() string {
	h, err := hash(t.obj.Object)
	if err != nil {
		return ""
	}
	return h
}

// manifestError is a problem with t's document; format is fmt.Errorf's,
// so a %w cause is the error's Err.
func (t target) manifestError(format string, args ...any) *ManifestError {
	text, cause := problem(format, args...)
	return &ManifestError{Index: t.index, Item: t.item, Kind: t.mapping.GroupVersionKind.Kind, Name: t.name,
		Problem: text, Err: cause}
}

func (t target) gr() string { return t.mapping.Resource.GroupResource().String() }

func (t target) key() objectKey {
	return objectKey{resource: t.gr(), namespace: t.namespace, name: t.name}
}

func (t target) op(verb string) OpError {
	return OpError{Verb: verb, Resource: t.gr(), Namespace: t.namespace, Name: t.name}
}

func (t target) result(r Result) ObjectResult {
	gvk := t.mapping.GroupVersionKind
	return ObjectResult{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Namespace: t.namespace, Name: t.name, Result: r}
}

// first reports whether t goes before the rest: Namespaces and CRDs, which
// other objects of a manifest may need.
func (t target) first() bool {
	gk := t.mapping.GroupVersionKind.GroupKind()
	return gk == namespaceGK || gk == crdGK
}

// Workload kinds: scale and restart act on them, and their mappings are
// fixed, so those actions, and an apply of apps/v1 workloads only
// (ensure-nginx), never read discovery.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
)

// workloadKind is what scale and restart know of a workload kind.
type workloadKind struct {
	mapping  *meta.RESTMapping
	scalable bool // has a scale subresource
}

var workloads = map[string]workloadKind{
	KindDeployment:  {mapping: appsMapping(KindDeployment, "deployments"), scalable: true},
	KindStatefulSet: {mapping: appsMapping(KindStatefulSet, "statefulsets"), scalable: true},
	KindDaemonSet:   {mapping: appsMapping(KindDaemonSet, "daemonsets")},
}

func appsMapping(kind, resource string) *meta.RESTMapping {
	gv := schema.GroupVersion{Group: "apps", Version: "v1"}
	return &meta.RESTMapping{Resource: gv.WithResource(resource), GroupVersionKind: gv.WithKind(kind), Scope: meta.RESTScopeNamespace}
}

// workloadTarget names one workload of a known kind.
func workloadTarget(kind, namespace, name string) (target, error) {
	w, ok := workloads[kind]
	if !ok {
		return target{}, fmt.Errorf("kind %q is not a workload: want Deployment, StatefulSet or DaemonSet", kind)
	}
	return target{mapping: w.mapping, namespace: namespace, name: name}, nil
}

func (c *Client) resource(t target) dynamic.ResourceInterface {
	r := c.dyn.Resource(t.mapping.Resource)
	if t.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return r.Namespace(t.namespace)
	}
	return r
}

// mapper wraps the REST mapper for one invocation: a kind the cached
// discovery does not know makes it read discovery again, once.
type mapper struct {
	c     *Client
	reset bool
}

func (m *mapper) mapping(ctx context.Context, gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	if w, ok := workloads[gk.Kind]; ok && gk.Group == "apps" && (len(versions) == 0 || versions[0] == "v1") {
		return w.mapping, nil
	}
	var mp *meta.RESTMapping
	err := m.lookup(ctx, func(ctx context.Context) error {
		var err error
		mp, err = m.c.mapper.RESTMappingWithContext(ctx, gk, versions...)
		return err
	})
	return mp, err
}

// kindFor resolves a bare kind ("Deployment") the way kubectl resolves a
// resource name: its lowercase singular, across all groups.
func (m *mapper) kindFor(ctx context.Context, kind string) (schema.GroupVersionKind, error) {
	var gvk schema.GroupVersionKind
	err := m.lookup(ctx, func(ctx context.Context) error {
		var err error
		gvk, err = m.c.mapper.KindForWithContext(ctx, schema.GroupVersionResource{Resource: strings.ToLower(kind)})
		return err
	})
	return gvk, err
}

// lookup runs one discovery-backed lookup; a kind the cached discovery does
// not know resets it, once per invocation, and asks again.
func (m *mapper) lookup(ctx context.Context, call func(context.Context) error) error {
	op := OpError{Verb: "get", Resource: "discovery (/api, /apis)"}
	err := do(ctx, op, call)
	if meta.IsNoMatchError(err) && !m.reset {
		m.reset = true
		m.c.mapper.ResetWithContext(ctx)
		err = do(ctx, op, call)
	}
	return err
}

// crdKinds lists the kinds the manifest's CRDs define, so that their custom
// resources validate before the CRDs exist.
func crdKinds(m Manifest) map[schema.GroupKind]*unstructured.Unstructured {
	out := map[schema.GroupKind]*unstructured.Unstructured{}
	for _, o := range m {
		if o.Object.GroupVersionKind().GroupKind() != crdGK {
			continue
		}
		group, _, _ := unstructured.NestedString(o.Object.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(o.Object.Object, "spec", "names", "kind")
		if group != "" && kind != "" {
			out[schema.GroupKind{Group: group, Kind: kind}] = o.Object
		}
	}
	return out
}

// crdMapping is the mapping a CRD will serve for gvk, or why it will not.
func crdMapping(crd *unstructured.Unstructured, gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	scope, _, _ := unstructured.NestedString(crd.Object, "spec", "scope")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	served := false
	for _, v := range versions {
		vm, _ := v.(map[string]any)
		if vm["name"] == gvk.Version && vm["served"] == true {
			served = true
		}
	}
	if !served || plural == "" {
		return nil, fmt.Errorf("CustomResourceDefinition %s in this manifest does not serve version %s", crd.GetName(), gvk.Version)
	}
	m := &meta.RESTMapping{Resource: gvk.GroupVersion().WithResource(plural), GroupVersionKind: gvk, Scope: meta.RESTScopeRoot}
	if scope == "Namespaced" {
		m.Scope = meta.RESTScopeNamespace
	}
	return m, nil
}

// resolveManifest maps every object of m to its resource and namespace and
// refuses the manifest if any object cannot be applied as written. Nothing
// is written here; errors are *ManifestError, or the discovery request's.
func (c *Client) resolveManifest(ctx context.Context, m Manifest, defaultNS string) ([]target, error) {
	defined := crdKinds(m)
	mp := &mapper{c: c}
	ts := make([]target, 0, len(m))
	seen := map[objectKey]ManifestObject{}
	for _, o := range m {
		gvk := o.Object.GroupVersionKind()
		t := target{index: o.Index, item: o.Item, name: o.Object.GetName()}
		mapping, err := mp.mapping(ctx, gvk.GroupKind(), gvk.Version)
		switch {
		case meta.IsNoMatchError(err):
			crd, ok := defined[gvk.GroupKind()]
			if !ok {
				return nil, o.errorf("kind %s of apiVersion %s is not known to the cluster, and no CustomResourceDefinition in this manifest defines it",
					gvk.Kind, gvk.GroupVersion())
			}
			if mapping, err = crdMapping(crd, gvk); err != nil {
				return nil, o.errorf("%w", err)
			}
			t.definedBy = crd.GetName()
		case err != nil:
			return nil, err
		}
		t.mapping = mapping
		ns := o.Object.GetNamespace()
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if ns == "" {
				ns = defaultNS
			}
		} else if ns != "" {
			return nil, o.errorf("%s is cluster-scoped: remove metadata.namespace %q", gvk.Kind, ns)
		}
		t.namespace = ns
		// The manifest is this invocation's own: its objects are applied as
		// they are, not copied (a 6 MiB manifest is tens of MiB of maps).
		t.obj = o.Object
		t.obj.SetNamespace(ns)
		if prev, dup := seen[t.key()]; dup {
			return nil, o.errorf("the same object as document %d", prev.Index)
		}
		seen[t.key()] = o
		ts = append(ts, t)
	}
	return ts, nil
}

// resolveRef maps a Ref to its resource.
func (c *Client) resolveRef(ctx context.Context, mp *mapper, r Ref) (target, error) {
	if _, ok := workloads[r.Kind]; ok && (r.APIVersion == "" || r.APIVersion == "apps/v1") {
		return workloadTarget(r.Kind, r.Namespace, r.Name)
	}
	var gk schema.GroupKind
	var versions []string
	switch {
	case r.APIVersion != "":
		gv, err := schema.ParseGroupVersion(r.APIVersion)
		if err != nil {
			return target{}, &RefError{Ref: r, Problem: err.Error(), Err: err}
		}
		gk, versions = gv.WithKind(r.Kind).GroupKind(), []string{gv.Version}
	case strings.Contains(r.Kind, "."):
		gk = schema.ParseGroupKind(r.Kind)
	default:
		gvk, err := mp.kindFor(ctx, r.Kind)
		if meta.IsNoMatchError(err) {
			return target{}, &RefError{Ref: r, Problem: "kind " + r.Kind + " is not known to the cluster"}
		}
		if err != nil {
			return target{}, err
		}
		gk, versions = gvk.GroupKind(), []string{gvk.Version}
	}
	mapping, err := mp.mapping(ctx, gk, versions...)
	if meta.IsNoMatchError(err) {
		return target{}, &RefError{Ref: r, Problem: "kind " + gk.String() + " is not known to the cluster"}
	}
	if err != nil {
		return target{}, err
	}
	t := target{mapping: mapping, name: r.Name}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		t.namespace = r.Namespace
	}
	return t, nil
}

// resolveRefs maps refs to their resources; a ref without a namespace is in
// namespace.
func (c *Client) resolveRefs(ctx context.Context, refs []Ref, namespace string) ([]target, error) {
	mp := &mapper{c: c}
	ts := make([]target, 0, len(refs))
	for _, r := range refs {
		if r.Namespace == "" {
			r.Namespace = namespace
		}
		t, err := c.resolveRef(ctx, mp, r)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// RefError is a Ref that names no kind the cluster knows.
type RefError struct {
	Ref     Ref
	Problem string
	// Err is the error Problem was worded from (an apiVersion that does
	// not parse), or nil; Error does not read it, Unwrap returns it.
	Err error
}

func (e *RefError) Error() string { return fmt.Sprintf("%s %q: %s", e.Ref.Kind, e.Ref.Name, e.Problem) }

func (e *RefError) Unwrap() error { return e.Err }

// indexes is 0..n-1.
func indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// each runs fn for every index in idx, at most concurrency at a time; the
// first error cancels the rest.
func each(ctx context.Context, idx []int, fn func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for _, i := range idx {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}

// phases splits ts into Namespaces and CRDs, and the rest.
func phases(ts []target) (first, rest []int) {
	for i, t := range ts {
		if t.first() {
			first = append(first, i)
		} else {
			rest = append(rest, i)
		}
	}
	return first, rest
}
