package invoke

// CloudWatch Embedded Metric Format (EMF) records, written to the
// function's log stream (stdout) once per invocation by Finish. Lambda's
// log pipeline turns them into metrics: no API call, no added latency, no
// permission beyond the logs the role already writes. The format is
// CloudWatch's, written here to the specification
// https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
// rather than with a library: the records are small and fixed, and AWS's
// Go client for EMF is not maintained.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"golang.org/x/oauth2"
)

// MetricsNamespace is the CloudWatch namespace of the functions' metrics.
const MetricsNamespace = "lambda-eks"

// The metrics of every record. Objects.<result> (Count) and
// Errors.<code> (Count) are added as the invocation had them.
const (
	MetricInvocations  = "Invocations"  // 1
	MetricFailures     = "Failures"     // 1 when the invocation failed, else 0
	MetricDuration     = "Duration"     // Milliseconds
	MetricAPIRequests  = "APIRequests"  // requests sent to Kubernetes API servers, client-go's retries included
	MetricTokensMinted = "TokensMinted" // EKS bearer tokens minted (presigned, no call)
)

// Dimension names. Each dimension set multiplies the metrics CloudWatch
// bills, so there are two: Failures by Function (what the template's alarm
// watches), and everything by Function and Action.
const (
	DimensionFunction = "Function"
	DimensionAction   = "Action"
)

// UnknownAction is the Action of an invocation that failed before its
// action was known (an event that does not decode).
const UnknownAction = "unknown"

// Counts of work done by this process, read by each record as the
// difference from the previous one: Lambda runs one invocation at a time
// per execution environment, so that difference is the invocation's (the
// first one's includes its cold start).
var (
	apiRequests  atomic.Int64
	tokensMinted atomic.Int64
)

