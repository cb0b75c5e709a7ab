package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// Issue 8 §7: the largest event Lambda accepts (6 MiB), a manifest of 1,000
// ConfigMaps, applies within the memory of a 128 MB function.
func TestLargestManifestFitsTheFunction(t *testing.T) {
	h := mustHarness(t)
	ns := "large-" + runID()
	h.mustNamespace(t, ns)
	t.Cleanup(func() { h.dropNamespace(t, ns) })
	h.grantCluster(t, "")
	fn := h.startFunction(t, fnOptions{env: []string{"MAX_DOCUMENTS=1000", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128"}})
	var m strings.Builder
	value := strings.Repeat("x", 5600)
	for i := range 1000 {
		fmt.Fprintf(&m, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%04d}\ndata: {v: %s}\n---\n", i, value)
	}
	ev := event(t, map[string]any{"action": "apply", "namespace": ns, "manifest": m.String()})
	if len(ev) > 6<<20 {
		t.Fatalf("event of %d bytes: over Lambda's 6 MiB", len(ev))
	}
	r := mustManage(t, fn, ev)
	if len(r.Objects) != 1000 {
		t.Fatalf("%d objects, want 1000", len(r.Objects))
	}
	kib, err := peakRSS(fn.PID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("event %d bytes: peak RSS %d KiB", len(ev), kib)
	if kib > 128*1000 {
		t.Errorf("peak RSS %d KiB: over the 128 MB the template gives the function", kib)
	}
}
