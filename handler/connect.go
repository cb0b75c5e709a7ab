package handler

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/client-go/rest"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Endpoint is a cluster's API server as a target reaches it: a rest.Config
// whose bearer token refreshes itself, and the hooks a connection needs.
type Endpoint struct {
	Config *rest.Config
	// Prepare fetches or renews the target's credentials under an
	// invocation's context.
	Prepare func(context.Context) error
	// CallerARN names the identity the cluster sees, to word a 401.
	CallerARN func(context.Context) (string, error)
}

// Open reaches a target's cluster: credentials for the target (assumed when
// it names a role), fetched under ctx before anything uses them, and its
// endpoint and CA from eks:DescribeCluster. Both functions (this one and the
// Helm function) connect through it.
func Open(ctx context.Context, base aws.Config, t auth.Target) (*Endpoint, error) {
	cfg := auth.ForTarget(base, t)
	ts, err := auth.NewTokenSource(cfg, t.Cluster)
	if err != nil {
		return nil, err
	}
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
	return &Endpoint{Config: restCfg, Prepare: ts.Prepare,
		CallerARN: func(ctx context.Context) (string, error) { return auth.CallerARN(ctx, cfg) }}, nil
}

// NewConnector returns the Connector that reaches real clusters (Open) with
// a kube.Client.
func NewConnector(base aws.Config) Connector {
	return func(ctx context.Context, t auth.Target) (*Conn, error) {
		e, err := Open(ctx, base, t)
		if err != nil {
			return nil, err
		}
		k, err := kube.NewForConfig(e.Config)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", t.Cluster, err)
		}
		return &Conn{Kube: k, Prepare: e.Prepare, CallerARN: e.CallerARN}, nil
	}
}