// countRequests counts every request sent through rt.
func countRequests(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		apiRequests.Add(1)
		return rt.RoundTrip(r)
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countTokens counts the tokens ts mints. client-go's cached token source
// asks for one only when the cached token nears its expiry or after a 401.
type countTokens struct{ ts oauth2.TokenSource }

func (c countTokens) Token() (*oauth2.Token, error) {
	tok, err := c.ts.Token()
	if err == nil {
		tokensMinted.Add(1)
	}
	return tok, err
}

// Metrics writes the EMF records. The zero value writes nothing.
type Metrics struct {
	w        io.Writer
	function string
	now      func() time.Time

	mu                     sync.Mutex
	lastRequests, lastMint int64
}

// metrics is the process's writer, set once by Main (ConfigureMetrics);
// nil (tests, METRICS=off) writes nothing.
var metrics *Metrics

// MetricsFromEnv returns the writer METRICS asks for: records to w unless
// METRICS is "off" ("on" and empty are on), or an error naming a bad
// value. The Function dimension is AWS_LAMBDA_FUNCTION_NAME.
func MetricsFromEnv(getenv func(string) string, w io.Writer) (*Metrics, error) {
	switch v := getenv("METRICS"); v {
	case "", "on":
		return &Metrics{w: w, function: Or(getenv("AWS_LAMBDA_FUNCTION_NAME"), "lambda-eks"), now: time.Now}, nil
	case "off":
		return nil, nil
	default:
		return nil, fmt.Errorf("environment: METRICS %q is neither on nor off", v)
	}
}

// ConfigureMetrics makes m (nil for none) the writer Finish uses.
func ConfigureMetrics(m *Metrics) { metrics = m }

// tally is what an invocation tells its record before Finish: the action,
// once the event says it.
type tally struct {
	mu     sync.Mutex
	action string
}

type tallyKey struct{}

// withTally returns ctx carrying a tally for NoteAction (Main's handler
// gives every invocation one).
func withTally(ctx context.Context) context.Context {
	return context.WithValue(ctx, tallyKey{}, &tally{})
}

// NoteAction records the invocation's action for its metrics record, so
// that a failure is counted under its action too.
func NoteAction(ctx context.Context, action string) {
	if t, ok := ctx.Value(tallyKey{}).(*tally); ok {
		t.mu.Lock()
		t.action = action
		t.mu.Unlock()
	}
}

func notedAction(ctx context.Context) string {
	if t, ok := ctx.Value(tallyKey{}).(*tally); ok {
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.action
	}
	return ""
}

// ResultCounter is a response that counts what its invocation did by
// result (created, configured, unchanged, deleted, scaled, deployed, ...),
// for the Objects.<result> metrics.
type ResultCounter interface {
	CountResults() map[string]int
}

// Outcome is a response that reports a failure it answered for itself (a
// CodePipeline job answered with PutJobFailureResult): the invocation
// succeeds, its record counts the failure under its code.
type Outcome interface {
	FailureCode() Code
}

// Invocation is what one record says.
type Invocation struct {
	Action   string
	Results  map[string]int
	Code     Code // "" when it succeeded
	Duration time.Duration
}

// record writes inv's EMF record, one line. A write that fails is not the
// invocation's failure: the metrics are lost, the answer is not.
func (m *Metrics) record(ctx context.Context, inv Invocation) {
	if m == nil || m.w == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	requests, minted := apiRequests.Load(), tokensMinted.Load()
	rec := m.build(ctx, inv, requests-m.lastRequests, minted-m.lastMint)
	m.lastRequests, m.lastMint = requests, minted
	line, err := json.Marshal(rec)
	if err != nil {
		return
	}
	_, _ = m.w.Write(append(line, '\n'))
}

type emfMetric struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

type emfDirective struct {
	Namespace  string      `json:"Namespace"`
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []emfMetric `json:"Metrics"`
}

type emfMetadata struct {
	Timestamp         int64          `json:"Timestamp"`
	CloudWatchMetrics []emfDirective `json:"CloudWatchMetrics"`
}

// maxMetrics is the specification's limit of metrics per directive.
const maxMetrics = 100

func (m *Metrics) build(ctx context.Context, inv Invocation, requests, minted int64) map[string]any {
	action := Or(inv.Action, UnknownAction)
	failed := 0
	if inv.Code != "" {
		failed = 1
	}
	rec := map[string]any{
		DimensionFunction:  m.function,
		DimensionAction:    action,
		MetricInvocations:  1,
		MetricFailures:     failed,
		MetricDuration:     math.Round(float64(inv.Duration.Microseconds())) / 1000,
		MetricAPIRequests:  requests,
		MetricTokensMinted: minted,
	}
	metrics := []emfMetric{{MetricInvocations, "Count"}, {MetricFailures, "Count"}, {MetricDuration, "Milliseconds"},
		{MetricAPIRequests, "Count"}, {MetricTokensMinted, "Count"}}
	results := make([]string, 0, len(inv.Results))
	for r := range inv.Results {
		results = append(results, r)
	}
	sort.Strings(results)
	for _, r := range results {
		if len(metrics) == maxMetrics-1 {
			break // room for the error
		}
		name := "Objects." + r
		if _, taken := rec[name]; taken || r == "" {
			continue
		}
		rec[name] = inv.Results[r]
		metrics = append(metrics, emfMetric{name, "Count"})
	}
	if inv.Code != "" {
		name := "Errors." + string(inv.Code)
		rec[name] = 1
		metrics = append(metrics, emfMetric{name, "Count"})
	}
	rec["_aws"] = emfMetadata{
		Timestamp: m.now().UnixMilli(),
		CloudWatchMetrics: []emfDirective{
			{Namespace: MetricsNamespace, Dimensions: [][]string{{DimensionFunction}}, Metrics: []emfMetric{{MetricFailures, "Count"}}},
			{Namespace: MetricsNamespace, Dimensions: [][]string{{DimensionFunction, DimensionAction}}, Metrics: metrics},
		},
	}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		rec["requestId"] = lc.AwsRequestID
	}
	return rec
}

// stdout is where Main's records go: Lambda sends the function's stdout to
// its log group.
var stdout io.Writer = os.Stdout

// observe writes the record of an invocation that began at start and
// answered resp (whose log attributes are attrs) or failed with code.
// The action is the one NoteAction recorded, or the "action" of attrs.
func observe(ctx context.Context, start time.Time, resp any, attrs []any, code Code) {
	if metrics == nil {
		return
	}
	inv := Invocation{Action: notedAction(ctx), Code: code, Duration: time.Since(start)}
	for i := 0; inv.Action == "" && i+1 < len(attrs); i += 2 {
		if k, ok := attrs[i].(string); ok && k == "action" {
			inv.Action, _ = attrs[i+1].(string)
		}
	}
	if rc, ok := resp.(ResultCounter); ok && code == "" {
		inv.Results = rc.CountResults()
	}
	if o, ok := resp.(Outcome); ok && code == "" {
		inv.Code = o.FailureCode()
	}
	metrics.record(ctx, inv)
}
