package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

func TestDemoChartArchive(t *testing.T) {
	a, err := DemoChartArchive("0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := DemoChartArchive("0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	// The index's digests and the registry's blobs must agree run after run.
	if !bytes.Equal(a, b) {
		t.Error("two archives of the same version differ")
	}
	meta, err := chartMetadata(a)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(meta, &got); err != nil {
		t.Fatalf("config blob %s: %v", meta, err)
	}
	want := map[string]any{"apiVersion": "v2", "name": "demo", "version": "0.1.0", "appVersion": "app-0.1.0", "description": "lambda-eks demo chart"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chart metadata (-want +got):\n%s", diff)
	}
}

// The chart repository serves the index and the archives it names, over
// TLS that a client trusting the shim's CA (as the functions do) accepts.
func TestServeCharts(t *testing.T) {
	p := Paths{Dir: t.TempDir()}
	if err := writePKI(p); err != nil {
		t.Fatal(err)
	}
	s := &Stack{Paths: p}
	if err := s.writeHelmPKI(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	charts := map[string][]byte{}
	for _, v := range DemoChartVersions {
		data, err := DemoChartArchive(v)
		if err != nil {
			t.Fatal(err)
		}
		charts[v] = data
		if err := os.WriteFile(dir+"/demo-"+v+".tgz", data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	index, err := ChartIndex(charts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/index.yaml", index, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeCharts(ctx, dir, addr, p.PKI("helm-serving.pem"), p.PKI("helm-serving-key.pem")) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeCharts: %v", err)
		}
	})
	client, err := s.helmClient()
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) []byte {
		t.Helper()
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			resp, err := client.Get("https://" + addr + path)
			if err != nil {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("GET %s: %v", path, err)
				}
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s", path, resp.Status)
			}
			return body
		}
	}
	var idx struct {
		Entries map[string][]struct {
			Version string   `json:"version"`
			Digest  string   `json:"digest"`
			URLs    []string `json:"urls"`
		} `json:"entries"`
	}
	if err := yaml.Unmarshal(get("/charts/index.yaml"), &idx); err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, e := range idx.Entries[DemoChart] {
		versions = append(versions, e.Version)
		sum := sha256.Sum256(get("/charts/" + e.URLs[0]))
		if hex.EncodeToString(sum[:]) != e.Digest {
			t.Errorf("%s: the archive served does not have the index's digest", e.Version)
		}
	}
	if diff := cmp.Diff(DemoChartVersions, versions); diff != "" {
		t.Errorf("versions in index.yaml (-want +got):\n%s", diff)
	}
	// The serving certificate comes from the shim's CA, not the cluster's.
	cert := readCert(t, p.PKI("helm-serving.pem"))
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.PKI("ca.pem")))
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err == nil {
		t.Error("the Helm parts' certificate verifies with the cluster CA")
	}
}

// fakeRegistry is the part of the OCI distribution API pushChart uses,
// with basic auth, relative upload locations carrying state, and digest
// checks, as distribution does.
type fakeRegistry struct {
	mu        sync.Mutex
	blobs     map[string][]byte
	manifests map[string][]byte // repo:tag
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != RegistryUser || p != RegistryPassword {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	path := strings.TrimPrefix(r.URL.Path, "/v2/")
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/blobs/uploads/"):
		w.Header().Set("Location", "/v2/"+path+"upload-1?_state=abc")
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPut && strings.Contains(path, "/blobs/uploads/"):
		if r.URL.Query().Get("_state") != "abc" {
			http.Error(w, "upload state lost", http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		if r.URL.Query().Get("digest") != digest {
			http.Error(w, "digest mismatch", http.StatusBadRequest)
			return
		}
		f.blobs[digest] = body
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodPut && strings.Contains(path, "/manifests/"):
		repo, tag, _ := strings.Cut(path, "/manifests/")
		if r.Header.Get("Content-Type") != ociManifestType {
			http.Error(w, "manifest type", http.StatusBadRequest)
			return
		}
		f.manifests[repo+":"+tag] = body
		w.WriteHeader(http.StatusCreated)
	default:
		http.NotFound(w, r)
	}
}

func TestPushChart(t *testing.T) {
	reg := &fakeRegistry{blobs: map[string][]byte{}, manifests: map[string][]byte{}}
	srv := httptest.NewTLSServer(reg)
	t.Cleanup(srv.Close)
	archive, err := DemoChartArchive("0.2.0")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	if err := pushChart(context.Background(), srv.Client(), host, "charts/demo", "0.2.0", archive); err != nil {
		t.Fatal(err)
	}
	raw, ok := reg.manifests["charts/demo:0.2.0"]
	if !ok {
		t.Fatalf("no manifest charts/demo:0.2.0; have %v", reg.manifests)
	}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	var m struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(archive)
	want := []descriptor{{helmChartMediaType, "sha256:" + hex.EncodeToString(sum[:]), len(archive)}}
	if diff := cmp.Diff(want, m.Layers); diff != "" {
		t.Errorf("layers (-want +got):\n%s", diff)
	}
	if m.SchemaVersion != 2 || m.MediaType != ociManifestType || m.Config.MediaType != helmConfigMediaType {
		t.Errorf("manifest %s", raw)
	}
	if !bytes.Contains(reg.blobs[m.Config.Digest], []byte(`"version":"0.2.0"`)) {
		t.Errorf("config blob %s, want the chart's metadata", reg.blobs[m.Config.Digest])
	}
	if !bytes.Equal(reg.blobs[m.Layers[0].Digest], archive) {
		t.Error("the layer is not the archive")
	}
}

// A registry that refuses says so, with its answer.
func TestPushChartRefused(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"errors":[{"code":"DENIED"}]}`, http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	archive, err := DemoChartArchive("0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	err = pushChart(context.Background(), srv.Client(), strings.TrimPrefix(srv.URL, "https://"), "charts/demo", "0.1.0", archive)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("err = %v, want the registry's 403 and its answer", err)
	}
}
