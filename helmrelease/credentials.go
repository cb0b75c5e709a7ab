package helmrelease

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
)

// Credentials are the user names and passwords of registries and chart
// repositories, by host[:port] (REGISTRY_CREDENTIALS). ECR registries need
// none: their tokens come from ecr:GetAuthorizationToken.
type Credentials map[string]BasicAuth

// BasicAuth is a user name and password.
type BasicAuth struct{ Username, Password string }

// ParseCredentials reads REGISTRY_CREDENTIALS: a JSON object mapping
// host[:port] to "username:password".
func ParseCredentials(s string) (Credentials, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("REGISTRY_CREDENTIALS: want a JSON object of \"host[:port]\": \"username:password\": %w", err)
	}
	c := Credentials{}
	for host, up := range m {
		u, p, ok := strings.Cut(up, ":")
		if !ok || u == "" || host == "" || strings.ContainsAny(host, "/@") {
			return nil, fmt.Errorf("REGISTRY_CREDENTIALS: entry %q: want \"host[:port]\": \"username:password\"", host)
		}
		c[host] = BasicAuth{Username: u, Password: p}
	}
	return c, nil
}

// ecrHostRE matches an ECR registry host and captures its region.
var ecrHostRE = regexp.MustCompile(`^[0-9]{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|sc2s\.sgov\.gov|c2s\.ic\.gov)$`)

// ECRTokens gets and caches registry tokens with ecr:GetAuthorizationToken,
// as the function's own identity.
type ECRTokens struct {
	cfg aws.Config
	// extra are hosts treated as ECR registries besides the *.dkr.ecr.*
	// names (ECR_REGISTRIES), with the function's region.
	extra map[string]bool
	now   func() time.Time

	mu     sync.Mutex
	tokens map[string]ecrToken // by region
}

type ecrToken struct {
	auth    BasicAuth
	expires time.Time
}

// NewECRTokens returns the token source for ECR registries; extra lists
// more hosts to treat as ECR (ECR_REGISTRIES).
func NewECRTokens(cfg aws.Config, extra []string) *ECRTokens {
	t := &ECRTokens{cfg: cfg, extra: map[string]bool{}, now: time.Now, tokens: map[string]ecrToken{}}
	for _, h := range extra {
		t.extra[h] = true
	}
	return t
}

// region is the ECR region of host, or "" when host is no ECR registry.
func (t *ECRTokens) region(host string) string {
	if t == nil {
		return ""
	}
	if m := ecrHostRE.FindStringSubmatch(host); m != nil {
		return m[1]
	}
	if t.extra[host] {
		return t.cfg.Region
	}
	return ""
}

// auth returns the token of the region's registry, cached until five
// minutes before it expires.
func (t *ECRTokens) auth(ctx context.Context, region string) (BasicAuth, error) {
	t.mu.Lock()
	tok, ok := t.tokens[region]
	t.mu.Unlock()
	if ok && t.now().Before(tok.expires.Add(-5*time.Minute)) {
		return tok.auth, nil
	}
	cli := ecr.NewFromConfig(t.cfg, func(o *ecr.Options) { o.Region = region })
	out, err := cli.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return BasicAuth{}, fmt.Errorf("ecr:GetAuthorizationToken in %s: %w", region, err)
	}
	if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil {
		return BasicAuth{}, fmt.Errorf("ecr:GetAuthorizationToken in %s: no token in the answer", region)
	}
	d := out.AuthorizationData[0]
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(d.AuthorizationToken))
	if err != nil {
		return BasicAuth{}, fmt.Errorf("ecr:GetAuthorizationToken in %s: token is not base64: %w", region, err)
	}
	u, p, ok := strings.Cut(string(raw), ":")
	if !ok {
		return BasicAuth{}, fmt.Errorf("ecr:GetAuthorizationToken in %s: token is not user:password", region)
	}
	tok = ecrToken{auth: BasicAuth{Username: u, Password: p}, expires: aws.ToTime(d.ExpiresAt)}
	t.mu.Lock()
	t.tokens[region] = tok
	t.mu.Unlock()
	return tok.auth, nil
}
