package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	// maxInvocation is the longest a Lambda invocation runs.
	maxInvocation = 15 * time.Minute
	// credentialsWindow is how long before their end Prepare renews session
	// credentials: the session held at the start of an invocation then
	// outlives the longest invocation, and every token minted during it (so
	// Token never needs the network), by more than refreshMargin. A one-hour
	// session is renewed once in 43 minutes; a shorter one at half its
	// length (see TokenSource.window), never on every call.
	credentialsWindow = maxInvocation + 2*refreshMargin
)

// TokenSource mints EKS bearer tokens (k8s-aws-v1.<presigned
// GetCallerIdentity URL>) with one STS client built once. It implements
// oauth2.TokenSource, so client-go's token-source transport caches the token
// and asks for a new one only when the Expiry set here has passed, or after a
// 401.
//
// Prepare, called with each invocation's context, fetches or renews the
// signing credentials; Token, which has no context, only signs with what
// Prepare fetched and never calls AWS.
type TokenSource struct {
	cluster string
	sts     *sts.Client // signs with the held credentials
	creds   aws.CredentialsProvider
	gen     token.Generator
	now     func() time.Time

	mu sync.Mutex
	// held are the credentials Prepare fetched last; fetched says whether
	// there are any.
	held    aws.Credentials
	fetched bool
	// lifetime is the longest validity seen on fetched credentials that
	// expire: the session length, as near as it can be known.
	lifetime time.Duration
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
	s := &TokenSource{cluster: cluster, creds: cfg.Credentials, gen: gen, now: time.Now}
	s.sts = sts.NewFromConfig(cfg, func(o *sts.Options) { o.Credentials = aws.CredentialsProviderFunc(s.signing) })
	return s, nil
}

// Prepare makes sure signing credentials are at hand that outlive this
// invocation and the tokens minted during it, bounded by ctx: the first call
// fetches them (for a target role, assumes it), later calls renew a session
// only once it has less than its window left. If renewing fails while the
// session held still outlives this invocation, it keeps that one and tries
// again on the next call.
func (s *TokenSource) Prepare(ctx context.Context) error {
	if s.creds == nil {
		return fmt.Errorf("no aws credentials")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.fetched && !s.due(now) {
		return nil
	}
	if cache, ok := s.creds.(interface{ Invalidate() }); ok && s.fetched {
		// The cache would hand back the session being replaced.
		cache.Invalidate()
	}
	creds, err := s.creds.Retrieve(ctx)
	if err != nil {
		if s.fetched && ctx.Err() == nil && s.outlives(ctx, now) {
			return nil
		}
		return fmt.Errorf("retrieve aws credentials: %w", unwrapCache(err))
	}
	s.held, s.fetched = creds, true
	if creds.CanExpire {
		s.lifetime = max(s.lifetime, creds.Expires.Sub(now))
	}
	return nil
}

// unwrapCache drops the credentials cache's "failed to refresh cached
// credentials" from a typed error of the provider.
func unwrapCache(err error) error {
	var endpointErr *EndpointError
	var assumeErr *AssumeRoleError
	switch {
	case errors.As(err, &endpointErr):
		return endpointErr
	case errors.As(err, &assumeErr):
		return assumeErr
	}
	return err
}

// due says whether the held session is to be renewed.
func (s *TokenSource) due(now time.Time) bool {
	return s.held.CanExpire && s.held.Expires.Sub(now) < s.window()
}

// window is how long before its end a session is renewed:
// credentialsWindow, or half the session for one shorter than twice that,
// so that a new session is never already due.
func (s *TokenSource) window() time.Duration {
	return min(credentialsWindow, s.lifetime/2)
}

// outlives says whether the held session lasts past ctx's deadline (or the
// longest invocation) by more than refreshMargin.
func (s *TokenSource) outlives(ctx context.Context, now time.Time) bool {
	end := now.Add(maxInvocation)
	if deadline, ok := ctx.Deadline(); ok {
		end = deadline
	}
	return s.held.Expires.After(end.Add(refreshMargin))
}

// signing returns the credentials tokens are signed with: those Prepare
// fetched, or, for a caller that never called Prepare, whatever the
// provider has.
func (s *TokenSource) signing(ctx context.Context) (aws.Credentials, error) {
	s.mu.Lock()
	held, fetched := s.held, s.fetched
	s.mu.Unlock()
	if fetched {
		return held, nil
	}
	if s.creds == nil {
		return aws.Credentials{}, fmt.Errorf("no aws credentials")
	}
	return s.creds.Retrieve(ctx)
}

// Token mints a token. Its Expiry is a minute before the earlier of the
// token's own expiry and the signing credentials' expiry, since a token
// signed by an assumed-role session dies with that session.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	creds, err := s.signing(context.Background())
	if err != nil {
		return nil, fmt.Errorf("mint token for cluster %s: retrieve aws credentials: %w", s.cluster, err)
	}
	now := s.now()
	if creds.CanExpire && !creds.Expires.After(now) {
		// Only an invocation that outlasts the role's session gets here.
		return nil, fmt.Errorf("mint token for cluster %s: the signing role session ended at %s, during the invocation",
			s.cluster, creds.Expires.UTC().Format(time.RFC3339))
	}
	tok, err := s.gen.GetWithSTS(s.cluster, s.sts)
	if err != nil {
		return nil, fmt.Errorf("mint token for cluster %s: %w", s.cluster, err)
	}
	return &oauth2.Token{
		AccessToken: tok.Token,
		TokenType:   "Bearer",
		Expiry:      expiry(now, creds),
	}, nil
}

// expiry is when a token minted at now with creds must be replaced: a
// minute before the earlier of its own end and the session's. The
// generator's own Expiration is its clock's now plus tokenLifetime; this
// one keeps to the source's clock.
func expiry(now time.Time, creds aws.Credentials) time.Time {
	end := now.Add(tokenLifetime)
	if creds.CanExpire && creds.Expires.Before(end) {
		end = creds.Expires
	}
	if exp := end.Add(-refreshMargin); exp.After(now) {
		return exp
	}
	// A session in its last minute: a token minted now would be due at
	// once, and one per request would follow. Keep it until the session ends.
	return end
}
