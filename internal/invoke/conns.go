package invoke

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/utils/lru"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Conn is a connection to one cluster with a function's client C, reused by
// warm invocations.
type Conn[C any] struct {
	Client C
	// Prepare is called at the start of each invocation with its context,
	// so credential refreshes are bounded by the deadline. May be nil.
	Prepare func(context.Context) error
	// CallerARN names the identity the cluster sees, to word a 401. May be nil.
	CallerARN func(context.Context) (string, error)
}

// Opener opens a Conn to a target.
type Opener[C any] func(ctx context.Context, t auth.Target) (*Conn[C], error)

// MaxConns bounds the connections a process keeps: one per target (cluster,
// region, role) it was asked for, the least recently used dropped first.
const MaxConns = 16

// Conns is a process's connections, one per target, opened on first use and
// kept for warm invocations; bounded (MaxConns, least recently used out) and
// healing (a connection that Stale says no longer reaches its cluster is
// dropped, and the next invocation opens a new one).
type Conns[C any] struct {
	open Opener[C]
	log  *slog.Logger
	// mu orders a drop against a new connection to the same target; the
	// lru.Cache is safe for concurrent use on its own.
	mu    sync.Mutex
	conns *lru.Cache
}

// NewConns returns an empty cache that opens connections with open.
func NewConns[C any](open Opener[C], log *slog.Logger) *Conns[C] {
	return &Conns[C]{open: open, log: log, conns: lru.New(MaxConns)}
}

// Get returns the connection to t, opening it on first use, prepared for
// an invocation under ctx. A failed open is not kept: the next invocation
// tries again.
func (cs *Conns[C]) Get(ctx context.Context, t auth.Target) (*Conn[C], error) {
	c := cs.cached(t)
	if c == nil {
		var err error
		if c, err = cs.open(ctx, t); err != nil {
			return nil, err
		}
		cs.mu.Lock()
		cs.conns.Add(t, c)
		cs.mu.Unlock()
	}
	if c.Prepare != nil {
		if err := c.Prepare(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Len is the number of connections kept.
func (cs *Conns[C]) Len() int { return cs.conns.Len() }

func (cs *Conns[C]) cached(t auth.Target) *Conn[C] {
	v, ok := cs.conns.Get(t)
	if !ok {
		return nil
	}
	return v.(*Conn[C])
}

// Done ends a use of c, the connection to t, that failed with err: when
// err shows that c no longer reaches its cluster (Stale), c is dropped, if
// it is still the connection to t, so that the next invocation opens a new
// one (eks:DescribeCluster again).
func (cs *Conns[C]) Done(ctx context.Context, t auth.Target, c *Conn[C], err error) {
	reason := Stale(err)
	if reason == "" {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.cached(t) == c {
		cs.conns.Remove(t)
		cs.log.WarnContext(ctx, "connection dropped", "cluster", t.Cluster, "region", t.Region, "reason", reason)
	}
}

// Stale says why err shows that a connection no longer reaches the cluster
// it was opened for, or "" when it does not. The endpoint and CA came from
// eks:DescribeCluster when the connection was opened; a cluster deleted and
// created again under the same name has new ones. So a certificate the CA
// does not verify, an endpoint name that no longer resolves, and a 401 that
// outlived the retry with a fresh token (kube retries once) all mean: ask
// EKS again.
func Stale(err error) string {
	var dns *net.DNSError
	switch {
	case err == nil:
		return ""
	case isTLS(err):
		return "tls"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "endpoint name not found"
	case apierrors.IsUnauthorized(err):
		return "401 after a fresh token"
	}
	return ""
}

// Endpoint is a cluster's API server as a target reaches it: a rest.Config
// whose bearer token refreshes itself, and the hooks a Conn needs.
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
// endpoint and CA from eks:DescribeCluster. Every function connects
// through it.
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
	restCfg, err := kube.NewRESTConfig(cluster.Endpoint, cluster.CAData, countTokens{ts})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", t.Cluster, err)
	}
	// Outermost, so that each of client-go's retries counts as a request.
	if wrap := restCfg.WrapTransport; wrap != nil {
		restCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countRequests(wrap(rt)) }
	} else {
		restCfg.WrapTransport = countRequests
	}
	return &Endpoint{Config: restCfg, Prepare: ts.Prepare,
		CallerARN: func(ctx context.Context) (string, error) { return auth.CallerARN(ctx, cfg) }}, nil
}

// NewOpener returns the Opener that reaches real clusters (Open) with the
// client that client builds from the endpoint's rest.Config.
func NewOpener[C any](base aws.Config, client func(*rest.Config) (C, error)) Opener[C] {
	return func(ctx context.Context, t auth.Target) (*Conn[C], error) {
		e, err := Open(ctx, base, t)
		if err != nil {
			return nil, err
		}
		c, err := client(e.Config)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", t.Cluster, err)
		}
		return &Conn[C]{Client: c, Prepare: e.Prepare, CallerARN: e.CallerARN}, nil
	}
}
