package handler

import (
	"context"
	"encoding/json"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkWarmInvoke is a warm ensure-nginx invocation: decode, validate,
// cached connection, one apply against client-go's fake clientset.
func BenchmarkWarmInvoke(b *testing.B) {
	connects := 0
	h := New(testConfig, fakeConnector(fake.NewClientset(), &connects), discardLogger())
	ctx := context.Background()
	ev := json.RawMessage(`{"action":"ensure-nginx"}`)
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
