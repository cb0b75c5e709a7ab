// Package auth is the AWS side of lambda-eks: the process's AWS configuration,
// optional role chaining into a cluster's account, the EKS bearer token minted
// in-process, and the cluster's endpoint and CA from eks:DescribeCluster.
//
// Everything here is built once per process and reused by warm invocations;
// the only per-call network traffic it causes is a token re-mint near expiry.
package auth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Target names a cluster and the identity used to reach it. It is comparable,
// so callers can key per-process caches by it.
type Target struct {
	Cluster string
	Region  string
	// RoleARN, when set, is assumed from the execution role (role chaining);
	// the token is then signed by that role, so that role is what the
	// cluster must map.
	RoleARN     string
	ExternalID  string
	SessionName string
}

// Bounds of AWS calls, so that an endpoint that does not answer is reported
// as such (an *EndpointError) well inside an invocation's deadline (the
// template's default is 30 s), while a slow but answering one still
// succeeds. The SDK retries transient errors on top of attemptTimeout, and
// callTimeout bounds the whole call.
const (
	// dialTimeout bounds a TCP connect, to the endpoint or to the proxy.
	dialTimeout = 3 * time.Second
	// handshakeTimeout bounds a TLS handshake.
	handshakeTimeout = 3 * time.Second
	// attemptTimeout bounds one attempt from the connect to the end of the
	// answer, a proxy's CONNECT (HTTPS_PROXY) included, which no other
	// timeout of net/http covers.
	attemptTimeout = 5 * time.Second
	maxAttempts    = 3
	// callTimeout bounds one AWS operation, every attempt and backoff
	// included: two silent attempts and the wait between them.
	callTimeout = 10 * time.Second
)

// LoadConfig loads the process's AWS configuration once: credentials from the
// environment (the execution role in Lambda), a bounded retryer and an HTTP
// client whose connects and attempts are bounded.
func LoadConfig(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(newHTTPClient()),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = maxAttempts })
		}),
	}
	cfg, err := config.LoadDefaultConfig(ctx, append(opts, optFns...)...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load aws config: %w", err)
	}
	return cfg, nil
}

// newHTTPClient is the HTTP client of every AWS call. Its http.Client
// timeout is attemptTimeout: it covers the proxy's CONNECT (HTTPS_PROXY),
// which the transport's own timeouts do not.
func newHTTPClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
		WithTransportOptions(func(t *http.Transport) { t.TLSHandshakeTimeout = handshakeTimeout }).
		WithTimeout(attemptTimeout)
}

// ForTarget returns a copy of base for the target's region whose credentials
// are the target role's when one is set: a one-hour session assumed from
// base's credentials through the regional STS endpoint, kept until
// TokenSource.Prepare renews it (see credentialsWindow).
func ForTarget(base aws.Config, t Target) aws.Config {
	cfg := base.Copy()
	if t.Region != "" {
		cfg.Region = t.Region
	}
	if t.RoleARN == "" {
		return cfg
	}
	// No ExpiryWindow: the cache hands out the session until it truly ends;
	// the token source renews it earlier, under an invocation's context.
	cfg.Credentials = aws.NewCredentialsCache(newAssumeRoleProvider(cfg, t))
	return cfg
}
