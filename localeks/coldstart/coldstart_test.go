package coldstart

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// run is one cold start: exec to the first request for an event (init),
// and to the answer of the first event when one is sent (init + first
// invocation).
type run struct{ init, first time.Duration }

// coldStart execs bin with env against a fresh loopback runtime API. With
// an event, it serves it and waits for the answer; else it holds the first
// request, as Lambda does while no event comes.
func coldStart(tb testing.TB, bin string, env []string, event string) run {
	tb.Helper()
	next, done := make(chan time.Time, 1), make(chan time.Time, 1)
	var once sync.Once
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		if r.Method == http.MethodPost {
			if strings.HasSuffix(r.URL.Path, "/error") {
				body, _ := io.ReadAll(r.Body)
				tb.Errorf("%s answered its first event with an error: %s", bin, body)
			}
			done <- now
			w.WriteHeader(http.StatusAccepted)
			return
		}
		first := false
		once.Do(func() { first = true; next <- now })
		if !first || event == "" {
			<-r.Context().Done() // no event (more) comes
			return
		}
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", "request-1")
		w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(30*time.Second).UnixMilli(), 10))
		w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
		_, _ = w.Write([]byte(event))
	}))
	defer api.Close()
	cmd := exec.Command(bin) //nolint:gosec // G204: the bootstraps under test
	cmd.Env = append(slices.Clip(env), "AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(api.URL, "http://"))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var r run
	select {
	case t := <-next:
		r.init = t.Sub(start)
	case <-time.After(20 * time.Second):
		tb.Fatalf("%s never asked for an event", bin)
	}
	if event != "" {
		select {
		case t := <-done:
			r.first = t.Sub(start)
		case <-time.After(20 * time.Second):
			tb.Fatalf("%s never answered its first event", bin)
		}
	}
	return r
}

func median(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / 1e6
}

// BenchmarkColdStart: each iteration starts the bare, main, Helm and lifecycle
// bootstraps once, interleaved, so that the machine's load falls on all
// alike. It reports each one's median init (exec to the first request for
// an event) and its ratio to the bare bootstrap's, and the median of init +
// first invocation for the bare bootstrap (an empty handler) and the main
// one (ensure-nginx against the fake cluster: DescribeCluster, a token,
// one apply). ns/op is the sum of all starts of an iteration.
//
//	cd localeks && GOWORK=off nice go test -run '^$' -bench ColdStart -benchtime 20x ./coldstart/
func BenchmarkColdStart(b *testing.B) {
	bare, main, helm, lc := bootstrap(b, "bare"), bootstrap(b, "main"), bootstrap(b, "helm"), bootstrap(b, "lifecycle")
	cluster := newFakeCluster(b)
	mainEnv := lambdaEnv(cluster.env()...)
	var bareInit, mainInit, helmInit, lcInit, bareFirst, mainFirst []time.Duration
	for b.Loop() {
		r := coldStart(b, bare, lambdaEnv(), "{}")
		bareInit, bareFirst = append(bareInit, r.init), append(bareFirst, r.first)
		r = coldStart(b, main, mainEnv, `{"action":"ensure-nginx"}`)
		mainInit, mainFirst = append(mainInit, r.init), append(mainFirst, r.first)
		r = coldStart(b, helm, lambdaEnv(), "")
		helmInit = append(helmInit, r.init)
		r = coldStart(b, lc, lambdaEnv(), "")
		lcInit = append(lcInit, r.init)
	}
	floor := median(bareInit)
	b.ReportMetric(floor, "bare-init-ms")
	b.ReportMetric(median(mainInit), "main-init-ms")
	b.ReportMetric(median(helmInit), "helm-init-ms")
	b.ReportMetric(median(mainInit)/floor, "main/bare")
	b.ReportMetric(median(helmInit)/floor, "helm/bare")
	b.ReportMetric(median(lcInit), "lifecycle-init-ms")
	b.ReportMetric(median(lcInit)/floor, "lifecycle/bare")
	b.ReportMetric(median(bareFirst), "bare-first-ms")
	b.ReportMetric(median(mainFirst), "main-first-ms")
	b.ReportMetric(median(mainFirst)/median(bareFirst), "main-first/bare-first")
}
