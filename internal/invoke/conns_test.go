package invoke_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// fakeOpener opens connections whose client is the target's cluster name,
// counting the opens per cluster; fail, while set, fails every open.
type fakeOpener struct {
	mu      sync.Mutex
	opens   map[string]int
	prepare func(context.Context) error
	fail    error
}

func newFakeOpener() *fakeOpener { return &fakeOpener{opens: map[string]int{}} }

func (o *fakeOpener) open(_ context.Context, t auth.Target) (*invoke.Conn[string], error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.opens[t.Cluster]++
	if o.fail != nil {
		return nil, o.fail
	}
	return &invoke.Conn[string]{Client: t.Cluster, Prepare: o.prepare}, nil
}

func (o *fakeOpener) count(cluster string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.opens[cluster]
}

func target(cluster string) auth.Target { return auth.Target{Cluster: cluster, Region: "us-east-1"} }

// mustGet returns the connection to cluster, failing the test on an error.
func mustGet(tb testing.TB, cs *invoke.Conns[string], cluster string) *invoke.Conn[string] {
	tb.Helper()
	c, err := cs.Get(tb.Context(), target(cluster))
	if err != nil {
		tb.Fatalf("Get(%s): %v", cluster, err)
	}
	if c.Client != cluster {
		tb.Fatalf("Get(%s) returned the connection to %s", cluster, c.Client)
	}
	return c
}

func TestConnectionsAreLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	o := newFakeOpener()
	cs := invoke.NewConns(o.open, slog.New(slog.DiscardHandler))
	first := map[string]*invoke.Conn[string]{}
	for i := range invoke.MaxConns {
		name := fmt.Sprintf("c%d", i)
		first[name] = mustGet(t, cs, name)
	}
	if c := mustGet(t, cs, "c0"); c != first["c0"] { // cached, and now the most recently used
		t.Error("c0 was opened again, want the cached connection")
	}
	mustGet(t, cs, "new") // one more than MaxConns: c1, the least recently used, goes
	if c := mustGet(t, cs, "c0"); c != first["c0"] {
		t.Error("c0 was dropped, want c1 (the least recently used) dropped")
	}
	if c := mustGet(t, cs, "c1"); c == first["c1"] {
		t.Error("c1 is still cached past MaxConns")
	}
	want := map[string]int{"new": 1}
	for i := range invoke.MaxConns {
		want[fmt.Sprintf("c%d", i)] = 1
	}
	want["c1"] = 2
	if diff := cmp.Diff(want, o.opens); diff != "" {
		t.Errorf("opens per cluster (-want +got):\n%s", diff)
	}
	if cs.Len() != invoke.MaxConns {
		t.Errorf("%d connections kept, want %d", cs.Len(), invoke.MaxConns)
	}
}

