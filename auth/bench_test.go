package auth

import (
	"testing"

	"k8s.io/client-go/transport"
)

// BenchmarkTokenCold mints a token with a new TokenSource each time: the cost
// a process pays when it builds everything per call.
func BenchmarkTokenCold(b *testing.B) {
	cfg := testConfig("us-east-1", staticCreds)
	for b.Loop() {
		ts, err := NewTokenSource(cfg, "demo")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenMint mints with one TokenSource built once: the cost of a
// re-mint near expiry.
func BenchmarkTokenMint(b *testing.B) {
	ts, err := NewTokenSource(testConfig("us-east-1", staticCreds), "demo")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenCached is what a warm invocation pays: client-go's cache
// returns the token minted earlier.
func BenchmarkTokenCached(b *testing.B) {
	ts, err := NewTokenSource(testConfig("us-east-1", staticCreds), "demo")
	if err != nil {
		b.Fatal(err)
	}
	cached := transport.NewCachedTokenSource(ts)
	if _, err := cached.Token(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := cached.Token(); err != nil {
			b.Fatal(err)
		}
	}
}
