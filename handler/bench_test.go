package handler

import (
	"testing"
)

// BenchmarkWarmInvoke is a warm ensure-nginx invocation: decode, validate,
// cached connection, one apply over loopback TLS to the fake API server.
func BenchmarkWarmInvoke(b *testing.B) {
	api := newFakeAPI(b)
	h := New(testConfig, api.connector(), discardLogger())
	ctx := b.Context()
	ev := []byte(`{"action":"ensure-nginx"}`)
	if _, err := h.Invoke(ctx, ev); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Invoke(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}
