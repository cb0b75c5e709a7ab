package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// simClock is a clock the test moves; the fake STS reads it from its own
// goroutine.
type simClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *simClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestRoleChainingWithoutSTSStorm runs a warm function with a target role
// for three hours of simulated time: an invocation every 30 s, each one
// Prepare and three API requests through a token cache that behaves as
// client-go's (a new token only once the last one's Expiry has passed).
// The role must be assumed once, then again only near the session's end,
// always in Prepare and never in Token; no request may carry a token whose
// session has ended. Also when the role allows only 15-minute sessions.
//
// The simulated clock runs six hours behind the real one, so that the SDK's
// credentials cache, which reads the real clock, never keeps a session
// alive that the token source's clock has seen end.
func TestRoleChainingWithoutSTSStorm(t *testing.T) {
	const (
		simulated  = 3 * time.Hour
		interval   = 30 * time.Second
		perInvoke  = 3
		targetRole = "arn:aws:iam::210987654321:role/eks-ops"
	)
	tests := []struct {
		name        string
		maxDuration time.Duration // the role's MaxSessionDuration
		// At most, over the simulated time: one session per 43 minutes
		// (one-hour sessions renewed 17 minutes before their end) or per
		// 7.5 minutes (15-minute sessions renewed at half-life), plus the
		// first and the refused request; one token per 13 minutes, or per
		// 6.5 minutes.
		wantAssumes, wantMints int
	}{
		{"role allows one-hour sessions", time.Hour, 1 + int(simulated/(43*time.Minute)), 1 + int(simulated/(13*time.Minute))},
		{"role allows 15-minute sessions", 15 * time.Minute, 2 + int(simulated/(7*time.Minute+30*time.Second)), 1 + int(simulated/(6*time.Minute+30*time.Second))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &simClock{t: time.Now().Add(-6 * time.Hour).Truncate(time.Second)}
			sts := newFakeSTS(t, tt.maxDuration, "", clock.now)
			cfg := ForTarget(sts.config(), Target{Cluster: "demo", Region: "us-east-1", RoleARN: targetRole, SessionName: "lambda-eks"})
			ts, err := NewTokenSource(cfg, "demo")
			if err != nil {
				t.Fatal(err)
			}
			ts.now = clock.now

			var (
				tok          *oauth2.Token
				mints        int
				requests     int
				inToken      int // AssumeRole calls made while minting
				deadSessions int // requests whose token's session had ended
			)
			for end := clock.now().Add(simulated); clock.now().Before(end); clock.advance(interval) {
				if err := ts.Prepare(context.Background()); err != nil {
					t.Fatalf("prepare at %s: %v", clock.now().Format(time.TimeOnly), err)
				}
				for range perInvoke {
					requests++
					if tok == nil || !clock.now().Before(tok.Expiry) {
						before, _ := sts.counts()
						if tok, err = ts.Token(); err != nil {
							t.Fatalf("mint at %s: %v", clock.now().Format(time.TimeOnly), err)
						}
						after, _ := sts.counts()
						inToken += after - before
						mints++
					}
					key := accessKeyOf(decodeToken(t, tok.AccessToken).Query().Get("X-Amz-Credential"))
					if end, ok := sts.sessionEnd(key); !ok || !clock.now().Before(end) {
						deadSessions++
					}
				}
			}
			assumes, refused := sts.counts()
			t.Logf("%d requests in %d invocations: %d tokens minted, %d AssumeRole calls (%d refused for their duration)",
				requests, requests/perInvoke, mints, assumes, refused)
			if assumes > tt.wantAssumes {
				t.Errorf("AssumeRole called %d times, want at most %d", assumes, tt.wantAssumes)
			}
			if mints > tt.wantMints {
				t.Errorf("%d tokens minted, want at most %d", mints, tt.wantMints)
			}
			if inToken > 0 {
				t.Errorf("Token called AssumeRole %d times, want 0 (only Prepare, under the invocation's context)", inToken)
			}
			if deadSessions > 0 {
				t.Errorf("%d requests carried a token whose session had ended", deadSessions)
			}
		})
	}
}

// TestPrepareKeepsSessionWhenRenewalFails: a session due for renewal whose
// renewal fails is kept while it outlives the invocation (no deadline: the
// longest one), and the failure is returned once it does not.
func TestPrepareKeepsSessionWhenRenewalFails(t *testing.T) {
	clock := &simClock{t: time.Now().Truncate(time.Second)}
	sts := newFakeSTS(t, time.Hour, "", clock.now)
	cfg := ForTarget(sts.config(), Target{Cluster: "demo", Region: "us-east-1", RoleARN: "arn:aws:iam::210987654321:role/eks-ops"})
	ts, err := NewTokenSource(cfg, "demo")
	if err != nil {
		t.Fatal(err)
	}
	ts.now = clock.now
	ctx := context.Background()
	if err := ts.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	sts.denyAll()
	clock.advance(43*time.Minute + 30*time.Second) // 16.5 minutes left: due, still outlives an invocation
	if err := ts.Prepare(ctx); err != nil {
		t.Errorf("prepare with 16.5 minutes of session left and renewal refused: %v, want the session kept", err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if key := accessKeyOf(decodeToken(t, tok.AccessToken).Query().Get("X-Amz-Credential")); key != "ASIASESSION000000001" {
		t.Errorf("token signed by %s, want the first session's key", key)
	}
	clock.advance(6 * time.Minute) // 10.5 minutes left: too few for an invocation
	var denied *AssumeRoleError
	if err := ts.Prepare(ctx); !errors.As(err, &denied) {
		t.Errorf("prepare with 10.5 minutes left and renewal refused: %v, want the *AssumeRoleError", err)
	}
	if assumes, _ := sts.counts(); assumes != 3 {
		t.Errorf("AssumeRole called %d times, want 3 (the first, two refused renewals)", assumes)
	}
}
