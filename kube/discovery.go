package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// discoveryMapper is a REST mapper read from the API server's discovery on
// first use and kept until ResetWithContext: what client-go's deferred
// discovery mapper over a memory-cached discovery client does (aggregated
// discovery when the server offers it, else a request per group version),
// without k8s.io/client-go/discovery, which links client-go's scheme of
// every built-in API group (1.5 ms and 0.7 MB of work at every cold start).
// Requests go through a client-go REST client: the same transport, token,
// retries of 429 and 5xx, and API errors (a 401 is apierrors.IsUnauthorized).
type discoveryMapper struct {
	rc *rest.RESTClient

	mu sync.Mutex
	m  meta.RESTMapperWithContext
}

// aggregatedAccept asks for aggregated discovery (apidiscovery.k8s.io/v2,
// Kubernetes 1.30+), with the legacy documents as the fallback.
const aggregatedAccept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;q=0.9"

func (d *discoveryMapper) get(ctx context.Context) (meta.RESTMapperWithContext, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m != nil {
		return d.m, nil
	}
	groups, err := d.discover(ctx)
	if err != nil {
		return nil, err
	}
	d.m = newRESTMapper(groups)
	return d.m, nil
}

// ResetWithContext drops what was read: the next lookup reads discovery.
func (d *discoveryMapper) ResetWithContext(context.Context) {
	d.mu.Lock()
	d.m = nil
	d.mu.Unlock()
}

// apiGroup is one API group: its versions, the preferred first, and the
// resources of each.
type apiGroup struct {
	name      string
	versions  []string
	resources map[string][]metav1.APIResource
}

func (d *discoveryMapper) read(ctx context.Context, path, accept string, into any) error {
	raw, err := d.rc.Get().AbsPath(path).SetHeader("Accept", accept).Do(ctx).Raw()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("discovery %s: %w", path, err)
	}
	return nil
}

// readEither reads path as aggregated discovery into agg when the server
// answers with it (its kind says), else as the legacy document into legacy.
func (d *discoveryMapper) readEither(ctx context.Context, path string, agg *apidiscoveryv2.APIGroupDiscoveryList, legacy any) (bool, error) {
	var raw json.RawMessage
	if err := d.read(ctx, path, aggregatedAccept, &raw); err != nil {
		return false, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return false, fmt.Errorf("discovery %s: %w", path, err)
	}
	into := legacy
	if tm.Kind == "APIGroupDiscoveryList" {
		into = agg
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return false, fmt.Errorf("discovery %s: %w", path, err)
	}
	return into == agg, nil
}

