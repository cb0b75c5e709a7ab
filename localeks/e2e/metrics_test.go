package e2e

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	lambdainvoke "github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
)

// emfRecords returns the function's EMF records so far (the log lines
// with an _aws member), waiting up to 5 s for want of them: the function
// writes a record after its answer.
func emfRecords(tb testing.TB, fn *lambdart.Function, want int) [][]byte {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var recs [][]byte
		for _, line := range bytes.Split(fn.Logs(), []byte("\n")) {
			if i := bytes.IndexByte(line, '{'); i >= 0 && bytes.Contains(line, []byte(`"_aws"`)) {
				recs = append(recs, line[i:])
			}
		}
		if len(recs) >= want || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMetricsRecords: the built bootstrap writes one CloudWatch EMF record
// per invocation to its log stream, each valid by CloudWatch's format rules
// (lambdainvoke.CheckEMF, the unit tests' check), and a warm ensure-nginx's record
// says what README's warm claim says: one API request, no token minted, the
// Deployment unchanged. A failure counts under its action and error code.
func TestMetricsRecords(t *testing.T) {
	if h == nil {
		t.Skip("-short: no local EKS replica")
	}
	t.Parallel()
	fn := h.startFunction(t, fnOptions{})
	name := "emf-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })

	mustSucceed(t, fn, `{"action":"ensure-nginx","name":"`+name+`"}`) // cold: created
	// The steady state of a warm function: past the seconds after its own
	// last change, in which an apply is preconditioned (kube.Apply).
	h.settleDeployment(t, "default", name)
	mustSucceed(t, fn, `{"action":"ensure-nginx","name":"`+name+`"}`) // warm: unchanged, one request
	_ = mustFail(t, fn, `{"action":"scale","name":"`+name+`-absent","replicas":1}`, "NotFound")
	_ = mustFail(t, fn, `{"action":"nope"}`, "InvalidEvent")

	lines := emfRecords(t, fn, 4)
	if len(lines) != 4 {
		t.Fatalf("%d EMF records, want 4 (one per invocation):\n%s", len(lines), bytes.Join(lines, []byte("\n")))
	}
	recs := make([]map[string]any, len(lines))
	for i, line := range lines {
		if err := lambdainvoke.CheckEMF(line); err != nil {
			t.Errorf("record %d is not CloudWatch EMF: %v\n%s", i, err, line)
		}
		if err := json.Unmarshal(line, &recs[i]); err != nil {
			t.Fatal(err)
		}
		if d, _ := recs[i]["Duration"].(float64); d <= 0 {
			t.Errorf("record %d: Duration %v", i, recs[i]["Duration"])
		}
		if id, _ := recs[i]["requestId"].(string); id == "" {
			t.Errorf("record %d has no requestId", i)
		}
		if recs[i]["Function"] != "lambda-eks" { // AWS_LAMBDA_FUNCTION_NAME under the emulator
			t.Errorf("record %d: Function %v, want the emulator's function name", i, recs[i]["Function"])
		}
	}
	if n, _ := recs[0]["APIRequests"].(float64); n < 1 {
		t.Errorf("cold record: APIRequests %v, want at least 1", recs[0]["APIRequests"])
	}
	if recs[0]["TokensMinted"] != 1.0 || recs[0]["Objects.created"] != 1.0 {
		t.Errorf("cold record: TokensMinted %v, Objects.created %v, want 1 and 1", recs[0]["TokensMinted"], recs[0]["Objects.created"])
	}
	pick := func(rec map[string]any, keys ...string) map[string]any {
		out := map[string]any{}
		for _, k := range keys {
			if v, ok := rec[k]; ok {
				out[k] = v
			}
		}
		return out
	}
	keys := []string{"Action", "Invocations", "Failures", "APIRequests", "TokensMinted",
		"Objects.created", "Objects.unchanged", "Errors.NotFound", "Errors.InvalidEvent"}
	want := []map[string]any{
		{"Action": "ensure-nginx", "Invocations": 1.0, "Failures": 0.0, "APIRequests": 1.0, "TokensMinted": 0.0, "Objects.unchanged": 1.0},
		{"Action": "scale", "Invocations": 1.0, "Failures": 1.0, "APIRequests": 1.0, "TokensMinted": 0.0, "Errors.NotFound": 1.0},
		{"Action": "unknown", "Invocations": 1.0, "Failures": 1.0, "APIRequests": 0.0, "TokensMinted": 0.0, "Errors.InvalidEvent": 1.0},
	}
	for i, w := range want {
		if diff := cmp.Diff(w, pick(recs[i+1], keys...)); diff != "" {
			t.Errorf("record of warm invocation %d (-want +got):\n%s", i+1, diff)
		}
	}
}