// syncBuffer is a log destination for one test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStaleConnectionIsDropped(t *testing.T) {
	const apiURL = "https://ABCD.gr7.us-east-1.eks.amazonaws.com/apis/apps/v1/namespaces/default/deployments/nginx"
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	tests := []struct {
		name       string
		err        error
		wantCode   invoke.Code
		wantReason string // Stale's; "" keeps the connection
	}{
		{"certificate of another CA", &url.Error{Op: "Get", URL: apiURL,
			Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, invoke.Unavailable, "tls"},
		{"certificate for another host", &url.Error{Op: "Get", URL: apiURL, Err: x509.HostnameError{Host: "ABCD"}}, invoke.Unavailable, "tls"},
		{"endpoint name gone", &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "ABCD", IsNotFound: true}}},
			invoke.Unavailable, "endpoint name not found"},
		{"401 after a fresh token", apierrors.NewUnauthorized("Unauthorized"), invoke.Unauthorized, "401 after a fresh token"},
		{"a name server that fails keeps it", &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "ABCD", IsTemporary: true}}},
			invoke.Unavailable, ""},
		{"403 keeps the connection", apierrors.NewForbidden(gr, "nginx",
			errors.New(`User "x" cannot patch resource "deployments" in API group "apps" in the namespace "default"`)), invoke.Forbidden, ""},
		{"connection refused keeps it", &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}, invoke.Unavailable, ""},
		{"500 keeps it", apierrors.NewInternalError(errors.New("etcd")), invoke.Unavailable, ""},
		{"success keeps it", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := invoke.Stale(tt.err); got != tt.wantReason {
				t.Errorf("Stale = %q, want %q", got, tt.wantReason)
			}
			if tt.err != nil {
				if got := invoke.Classify(t.Context(), tt.err, diagnosis("", nil)); got.Code != tt.wantCode {
					t.Errorf("code %s (%s), want %s", got.Code, got.Message, tt.wantCode)
				}
			}
			o := newFakeOpener()
			var logs syncBuffer
			cs := invoke.NewConns(o.open, slog.New(slog.NewTextHandler(&logs, nil)))
			// Two invocations that fail with err.
			for range 2 {
				c := mustGet(t, cs, "demo")
				cs.Done(t.Context(), target("demo"), c, tt.err)
			}
			wantOpens := 1
			if tt.wantReason != "" {
				wantOpens = 2
			}
			if n := o.count("demo"); n != wantOpens {
				t.Errorf("two failed invocations opened %d connections, want %d", n, wantOpens)
			}
			// Once the cluster answers again, the connection is kept.
			for range 2 {
				c := mustGet(t, cs, "demo")
				cs.Done(t.Context(), target("demo"), c, nil)
			}
			if tt.wantReason != "" {
				wantOpens++ // the last one dropped is opened once more
			}
			if n := o.count("demo"); n != wantOpens {
				t.Errorf("opened %d connections in all after the cluster answered again, want %d", n, wantOpens)
			}
			dropped := strings.Count(logs.String(), "connection dropped")
			if want := wantOpens - 1; dropped != want || (want > 0 && !strings.Contains(logs.String(), tt.wantReason)) {
				t.Errorf("logged %d drops, want %d with reason %q:\n%s", dropped, want, tt.wantReason, logs.String())
			}
		})
	}
}

// TestDoneDropsOnlyItsOwnConnection: an invocation that ends late with a
// stale error does not drop the connection another one opened since.
func TestDoneDropsOnlyItsOwnConnection(t *testing.T) {
	t.Parallel()
	o := newFakeOpener()
	cs := invoke.NewConns(o.open, slog.New(slog.DiscardHandler))
	stale := apierrors.NewUnauthorized("Unauthorized")
	old := mustGet(t, cs, "demo")
	cs.Done(t.Context(), target("demo"), old, stale)
	renewed := mustGet(t, cs, "demo")
	if renewed == old {
		t.Fatal("the stale connection was kept")
	}
	cs.Done(t.Context(), target("demo"), old, stale) // a late invocation on the old one
	if c := mustGet(t, cs, "demo"); c != renewed {
		t.Error("a late error on the old connection dropped the new one")
	}
	if n := o.count("demo"); n != 2 {
		t.Errorf("opened %d connections, want 2", n)
	}
}

// TestFailedOpenIsNotKept: an open that fails is tried again by the next
// invocation, and a connection's Prepare runs on every Get.
func TestFailedOpenIsNotKept(t *testing.T) {
	t.Parallel()
	o := newFakeOpener()
	notFound := &auth.ClusterNotFoundError{Name: "demo", Region: "us-east-1"}
	o.fail = notFound
	var prepared int
	prepareErr := errors.New("credentials: no answer")
	var failPrepare bool
	o.prepare = func(context.Context) error {
		prepared++
		if failPrepare {
			return prepareErr
		}
		return nil
	}
	cs := invoke.NewConns(o.open, slog.New(slog.DiscardHandler))
	if _, err := cs.Get(t.Context(), target("demo")); !errors.Is(err, notFound) {
		t.Fatalf("Get = %v, want the open's error", err)
	}
	o.mu.Lock()
	o.fail = nil
	o.mu.Unlock()
	c := mustGet(t, cs, "demo")
	if n := o.count("demo"); n != 2 || cs.Len() != 1 {
		t.Errorf("opened %d times, %d kept; want 2 opens (the failed one not kept) and 1 kept", n, cs.Len())
	}
	failPrepare = true
	if _, err := cs.Get(t.Context(), target("demo")); !errors.Is(err, prepareErr) {
		t.Errorf("Get = %v, want Prepare's error", err)
	}
	failPrepare = false
	if again := mustGet(t, cs, "demo"); again != c {
		t.Error("a failed Prepare dropped the connection; Stale decides that, not Get")
	}
	if prepared != 3 {
		t.Errorf("Prepare ran %d times, want once per Get that found a connection (3)", prepared)
	}
}