// discover reads /api and /apis, and the resources of each group version
// the server listed in the legacy form (8 requests at a time).
func (d *discoveryMapper) discover(ctx context.Context) ([]apiGroup, error) {
	// One after the other, as client-go reads them: the first request mints
	// the token, and a 401 then drops the token it refused.
	var groups []apiGroup
	var coreAgg, apisAgg apidiscoveryv2.APIGroupDiscoveryList
	var core metav1.APIVersions
	var apis metav1.APIGroupList
	switch aggregated, err := d.readEither(ctx, "/api", &coreAgg, &core); {
	case err != nil:
		return nil, err
	case aggregated:
		groups = aggregatedGroups(coreAgg.Items)
	default:
		groups = []apiGroup{{versions: core.Versions}}
	}
	switch aggregated, err := d.readEither(ctx, "/apis", &apisAgg, &apis); {
	case err != nil:
		return nil, err
	case aggregated:
		groups = append(groups, aggregatedGroups(apisAgg.Items)...)
	default:
		for _, gr := range apis.Groups {
			x := apiGroup{name: gr.Name, versions: []string{gr.PreferredVersion.Version}}
			for _, v := range gr.Versions {
				if v.Version != gr.PreferredVersion.Version {
					x.versions = append(x.versions, v.Version)
				}
			}
			groups = append(groups, x)
		}
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range groups {
		if groups[i].resources != nil {
			continue // aggregated: listed already
		}
		groups[i].resources = map[string][]metav1.APIResource{}
		for _, v := range groups[i].versions {
			path := "/apis/" + groups[i].name + "/" + v
			if groups[i].name == "" {
				path = "/api/" + v
			}
			g.Go(func() error {
				var rl metav1.APIResourceList
				if err := d.read(gctx, path, "application/json", &rl); err != nil {
					if apierrors.IsUnauthorized(err) || gctx.Err() != nil {
						return err
					}
					// As client-go's mapper: a group version that fails
					// (an aggregated API down) is left out, not fatal.
					return nil
				}
				mu.Lock()
				groups[i].resources[v] = rl.APIResources
				mu.Unlock()
				return nil
			})
		}
	}
	return groups, g.Wait()
}

// aggregatedGroups is client-go's conversion of aggregated discovery:
// versions in the server's order (the preferred first), stale ones left
// out, resources without a kind skipped.
func aggregatedGroups(items []apidiscoveryv2.APIGroupDiscovery) []apiGroup {
	out := make([]apiGroup, 0, len(items))
	for _, it := range items {
		g := apiGroup{name: it.Name, resources: map[string][]metav1.APIResource{}}
		for _, v := range it.Versions {
			if v.Freshness == apidiscoveryv2.DiscoveryFreshnessStale {
				continue
			}
			g.versions = append(g.versions, v.Version)
			for _, r := range v.Resources {
				if r.ResponseKind == nil || r.ResponseKind.Kind == "" {
					continue
				}
				g.resources[v.Version] = append(g.resources[v.Version], metav1.APIResource{Name: r.Resource,
					SingularName: r.SingularResource, Namespaced: r.Scope == apidiscoveryv2.ScopeNamespace, Kind: r.ResponseKind.Kind})
			}
		}
		out = append(out, g)
	}
	return out
}

// newRESTMapper is client-go's restmapper.NewDiscoveryRESTMapper: the core
// group's v1 first, then each group's versions, the preferred first, then
// any version of each group in discovery's order.
func newRESTMapper(groups []apiGroup) meta.RESTMapperWithContext {
	var multi meta.MultiRESTMapperWithContext
	resourcePriority := []schema.GroupVersionResource{{Group: "", Version: "v1", Resource: meta.AnyResource}}
	kindPriority := []schema.GroupVersionKind{{Group: "", Version: "v1", Kind: meta.AnyKind}}
	for _, g := range groups {
		for i, v := range g.versions {
			resources, ok := g.resources[v]
			if !ok {
				continue
			}
			if g.name != "" || i > 0 {
				resourcePriority = append(resourcePriority, schema.GroupVersionResource{Group: g.name, Version: v, Resource: meta.AnyResource})
				kindPriority = append(kindPriority, schema.GroupVersionKind{Group: g.name, Version: v, Kind: meta.AnyKind})
			}
			gv := schema.GroupVersion{Group: g.name, Version: v}
			vm := meta.NewDefaultRESTMapper([]schema.GroupVersion{gv})
			for _, r := range resources {
				if strings.Contains(r.Name, "/") {
					continue // a subresource
				}
				scope := meta.RESTScopeRoot
				if r.Namespaced {
					scope = meta.RESTScopeNamespace
				}
				plural, singular := gv.WithResource(r.Name), gv.WithResource(r.SingularName)
				if r.SingularName == "" {
					_, singular = meta.UnsafeGuessKindToResource(gv.WithKind(r.Kind))
				}
				vm.AddSpecific(gv.WithKind(strings.ToLower(r.Kind)), plural, singular, scope)
				vm.AddSpecific(gv.WithKind(r.Kind), plural, singular, scope)
				vm.Add(gv.WithKind(r.Kind+"List"), scope)
			}
			vm.Add(gv.WithKind("List"), meta.RESTScopeRoot)
			multi = append(multi, vm)
		}
	}
	for _, g := range groups {
		resourcePriority = append(resourcePriority, schema.GroupVersionResource{Group: g.name, Version: meta.AnyVersion, Resource: meta.AnyResource})
		kindPriority = append(kindPriority, schema.GroupVersionKind{Group: g.name, Version: meta.AnyVersion, Kind: meta.AnyKind})
	}
	return meta.PriorityRESTMapperWithContext{Delegate: multi, ResourcePriority: resourcePriority, KindPriority: kindPriority}
}

// The meta.ResettableRESTMapperWithContext methods: each reads discovery on
// first use.

func (d *discoveryMapper) KindForWithContext(ctx context.Context, r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	m, err := d.get(ctx)
	if err != nil {
		return schema.GroupVersionKind{}, err
	}
	return m.KindForWithContext(ctx, r)
}

func (d *discoveryMapper) KindsForWithContext(ctx context.Context, r schema.GroupVersionResource) ([]schema.GroupVersionKind, error) {
	m, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	return m.KindsForWithContext(ctx, r)
}

func (d *discoveryMapper) ResourceForWithContext(ctx context.Context, r schema.GroupVersionResource) (schema.GroupVersionResource, error) {
	m, err := d.get(ctx)
	if err != nil {
		return schema.GroupVersionResource{}, err
	}
	return m.ResourceForWithContext(ctx, r)
}

func (d *discoveryMapper) ResourcesForWithContext(ctx context.Context, r schema.GroupVersionResource) ([]schema.GroupVersionResource, error) {
	m, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	return m.ResourcesForWithContext(ctx, r)
}

func (d *discoveryMapper) RESTMappingWithContext(ctx context.Context, gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	return m.RESTMappingWithContext(ctx, gk, versions...)
}

func (d *discoveryMapper) RESTMappingsWithContext(ctx context.Context, gk schema.GroupKind, versions ...string) ([]*meta.RESTMapping, error) {
	m, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	return m.RESTMappingsWithContext(ctx, gk, versions...)
}

func (d *discoveryMapper) ResourceSingularizerWithContext(ctx context.Context, resource string) (string, error) {
	m, err := d.get(ctx)
	if err != nil {
		return "", err
	}
	return m.ResourceSingularizerWithContext(ctx, resource)
}
