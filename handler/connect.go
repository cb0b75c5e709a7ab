package handler

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// NewConnector returns the Connector that reaches real clusters: credentials
// for the target (assumed when it names a role), its endpoint and CA from
// eks:DescribeCluster, and a clientset whose bearer token refreshes itself.
// The dynamic client and the REST mapper for manifests share its transport;
// the mapper reads discovery (cached in memory for the life of the process)
// only when a manifest first needs it.
func NewConnector(base aws.Config) Connector {
	return func(ctx context.Context, t auth.Target) (*Conn, error) {
		cfg := auth.ForTarget(base, t)
		ts, err := auth.NewTokenSource(cfg, t.Cluster)
		if err != nil {
			return nil, err
		}
		// Fetch (or assume) credentials under ctx before anything uses them.
		if err := ts.Prepare(ctx); err != nil {
			return nil, err
		}
		cluster, err := auth.DescribeCluster(ctx, cfg, t.Cluster)
		if err != nil {
			return nil, err
		}
		restCfg, err := kube.NewRESTConfig(cluster.Endpoint, cluster.CAData, ts)
		if err != nil {
			return nil, err
		}
		// One HTTP client, so the typed and dynamic clients share
		// connections and the cached token.
		hc, err := rest.HTTPClientFor(restCfg)
		if err != nil {
			return nil, fmt.Errorf("http client for cluster %s: %w", t.Cluster, err)
		}
		cs, err := kubernetes.NewForConfigAndClient(restCfg, hc)
		if err != nil {
			return nil, fmt.Errorf("clientset for cluster %s: %w", t.Cluster, err)
		}
		dyn, err := dynamic.NewForConfigAndClient(restCfg, hc)
		if err != nil {
			return nil, fmt.Errorf("dynamic client for cluster %s: %w", t.Cluster, err)
		}
		disc := memory.NewMemCacheClientWithContext(discovery.ToDiscoveryInterfaceWithContext(cs.Discovery()))
		mapper := restmapper.NewDeferredDiscoveryRESTMapperWithContext(disc)
		return &Conn{
			Kube:      kube.New(cs, dyn, mapper),
			Prepare:   ts.Prepare,
			CallerARN: func(ctx context.Context) (string, error) { return auth.CallerARN(ctx, cfg) },
		}, nil
	}
}
