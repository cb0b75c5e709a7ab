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
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
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

// Timeouts for AWS calls. Connect fails fast so that an unreachable VPC
// endpoint is reported well inside a Lambda deadline; the SDK retries
// transient errors a bounded number of times on top of these.
const (
	dialTimeout     = 3 * time.Second
	responseTimeout = 10 * time.Second
	maxAttempts     = 3
)

// LoadConfig loads the process's AWS configuration once: credentials from the
// environment (the execution role in Lambda), a bounded retryer and an HTTP
// client with short connect timeouts.
func LoadConfig(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
		WithTransportOptions(func(t *http.Transport) {
			t.TLSHandshakeTimeout = dialTimeout
			t.ResponseHeaderTimeout = responseTimeout
		})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
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

// ForTarget returns a copy of base for the target's region whose credentials
// are the target role's when one is set, assumed from base's credentials and
// cached until shortly before they expire.
func ForTarget(base aws.Config, t Target) aws.Config {
	cfg := base.Copy()
	if t.Region != "" {
		cfg.Region = t.Region
	}
	if t.RoleARN == "" {
		return cfg
	}
	// The AssumeRole call goes to the regional STS endpoint of the target
	// region: global endpoints fail in opt-in regions.
	stsClient := sts.NewFromConfig(cfg)
	provider := stscreds.NewAssumeRoleProvider(stsClient, t.RoleARN, func(o *stscreds.AssumeRoleOptions) {
		if t.ExternalID != "" {
			o.ExternalID = aws.String(t.ExternalID)
		}
		if t.SessionName != "" {
			o.RoleSessionName = t.SessionName
		}
	})
	// Refresh a session with less than a token's lifetime (and an
	// invocation's 15 minutes) left, so that the refresh happens in
	// TokenSource.Prepare, under the invocation's context, and never inside
	// Token, which has none.
	cfg.Credentials = aws.NewCredentialsCache(provider, func(o *aws.CredentialsCacheOptions) {
		o.ExpiryWindow = credentialsWindow
	})
	return cfg
}
