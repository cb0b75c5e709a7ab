package auth

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	"k8s.io/client-go/transport"
)

func testConfig(region string, creds aws.CredentialsProvider) aws.Config {
	return aws.Config{Region: region, Credentials: creds}
}

var staticCreds = credentials.NewStaticCredentialsProvider("ASIAEXAMPLEEXAMPLE01", "secret", "session-token")

// expiringCreds returns session credentials that expire at exp.
type expiringCreds struct{ exp time.Time }

func (c expiringCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "ASIAEXAMPLEEXAMPLE02", SecretAccessKey: "s", SessionToken: "t",
		CanExpire: true, Expires: c.exp}, nil
}

// decodeToken checks the token's envelope and returns its presigned URL.
func decodeToken(tb testing.TB, tok string) *url.URL {
	tb.Helper()
	body, ok := strings.CutPrefix(tok, "k8s-aws-v1.")
	if !ok {
		tb.Fatalf("token %q lacks the k8s-aws-v1. prefix", tok[:min(len(tok), 16)])
	}
	if strings.ContainsAny(body, "=+/") {
		tb.Fatalf("token body is not unpadded base64url")
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		tb.Fatalf("decode token: %v", err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		tb.Fatalf("parse presigned URL: %v", err)
	}
	return u
}

func TestTokenShape(t *testing.T) {
	for _, region := range []string{"us-east-1", "eu-south-2", "ap-southeast-5"} {
		t.Run(region, func(t *testing.T) {
			ts, err := NewTokenSource(testConfig(region, staticCreds), "demo")
			if err != nil {
				t.Fatal(err)
			}
			tok, err := ts.Token()
			if err != nil {
				t.Fatal(err)
			}
			u := decodeToken(t, tok.AccessToken)
			q := u.Query()
			got := map[string]string{
				"scheme": u.Scheme,
				"host":   u.Host,
				"path":   u.Path,
				"action": q.Get("Action"),
				"algo":   q.Get("X-Amz-Algorithm"),
				"region": strings.Split(q.Get("X-Amz-Credential"), "/")[2],
			}
			want := map[string]string{
				"scheme": "https",
				"host":   "sts." + region + ".amazonaws.com",
				"path":   "/",
				"action": "GetCallerIdentity",
				"algo":   "AWS4-HMAC-SHA256",
				"region": region,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("presigned URL (-want +got):\n%s", diff)
			}
			signed := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
			if !contains(signed, "x-k8s-aws-id") || !contains(signed, "host") {
				t.Errorf("signed headers %v lack x-k8s-aws-id or host", signed)
			}
			if q.Get("X-Amz-Signature") == "" {
				t.Error("no signature")
			}
			if q.Get("X-Amz-Security-Token") != "session-token" {
				t.Error("session token not carried")
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestNewTokenSourceNeedsRegion(t *testing.T) {
	if _, err := NewTokenSource(testConfig("", staticCreds), "demo"); err == nil {
		t.Fatal("want an error for a config without region")
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		creds aws.Credentials
		want  time.Time
	}{
		{"static credentials: token lifetime less a minute", aws.Credentials{}, now.Add(13 * time.Minute)},
		{"session outlives token", aws.Credentials{CanExpire: true, Expires: now.Add(time.Hour)}, now.Add(13 * time.Minute)},
		{"session ends first", aws.Credentials{CanExpire: true, Expires: now.Add(5 * time.Minute)}, now.Add(4 * time.Minute)},
		{"session in its last minute: until it ends", aws.Credentials{CanExpire: true, Expires: now.Add(50 * time.Second)}, now.Add(50 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expiry(now, tt.creds); !got.Equal(tt.want) {
				t.Errorf("expiry = %v, want %v", got, tt.want)
			}
		})
	}
}

// countingSource counts mints of the wrapped TokenSource.
type countingSource struct {
	ts    *TokenSource
	mints atomic.Int32
}

func (c *countingSource) Token() (*oauth2.Token, error) {
	c.mints.Add(1)
	return c.ts.Token()
}

func TestTokenCachedUntilNearExpiry(t *testing.T) {
	realNow := time.Now()
	tests := []struct {
		name      string
		mintedAt  time.Time // the injected clock at minting
		credsExp  time.Time // zero: static credentials
		wantMints int32     // after two Token calls through the cache
	}{
		{"fresh token is reused", realNow, time.Time{}, 1},
		{"token minted 13.5 minutes ago is re-minted", realNow.Add(-13*time.Minute - 30*time.Second), time.Time{}, 2},
		{"token minted 12 minutes ago is reused", realNow.Add(-12 * time.Minute), time.Time{}, 1},
		{"session in its last minute: token kept, not re-minted per call", realNow, realNow.Add(50 * time.Second), 1},
		{"session expiring in 5 minutes allows reuse", realNow, realNow.Add(5 * time.Minute), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var creds aws.CredentialsProvider = staticCreds
			if !tt.credsExp.IsZero() {
				creds = expiringCreds{exp: tt.credsExp}
			}
			ts, err := NewTokenSource(testConfig("us-east-1", creds), "demo")
			if err != nil {
				t.Fatal(err)
			}
			ts.now = func() time.Time { return tt.mintedAt }
			src := &countingSource{ts: ts}
			cached := transport.NewCachedTokenSource(src)
			first, err := cached.Token()
			if err != nil {
				t.Fatal(err)
			}
			ts.now = time.Now
			second, err := cached.Token()
			if err != nil {
				t.Fatal(err)
			}
			if got := src.mints.Load(); got != tt.wantMints {
				t.Errorf("mints = %d, want %d", got, tt.wantMints)
			}
			if tt.wantMints == 1 && first != second {
				t.Error("the cache returned a different token without minting")
			}
		})
	}
}

func TestTokenReMintedAfter401(t *testing.T) {
	var calls atomic.Int32
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		// The token transport drops a token that a 401 answered only if it
		// was minted before that request: the second request here.
		if calls.Add(1) == 2 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	ts, err := NewTokenSource(testConfig("us-east-1", staticCreds), "demo")
	if err != nil {
		t.Fatal(err)
	}
	src := &countingSource{ts: ts}
	rt := transport.ResettableTokenSourceWrapTransport(transport.NewCachedTokenSource(src))(http.DefaultTransport)
	client := &http.Client{Transport: rt}
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		// Tokens minted in the same second are identical; a 401 must still
		// cause a new mint.
		time.Sleep(time.Millisecond)
	}
	if got := src.mints.Load(); got != 2 {
		t.Errorf("mints = %d, want 2 (one at start, one after the 401)", got)
	}
	if seen[1] == "" || seen[0] != seen[1] {
		t.Error("the second request did not reuse the cached token")
	}
	for i, h := range seen {
		if !strings.HasPrefix(h, "Bearer k8s-aws-v1.") {
			t.Errorf("request %d: Authorization is not a bearer EKS token", i)
		}
	}
}

func TestPrepareBoundedByContext(t *testing.T) {
	ts, err := NewTokenSource(testConfig("us-east-1", aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
		<-ctx.Done()
		return aws.Credentials{}, ctx.Err()
	})), "demo")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ts.Prepare(ctx); err == nil {
		t.Fatal("Prepare returned no error for a credential source that never answers")
	}
}
