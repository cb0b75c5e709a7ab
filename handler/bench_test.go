package handler

import (
	"context"
	"testing"
)

// BenchmarkWarmInvoke is a warm ensure-nginx invocation: decode, validate,
// cached connection, one apply against client-go's dynamic fake.
func BenchmarkWarmInvoke(b *testing.B) {
	connects := 0
	h := New(testConfig, fakeConnector(newFakeDynamic(), &connects), discardLogger())
	ctx := context.Background()
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
