package invoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

type counted struct {
	Action  string         `json:"action"`
	Results map[string]int `json:"-"`
}

func (c *counted) CountResults() map[string]int { return c.Results }

// answered is a response that answered a failure itself.
type answered struct{ code Code }

func (a *answered) FailureCode() Code { return a.code }

// TestAnsweredFailureCounted: a response that answered a failure itself
// (a CodePipeline job) is a failure in its record.
func TestAnsweredFailureCounted(t *testing.T) {
	buf := useMetrics(t, nil)
	if _, err := Finish(context.Background(), slog.New(slog.DiscardHandler), time.Now(), &answered{code: Forbidden}, nil,
		func(*answered) []any { return []any{"action", "codepipeline"} }); err != nil {
		t.Fatal(err)
	}
	recs := records(t, buf)
	if len(recs) != 1 || recs[0]["Failures"] != 1.0 || recs[0]["Errors.Forbidden"] != 1.0 || recs[0]["Action"] != "codepipeline" {
		t.Errorf("records %v, want one failure counted under Forbidden", recs)
	}
}

// useMetrics makes Finish write records to the returned buffer for this
// test. Not parallel: the writer is the process's.
func useMetrics(t *testing.T, env map[string]string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	m, err := MetricsFromEnv(func(k string) string { return env[k] }, &buf)
	if err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return time.UnixMilli(1796000000123) }
	ConfigureMetrics(m)
	t.Cleanup(func() { ConfigureMetrics(nil) })
	return &buf
}

func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if err := CheckEMF(line); err != nil {
			t.Errorf("record %s: %v", line, err)
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// values drops _aws and requestId: what a record measures.
func values(rec map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range rec {
		if k != "_aws" && k != "requestId" {
			out[k] = v
		}
	}
	return out
}

func TestFinishWritesMetrics(t *testing.T) {
	buf := useMetrics(t, map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "stack-lambda-eks"})
	log := slog.New(slog.DiscardHandler)
	ctx := lambdacontext.NewContext(withTally(context.Background()), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})

	// Work between records: two API requests (one through each of two
	// connections' transports), one token.
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	records(t, &bytes.Buffer{}) // nothing yet
	metrics.record(ctx, Invocation{Action: "warm-up"})
	buf.Reset()
	client := &http.Client{Transport: countRequests(http.DefaultTransport)}
	for range 2 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	if _, err := (countTokens{oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})}).Token(); err != nil {
		t.Fatal(err)
	}

	start := time.Now().Add(-1500 * time.Millisecond)
	resp := &counted{Action: "apply", Results: map[string]int{"created": 2, "unchanged": 1}}
	if _, err := Finish(ctx, log, start, resp, nil, func(r *counted) []any { return []any{"action", r.Action} }); err != nil {
		t.Fatal(err)
	}
	// A failure after the action was noted; no work in between.
	NoteAction(ctx, "scale")
	if _, err := Finish(ctx, log, start, (*counted)(nil), &Error{Code: Forbidden, Message: "no"}, func(*counted) []any { return nil }); err == nil {
		t.Fatal("Finish of an error returned none")
	}
	// A failure before any action was known.
	if _, err := Finish(withTally(context.Background()), log, start, (*counted)(nil), Invalid("bad"), func(*counted) []any { return nil }); err == nil {
		t.Fatal("Finish of an error returned none")
	}

	recs := records(t, buf)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3:\n%s", len(recs), buf)
	}
	for i, rec := range recs {
		if d, _ := rec["Duration"].(float64); d < 1500 || d > 60000 {
			t.Errorf("record %d: Duration %v ms, want about 1500", i, rec["Duration"])
		}
		delete(rec, "Duration")
	}
	want := []map[string]any{
		{"Function": "stack-lambda-eks", "Action": "apply", "Invocations": 1.0, "Failures": 0.0, "APIRequests": 2.0,
			"TokensMinted": 1.0, "Objects.created": 2.0, "Objects.unchanged": 1.0},
		{"Function": "stack-lambda-eks", "Action": "scale", "Invocations": 1.0, "Failures": 1.0, "APIRequests": 0.0,
			"TokensMinted": 0.0, "Errors.Forbidden": 1.0},
		{"Function": "stack-lambda-eks", "Action": UnknownAction, "Invocations": 1.0, "Failures": 1.0, "APIRequests": 0.0,
			"TokensMinted": 0.0, "Errors.InvalidEvent": 1.0},
	}
	for i := range want {
		if diff := cmp.Diff(want[i], values(recs[i])); diff != "" {
			t.Errorf("record %d (-want +got):\n%s", i, diff)
		}
	}
	if recs[0]["requestId"] != "req-1" {
		t.Errorf("requestId %v, want req-1", recs[0]["requestId"])
	}
	wantAWS := map[string]any{
		"Timestamp": 1796000000123.0,
		"CloudWatchMetrics": []any{
			map[string]any{"Namespace": "lambda-eks", "Dimensions": []any{[]any{"Function"}},
				"Metrics": []any{map[string]any{"Name": "Failures", "Unit": "Count"}}},
			map[string]any{"Namespace": "lambda-eks", "Dimensions": []any{[]any{"Function", "Action"}},
				"Metrics": []any{
					map[string]any{"Name": "Invocations", "Unit": "Count"}, map[string]any{"Name": "Failures", "Unit": "Count"},
					map[string]any{"Name": "Duration", "Unit": "Milliseconds"}, map[string]any{"Name": "APIRequests", "Unit": "Count"},
					map[string]any{"Name": "TokensMinted", "Unit": "Count"}, map[string]any{"Name": "Objects.created", "Unit": "Count"},
					map[string]any{"Name": "Objects.unchanged", "Unit": "Count"},
				}},
		},
	}
	if diff := cmp.Diff(wantAWS, recs[0]["_aws"]); diff != "" {
		t.Errorf("_aws (-want +got):\n%s", diff)
	}
}

