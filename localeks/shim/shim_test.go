package shim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// seen is what the fake moto received.
type seen struct {
	Host, Method, Path, Query, Authorization string
}

// startShim runs a shim in front of a fake moto and returns a client that
// uses it as its HTTPS proxy, trusting its CA.
func startShim(t *testing.T, moto http.HandlerFunc) (*Server, *http.Client, string) {
	t.Helper()
	upstream := httptest.NewServer(moto)
	t.Cleanup(upstream.Close)
	dir := t.TempDir()
	caPEM := writeTestCA(t, dir)
	srv, err := New(Config{
		Listen:   "127.0.0.1:0",
		Upstream: upstream.URL,
		CACert:   filepath.Join(dir, "ca.pem"),
		CAKey:    filepath.Join(dir, "ca-key.pem"),
		Clusters: map[string]Cluster{
			"*":    {Endpoint: "https://127.0.0.1:6443", CAData: "TE9DQUw="},
			"down": {Endpoint: "https://127.0.0.1:1", CAData: "TE9DQUw="},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	proxyURL := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxyURL),
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
	return srv, client, proxyURL.String()
}

func TestPresignedSTSRequest(t *testing.T) {
	var got seen
	srv, client, _ := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		got = seen{Host: r.Host, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Authorization: r.Header.Get("Authorization")}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"GetCallerIdentityResponse":{}}`)
	})
	const query = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256" +
		"&X-Amz-Credential=ASIAEXAMPLE%2F20261122%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20261122T120000Z" +
		"&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=abc123"
	req, err := http.NewRequest(http.MethodGet, "https://sts.us-east-1.amazonaws.com/?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("x-k8s-aws-id", "demo")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	want := seen{
		Host:          "sts.us-east-1.amazonaws.com",
		Method:        http.MethodGet,
		Path:          "/",
		Query:         query + "&ContentType=JSON",
		Authorization: "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261122/us-east-1/sts/aws4_request, SignedHeaders=host;x-k8s-aws-id, Signature=abc123",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("moto received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Counts{"sts:presigned": 1, "sts:presigned@ASIAEXAMPLE": 1}, srv.Counts()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

func TestDescribeClusterRewrite(t *testing.T) {
	srv, client, _ := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/clusters/")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"cluster": map[string]any{
			"name": name, "status": "ACTIVE", "endpoint": "https://random.moto.example",
			"certificateAuthority": map[string]any{"data": "bW90bw=="},
		}})
	})
	for _, tc := range []struct{ cluster, endpoint string }{
		{"demo", "https://127.0.0.1:6443"},
		{"down", "https://127.0.0.1:1"},
	} {
		req, err := http.NewRequest(http.MethodGet, "https://eks.us-east-1.amazonaws.com/clusters/"+tc.cluster, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261122/us-east-1/eks/aws4_request, SignedHeaders=host, Signature=x")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Cluster map[string]any `json:"cluster"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"name": tc.cluster, "status": "ACTIVE", "endpoint": tc.endpoint,
			"certificateAuthority": map[string]any{"data": "TE9DQUw="}}
		if diff := cmp.Diff(want, body.Cluster); diff != "" {
			t.Errorf("cluster %s (-want +got):\n%s", tc.cluster, diff)
		}
	}
	if diff := cmp.Diff(Counts{"eks": 2, "eks@ASIAEXAMPLE": 2}, srv.Counts()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

func TestRefusesNonAWSHosts(t *testing.T) {
	_, client, proxy := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("moto reached for %s", r.Host)
	})
	for _, target := range []string{"https://example.com/", "https://169.254.169.254/latest/meta-data/", "https://sts.amazonaws.com.evil.example/"} {
		resp, err := client.Get(target)
		if err == nil {
			_ = resp.Body.Close()
			t.Errorf("GET %s via %s: %s, want the CONNECT refused", target, proxy, resp.Status)
		} else if !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("GET %s via %s: %v, want the CONNECT refused as Forbidden", target, proxy, err)
		}
	}
	// Plain HTTP is never forwarded, even to an AWS host.
	resp, err := client.Get("http://sts.amazonaws.com/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET http://sts.amazonaws.com/: %s, want 403", resp.Status)
	}
}

func TestCountsEndpoint(t *testing.T) {
	srv, client, proxy := startShim(t, func(w http.ResponseWriter, r *http.Request) {})
	resp, err := client.Get("https://eks.us-east-1.amazonaws.com/clusters")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	direct := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err = direct.Get(proxy + "/__counts")
	if err != nil {
		t.Fatal(err)
	}
	var got Counts
	err = json.NewDecoder(resp.Body).Decode(&got)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Counts{"eks": 1}, got); diff != "" {
		t.Errorf("GET /__counts (-want +got):\n%s", diff)
	}
	resp, err = direct.Post(proxy+"/__counts/reset", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if diff := cmp.Diff(Counts{}, srv.Counts()); diff != "" {
		t.Errorf("after reset (-want +got):\n%s", diff)
	}
}

func writeTestCA(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test shim CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}
