// Package kube is the Kubernetes side of lambda-eks: a client for an EKS API
// server authenticated by a self-refreshing bearer token, and the operations
// the function performs, all as server-side apply with one field manager.
package kube

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// FieldManager owns every field lambda-eks writes.
const FieldManager = "lambda-eks"

const (
	// dialTimeout bounds a TCP connect to the API server, so that a private
	// endpoint the function cannot reach is reported quickly.
	dialTimeout = 3 * time.Second
	// requestTimeout bounds each request, so that an API server that holds a
	// connection but stops answering is Unavailable well inside a
	// function's timeout, not a Timeout at its end. No request here waits
	// on the server (waits poll), and a slow answer takes far less.
	requestTimeout = 10 * time.Second
	// qps and burst replace client-go's default 5/10, which would add 200 ms
	// to each request of a batch after the tenth. An invocation has at most
	// 8 requests in flight (concurrency) and the API server's priority and
	// fairness answers 429 when it is busy (retried after Retry-After by
	// client-go), so the client's limiter is only a guard against a runaway
	// loop: at 50/100 a 500-object apply took 10 s on loopback.
	qps   = 1000
	burst = 2000
)

// Client performs lambda-eks's operations on one cluster. It is built once
// per process and cluster and is safe for concurrent use.
type Client struct {
	dyn dynamic.Interface
	// mapper reads discovery on first use only, so ensure-nginx, whose
	// mapping is fixed, never pays for it.
	mapper meta.ResettableRESTMapperWithContext
	// now and sleep are the client's clock: every wait, backoff and poll
	// sleeps on it, so that a test's fake clock makes them cost no time.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	seen  *objectMemory
}

// New returns a Client that reaches objects of any kind through dyn and
// finds their resources with mapper.
func New(dyn dynamic.Interface, mapper meta.ResettableRESTMapperWithContext) *Client {
	return &Client{dyn: dyn, mapper: mapper, now: time.Now, sleep: sleep, seen: newObjectMemory(maxRemembered)}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NewForConfig returns a Client for cfg: a dynamic client and a REST mapper
// backed by discovery cached in memory for the life of the process, sharing
// one HTTP client and so its connections and cached token.
func NewForConfig(cfg *rest.Config) (*Client, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("http client for %s: %w", cfg.Host, err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("dynamic client for %s: %w", cfg.Host, err)
	}
	rc, err := rest.UnversionedRESTClientForConfigAndClient(dynamic.ConfigFor(cfg), hc)
	if err != nil {
		return nil, fmt.Errorf("discovery client for %s: %w", cfg.Host, err)
	}
	return New(dyn, &discoveryMapper{rc: rc}), nil
}

// NewRESTConfig returns a rest.Config for the API server at endpoint, trusting
// only caData, whose bearer token comes from ts. The token is cached by
// client-go's token-source transport, which asks ts for a new one when the
// cached one nears its Expiry and discards it after a 401.
func NewRESTConfig(endpoint string, caData []byte, ts oauth2.TokenSource) (*rest.Config, error) {
	if endpoint == "" {
		return nil, fmt.Errorf("rest config: no endpoint")
	}
	if len(caData) == 0 {
		return nil, fmt.Errorf("rest config for %s: no certificate authority", endpoint)
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &rest.Config{
		Host:            endpoint,
		TLSClientConfig: rest.TLSClientConfig{CAData: caData},
		WrapTransport:   transport.ResettableTokenSourceWrapTransport(transport.NewCachedTokenSource(ts)),
		QPS:             qps,
		Burst:           burst,
		UserAgent:       "lambda-eks",
		Dial:            dialer.DialContext,
		Timeout:         requestTimeout,
	}, nil
}
