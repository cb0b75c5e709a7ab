package handler

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// NewConnector returns the Connector that reaches real clusters: credentials
// for the target (assumed when it names a role), its endpoint and CA from
// eks:DescribeCluster, and a kube.Client whose bearer token refreshes itself.
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
		k, err := kube.NewForConfig(restCfg)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", t.Cluster, err)
		}
		return &Conn{
			Kube:      k,
			Prepare:   ts.Prepare,
			CallerARN: func(ctx context.Context) (string, error) { return auth.CallerARN(ctx, cfg) },
		}, nil
	}
}
