package coldstart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
)

const mib = 1 << 20

// maxPeakRSS is the bound on the main bootstrap's peak resident memory
// after the largest events, in a 128 MB function: a margin of 32 MiB for
// what this test does not send.
const maxPeakRSS = 96 * mib

// manifestEvent is an apply of manifest, encoded as a client would
// (without HTML escaping: the largest manifest that fits 6 MiB).
func manifestEvent(manifest string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(map[string]any{"action": "apply", "manifest": manifest})
	return bytes.TrimSpace(buf.Bytes())
}

func configMapWith(data string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n" + data
}

// largeEvents are the largest events of each shape the function accepts or
// refuses: the shapes that drove its peak (one 5 MiB value, '<' that JSON
// escapes to 6 bytes, many small nodes, many documents) and the ones it
// refuses (too many separators, oversized names and payloads, nesting).
func largeEvents() []struct {
	name  string
	event []byte
} {
	var keys, ints, docs strings.Builder
	for i := 0; keys.Len() < 5*mib; i++ {
		fmt.Fprintf(&keys, "  k%d: v\n", i)
	}
	ints.WriteString("[")
	for ints.Len() < 5*mib {
		ints.WriteString("1,")
	}
	ints.WriteString("1]")
	for i := range 500 {
		fmt.Fprintf(&docs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%d}\ndata: {k: %s}\n", i, strings.Repeat("x", 10<<10))
	}
	var underBound strings.Builder // just under the 250,000 separators refused
	for i := range 124_990 {
		fmt.Fprintf(&underBound, "  k%d: v\n", i)
	}
	event := func(m map[string]any) []byte { b, _ := json.Marshal(m); return b }
	return []struct {
		name  string
		event []byte
	}{
		{"ensure-nginx", []byte(`{"action":"ensure-nginx"}`)},
		{"manifest: one 5 MiB YAML scalar", manifestEvent(configMapWith("  k: " + strings.Repeat("x", 5*mib) + "\n"))},
		{"manifest: one 5 MiB YAML scalar of '<'", manifestEvent(configMapWith("  k: \"" + strings.Repeat("<", 5*mib) + "\"\n"))},
		{"manifest: 1.4 MiB of '<' (the largest object etcd keeps; 6x in JSON answers)", manifestEvent(configMapWith("  k: \"" + strings.Repeat("<", 1400<<10) + "\"\n"))},
		{"manifest: one 5 MiB YAML scalar of é", manifestEvent(configMapWith("  k: " + strings.Repeat("é", 5*mib/2) + "\n"))},
		{"manifest: one 5 MiB JSON string", manifestEvent(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"` + strings.Repeat("x", 5*mib) + `"}}`)},
		{"manifest: 5 MiB of small keys (refused: separators)", manifestEvent(configMapWith(keys.String()))},
		{"manifest: 249,980 separators of small keys", manifestEvent(configMapWith(underBound.String()))},
		{"manifest: 5 MiB flow list of ints (refused: separators)", manifestEvent(configMapWith("x: " + ints.String() + "\n"))},
		{"manifest: 500 documents of 10 KiB", manifestEvent(docs.String())},
		{"name of 1 MiB (refused)", event(map[string]any{"action": "ensure-nginx", "name": strings.Repeat("a", mib)})},
		{"image of 5 MiB (refused)", event(map[string]any{"action": "ensure-nginx", "image": strings.Repeat("i", 5*mib)})},
		{"6 MiB unknown field (refused)", []byte(`{"junk":"` + strings.Repeat("x", 6*mib-20) + `"}`)},
		{"6 MiB of nested arrays (refused)", []byte(strings.Repeat("[", 3*mib) + strings.Repeat("]", 3*mib))},
		{"manifest: 4 MiB of nested arrays (refused)", manifestEvent(strings.Repeat("[", 2*mib) + strings.Repeat("]", 2*mib))},
	}
}

// TestPeakRSS sends the largest events, twice each, to one warm main
// bootstrap under aws-lambda-rie (LOCALEKS_RIE; localeks/parts/build.sh
// builds it) against the fake cluster, and checks its peak resident memory
// (VmHWM) stays under maxPeakRSS. It logs the peak after each event.
func TestPeakRSS(t *testing.T) {
	if os.Getenv(lambdart.RIEVar) == "" {
		t.Skipf("set %s to aws-lambda-rie (localeks/parts/build.sh builds it)", lambdart.RIEVar)
	}
	cluster := newFakeCluster(t)
	fn, err := lambdart.Start(context.Background(), bootstrap(t, "main"), lambdaEnv(cluster.env()...), 60*time.Second, lambdart.WithMemory(128))
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Stop()
	ctx := context.Background()
	for _, e := range largeEvents() {
		var answer string
		for range 2 {
			resp, fnErr, err := fn.Invoke(ctx, e.event)
			switch {
			case err != nil:
				t.Fatalf("%s: %v", e.name, err)
			case fnErr != nil:
				answer = fnErr.Type + ": " + fnErr.Message
			default:
				answer = string(resp)
			}
		}
		hwm, err := vmHWM(fn.PID())
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		t.Logf("%-80s %5.1f MiB event  peak RSS %5.1f MiB  %.100s", e.name, float64(len(e.event))/mib, float64(hwm)/mib, answer)
		if strings.Contains(e.name, "refused") && len(answer) > 4096 {
			t.Errorf("%s: a refusal of %d bytes", e.name, len(answer))
		}
	}
	hwm, err := vmHWM(fn.PID())
	if err != nil {
		t.Fatal(err)
	}
	if hwm > maxPeakRSS {
		t.Errorf("peak RSS %.1f MiB: over %d MiB", float64(hwm)/mib, maxPeakRSS/mib)
	}
}

// vmHWM is pid's peak resident memory in bytes.
func vmHWM(pid int) (int, error) {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status") //nolint:gosec // G304: /proc
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
