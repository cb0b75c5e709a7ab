// Package kube is the Kubernetes side of lambda-eks: a client for an EKS API
// server authenticated by a self-refreshing bearer token, and the operations
// the function performs, all as server-side apply with one field manager.
package kube

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// FieldManager owns every field lambda-eks writes.
const FieldManager = "lambda-eks"

const (
	// dialTimeout bounds a TCP connect to the API server, so that a private
	// endpoint the function cannot reach is reported quickly.
	dialTimeout = 3 * time.Second
	// qps and burst replace client-go's default 5/10, which would add 200 ms
	// to each request of a batch after the tenth. An invocation has at most
	// 8 requests in flight (kube.concurrency) and the API server's priority
	// and fairness answers 429 when it is busy (retried after Retry-After),
	// so the client's limiter is only a guard against a runaway loop: at
	// 50/100 it made a 500-object apply take 10 s on loopback.
	qps   = 1000
	burst = 2000
)

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
	}, nil
}
