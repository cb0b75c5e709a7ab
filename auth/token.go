package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/oauth2"
	"sigs.k8s.io/aws-iam-authenticator/pkg/token"
)

const (
	// tokenLifetime is how long the generator says a token lives: STS
	// accepts the presigned URL for 15 minutes, less a minute of cushion.
	tokenLifetime = 14 * time.Minute
	// refreshMargin is how long before its expiry a token, or the credentials
	// that signed it, is replaced.
	refreshMargin = time.Minute
	// credentialsWindow is how long before their expiry assumed-role
	// credentials are replaced: a token's lifetime plus a margin.
	credentialsWindow = tokenLifetime + 2*time.Minute
)

// TokenSource mints EKS bearer tokens (k8s-aws-v1.<presigned
// GetCallerIdentity URL>) with one STS client built once. It implements
// oauth2.TokenSource, so client-go's token-source transport caches the token
// and asks for a new one only when the Expiry set here has passed, or after a
// 401.
type TokenSource struct {
	cluster string
	sts     *sts.Client
	creds   aws.CredentialsProvider
	gen     token.Generator
	now     func() time.Time
}

// NewTokenSource returns a TokenSource for cluster signed with cfg's
// credentials through the regional STS endpoint of cfg.Region.
func NewTokenSource(cfg aws.Config, cluster string) (*TokenSource, error) {
	if cfg.Region == "" {
		return nil, fmt.Errorf("token for cluster %s: no region", cluster)
	}
	gen, err := token.NewGenerator(false, false)
	if err != nil {
		return nil, fmt.Errorf("token generator: %w", err)
	}
	return &TokenSource{
		cluster: cluster,
		sts:     sts.NewFromConfig(cfg),
		creds:   cfg.Credentials,
		gen:     gen,
		now:     time.Now,
	}, nil
}

// Prepare makes sure the signing credentials are at hand, bounded by ctx.
// Token takes no context (oauth2.TokenSource), so a caller with a deadline
// calls Prepare first: with credentials cached, minting is local.
func (s *TokenSource) Prepare(ctx context.Context) error {
	if s.creds == nil {
		return fmt.Errorf("no aws credentials")
	}
	if _, err := s.creds.Retrieve(ctx); err != nil {
		return fmt.Errorf("retrieve aws credentials: %w", err)
	}
	return nil
}

// Token mints a token. Its Expiry is a minute before the earlier of the
// token's own expiry and the signing credentials' expiry, since a token
// signed by an assumed-role session dies with that session.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	if s.creds == nil {
		return nil, fmt.Errorf("mint token for cluster %s: no aws credentials", s.cluster)
	}
	// Cached credentials make this a local call; see Prepare.
	creds, err := s.creds.Retrieve(context.Background())
	if err != nil {
		return nil, fmt.Errorf("mint token for cluster %s: retrieve aws credentials: %w", s.cluster, err)
	}
	now := s.now()
	tok, err := s.gen.GetWithSTS(s.cluster, s.sts)
	if err != nil {
		return nil, fmt.Errorf("mint token for cluster %s: %w", s.cluster, err)
	}
	return &oauth2.Token{
		AccessToken: tok.Token,
		TokenType:   "Bearer",
		Expiry:      expiry(now, tok.Expiration, creds),
	}, nil
}

// expiry is when a token minted at now must be replaced.
func expiry(now, tokenExpiry time.Time, creds aws.Credentials) time.Time {
	exp := now.Add(tokenLifetime)
	if !tokenExpiry.IsZero() && tokenExpiry.Before(exp) {
		exp = tokenExpiry
	}
	if creds.CanExpire && creds.Expires.Before(exp) {
		exp = creds.Expires
	}
	return exp.Add(-refreshMargin)
}
