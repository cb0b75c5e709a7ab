package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

const (
	// sessionSeconds is the session asked for every assumed role: the most
	// a chained session may last, so that a session outlives many tokens
	// and is renewed about once every 43 minutes (see credentialsWindow).
	sessionSeconds int32 = 3600
	// minSessionSeconds is asked instead when STS refuses sessionSeconds
	// for the role; STS's shortest session.
	minSessionSeconds int32 = 900
	// defaultSessionName names the session when the target names none.
	defaultSessionName = "lambda-eks"
)

// assumeRoleProvider assumes one role from the credentials of its STS
// client, asking for sessionSeconds and, once STS has refused that for the
// role, for minSessionSeconds from then on. It does not cache: ForTarget
// wraps it in an aws.CredentialsCache and TokenSource.Prepare decides when
// a session is renewed.
type assumeRoleProvider struct {
	sts      *sts.Client
	endpoint string // for naming the endpoint when no request says it
	input    sts.AssumeRoleInput
	// caller finds the canonical ARN of the base credentials when STS's
	// AccessDenied message does not name it.
	caller func(context.Context) (string, error)

	mu      sync.Mutex
	seconds int32 // the session asked for
}

func newAssumeRoleProvider(base aws.Config, t Target) *assumeRoleProvider {
	session := t.SessionName
	if session == "" {
		session = defaultSessionName
	}
	input := sts.AssumeRoleInput{RoleArn: aws.String(t.RoleARN), RoleSessionName: aws.String(session)}
	if t.ExternalID != "" {
		input.ExternalId = aws.String(t.ExternalID)
	}
	return &assumeRoleProvider{
		// The regional STS endpoint of the target's region: global
		// endpoints fail in opt-in regions.
		sts:      sts.NewFromConfig(base),
		endpoint: regionalEndpoint(base, "sts"),
		input:    input,
		caller:   func(ctx context.Context) (string, error) { return CallerARN(ctx, base) },
		seconds:  sessionSeconds,
	}
}

// Retrieve assumes the role, bounded by callTimeout. Through
// aws.CredentialsCache, ctx has lost its deadline (the cache shares one
// fetch among its callers, each of which returns at its own deadline), so
// callTimeout is what ends a call to a silent endpoint.
func (p *assumeRoleProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out, err := p.assume(ctx, p.seconds)
	if durationRefused(err) && p.seconds > minSessionSeconds {
		// The role's MaxSessionDuration (or a chained session's one-hour
		// limit) is below what was asked: take the shortest session and
		// keep asking for it.
		p.seconds = minSessionSeconds
		out, err = p.assume(ctx, p.seconds)
	}
	if err != nil {
		return aws.Credentials{}, p.wrap(ctx, err)
	}
	c := out.Credentials
	if c == nil {
		return aws.Credentials{}, fmt.Errorf("assume role %s: no credentials in the answer", aws.ToString(p.input.RoleArn))
	}
	return aws.Credentials{
		AccessKeyID:     aws.ToString(c.AccessKeyId),
		SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken:    aws.ToString(c.SessionToken),
		Source:          "AssumeRole",
		CanExpire:       true,
		Expires:         aws.ToTime(c.Expiration),
	}, nil
}

func (p *assumeRoleProvider) assume(ctx context.Context, seconds int32) (*sts.AssumeRoleOutput, error) {
	in := p.input
	in.DurationSeconds = aws.Int32(seconds)
	return awsCall(ctx, "STS", p.endpoint, func(ctx context.Context) (*sts.AssumeRoleOutput, error) {
		return p.sts.AssumeRole(ctx, &in)
	})
}

// wrap names both roles when STS refused the request.
func (p *assumeRoleProvider) wrap(ctx context.Context, err error) error {
	target := aws.ToString(p.input.RoleArn)
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "AccessDenied" {
		caller := ""
		if m := deniedCallerRE.FindStringSubmatch(apiErr.ErrorMessage()); m != nil {
			caller, _ = CanonicalARN(m[1])
		}
		if caller == "" && ctx.Err() == nil {
			caller, _ = p.caller(ctx)
		}
		return &AssumeRoleError{Caller: caller, Target: target, Err: err}
	}
	var endpointErr *EndpointError
	if errors.As(err, &endpointErr) {
		return err
	}
	return fmt.Errorf("assume role %s: %w", target, err)
}

// durationRefused says STS refused the DurationSeconds asked for. STS
// answers it with the generic ValidationError code (the SDK has no type for
// it), so the message tells it from other invalid parameters.
func durationRefused(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == "ValidationError" &&
		strings.Contains(apiErr.ErrorMessage(), "DurationSeconds")
}
