package helmrelease

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lambda-eks/lambda-eks/kube"
)

// countingSource mints a new token on each call: the first one already
// expired (a token that ran out during a long wait), the next ones valid
// for an hour.
type countingSource struct {
	mu sync.Mutex
	n  int
}

func (s *countingSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	expiry := time.Now().Add(time.Hour)
	if s.n == 1 {
		expiry = time.Now().Add(-time.Second)
	}
	return &oauth2.Token{AccessToken: "token-" + string(rune('0'+s.n)), Expiry: expiry}, nil
}

// Helm's clients, built from the getter, send the bearer token of
// kube.NewRESTConfig's token source and take a fresh one once it nears its
// expiry: a long wait never outlives its token (helm #10158).
func TestGetterRefreshesToken(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		seen []string
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"default"}}`))
	}))
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	// The cached token source renews a token at its expiry (auth's
	// tokens say 14 minutes; STS accepts them for 15).
	ts := &countingSource{}
	cfg, err := kube.NewRESTConfig(srv.URL, caPEM, ts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := getter{c: c, namespace: "default"}.ToRESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	get := func() {
		if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	get()
	get()
	get()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"Bearer token-1", "Bearer token-2", "Bearer token-2"}
	if len(seen) != len(want) {
		t.Fatalf("requests %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("request %d sent %q, want %q", i, seen[i], want[i])
		}
	}
}