// TestMetricsBounded: however many results an invocation has, its record
// keeps to 100 metrics per directive and still counts the error.
func TestMetricsBounded(t *testing.T) {
	var buf bytes.Buffer
	m := &Metrics{w: &buf, function: "f", now: time.Now}
	results := map[string]int{}
	for i := range 300 {
		results[fmt.Sprintf("r%03d", i)] = i
	}
	m.record(context.Background(), Invocation{Action: "apply", Results: results, Code: Conflict})
	line := bytes.TrimSpace(buf.Bytes())
	if err := CheckEMF(line); err != nil {
		t.Fatalf("%v\n%.300s", err, line)
	}
	if !bytes.Contains(line, []byte(`"Errors.Conflict":1`)) {
		t.Errorf("the error is not counted: %.300s", line)
	}
}

func TestMetricsFromEnv(t *testing.T) {
	for _, tc := range []struct {
		value   string
		on      bool
		wantErr string
	}{
		{"", true, ""}, {"on", true, ""}, {"off", false, ""}, {"yes", false, `METRICS "yes"`},
	} {
		m, err := MetricsFromEnv(func(k string) string { return map[string]string{"METRICS": tc.value}[k] }, &bytes.Buffer{})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("METRICS=%q: error %v, want %q", tc.value, err, tc.wantErr)
			}
			continue
		}
		if err != nil || (m != nil) != tc.on {
			t.Errorf("METRICS=%q: %v, %v; want on=%v", tc.value, m, err, tc.on)
		}
	}
	// Off: Finish writes nothing.
	var buf bytes.Buffer
	m, _ := MetricsFromEnv(func(k string) string { return map[string]string{"METRICS": "off"}[k] }, &buf)
	ConfigureMetrics(m)
	t.Cleanup(func() { ConfigureMetrics(nil) })
	if _, err := Finish(context.Background(), slog.New(slog.DiscardHandler), time.Now(), &counted{Action: "apply"}, nil,
		func(r *counted) []any { return []any{"action", r.Action} }); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("METRICS=off wrote %s", buf.Bytes())
	}
}

// TestCheckEMF: each of CloudWatch's rules the check enforces refuses a
// record that breaks it, and only that record.
func TestCheckEMF(t *testing.T) {
	t.Parallel()
	valid := func() map[string]any {
		return map[string]any{
			"_aws": map[string]any{"Timestamp": 1796000000123, "CloudWatchMetrics": []any{map[string]any{
				"Namespace": "lambda-eks", "Dimensions": []any{[]any{"Function", "Action"}},
				"Metrics": []any{map[string]any{"Name": "Invocations", "Unit": "Count"}, map[string]any{"Name": "Duration", "Unit": "Milliseconds"}},
			}}},
			"Function": "f", "Action": "apply", "Invocations": 1, "Duration": 12.5,
		}
	}
	directive := func(rec map[string]any) map[string]any {
		return rec["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
	}
	cases := []struct {
		name   string
		mutate func(map[string]any)
		want   string
	}{
		{"valid", func(map[string]any) {}, ""},
		{"no _aws", func(r map[string]any) { delete(r, "_aws") }, "no _aws"},
		{"timestamp in seconds", func(r map[string]any) { r["_aws"].(map[string]any)["Timestamp"] = 1796000000 }, "not milliseconds"},
		{"timestamp not an integer", func(r map[string]any) { r["_aws"].(map[string]any)["Timestamp"] = 1796000000123.5 }, "not an integer"},
		{"timestamp missing", func(r map[string]any) { delete(r["_aws"].(map[string]any), "Timestamp") }, "Timestamp missing"},
		{"no directives", func(r map[string]any) { r["_aws"].(map[string]any)["CloudWatchMetrics"] = []any{} }, "empty"},
		{"no namespace", func(r map[string]any) { delete(directive(r), "Namespace") }, "Namespace"},
		{"dimension not a member", func(r map[string]any) { delete(r, "Action") }, "dimension Action"},
		{"dimension not a string", func(r map[string]any) { r["Function"] = 3 }, "dimension Function"},
		{"31 dimensions", func(r map[string]any) {
			set := []any{}
			for i := range 31 {
				r[fmt.Sprintf("D%d", i)] = "v"
				set = append(set, fmt.Sprintf("D%d", i))
			}
			directive(r)["Dimensions"] = []any{set}
		}, "at most 30"},
		{"metric not a member", func(r map[string]any) { delete(r, "Duration") }, "metric Duration: no top-level member"},
		{"metric not a number", func(r map[string]any) { r["Duration"] = "12" }, "neither a number"},
		{"unit not CloudWatch's", func(r map[string]any) {
			directive(r)["Metrics"].([]any)[1].(map[string]any)["Unit"] = "ms"
		}, `unit "ms"`},
		{"101 metrics", func(r map[string]any) {
			ms := []any{}
			for i := range 101 {
				r[fmt.Sprintf("M%d", i)] = i
				ms = append(ms, map[string]any{"Name": fmt.Sprintf("M%d", i), "Unit": "Count"})
			}
			directive(r)["Metrics"] = ms
		}, "101 metrics"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := valid()
			tc.mutate(rec)
			line, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckEMF(line)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("valid record refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckEMF = %v, want an error with %q", err, tc.want)
			}
		})
	}
}
