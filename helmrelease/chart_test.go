package helmrelease

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

func chartArchive(t *testing.T, version string) []byte {
	t.Helper()
	files := map[string]string{
		"demo/Chart.yaml":        "apiVersion: v2\nname: demo\nversion: " + version + "\n",
		"demo/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

func TestFetchHTTPS(t *testing.T) {
	t.Parallel()
	good := chartArchive(t, "1.2.0")
	old := chartArchive(t, "1.1.0")
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	index := fmt.Sprintf(`apiVersion: v1
entries:
  demo:
  - {apiVersion: v2, name: demo, version: 1.2.0, digest: %s, urls: [demo-1.2.0.tgz]}
  - {apiVersion: v2, name: demo, version: 1.1.0, digest: %s, urls: [demo-1.1.0.tgz]}
  - {apiVersion: v2, name: demo, version: 1.0.0, digest: %s, urls: [demo-1.0.0.tgz]}
`, sum(good), sum(old), sum(old)) // 1.0.0's digest is not its archive's, on purpose
	var auth []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		auth = append(auth, u+":"+p)
		switch r.URL.Path {
		case "/charts/index.yaml":
			_, _ = w.Write([]byte(index))
		case "/charts/demo-1.2.0.tgz", "/charts/demo-1.0.0.tgz":
			_, _ = w.Write(good)
		case "/charts/demo-1.1.0.tgz":
			_, _ = w.Write(old)
		case "/private/index.yaml":
			w.WriteHeader(http.StatusUnauthorized)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	f := &fetcher{hc: srv.Client(), creds: Credentials{host: {"u", "p"}}}
	ctx := context.Background()
	for _, tc := range []struct {
		name, repo, version, want string
		err                       any
	}{
		{name: "newest", repo: "/charts", want: "1.2.0"},
		{name: "constraint", repo: "/charts", version: "<1.2", want: "1.1.0"},
		{name: "exact", repo: "/charts/", version: "1.1.0", want: "1.1.0"},
		{name: "missing version", repo: "/charts", version: "2.0.0", err: new(*ChartNotFoundError)},
		{name: "digest mismatch", repo: "/charts", version: "1.0.0", err: new(*RepositoryError)},
		{name: "refused", repo: "/private", err: new(*RepositoryError)},
		{name: "not a repository", repo: "/nothing", err: new(*RepositoryError)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, version, err := f.fetch(ctx, ChartRef{Repository: srv.URL + tc.repo, Name: "demo", Version: tc.version})
			if tc.err != nil {
				if err == nil || !errors.As(err, tc.err) {
					t.Fatalf("got %v, want %T", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if version != tc.want || ch.Metadata.Version != tc.want {
				t.Errorf("got %s (%s), want %s", version, ch.Metadata.Version, tc.want)
			}
		})
	}
	for _, a := range auth {
		if a != "u:p" {
			t.Errorf("a request carried credentials %q, want the host's", a)
		}
	}
	var nf *ChartNotFoundError
	_, _, err := f.fetch(ctx, ChartRef{Repository: srv.URL + "/charts", Name: "demo", Version: "2.0.0"})
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "versions: 1.2.0, 1.1.0, 1.0.0") {
		t.Errorf("the message should list the versions: %v", err)
	}
}

// TestFetchersShareTransport: the fetchers of two invocations of one
// Handler download over the Handler's transport, so the second reuses the
// first's connection, and each has its own timeout, its deadline.
func TestFetchersShareTransport(t *testing.T) {
	t.Parallel()
	archive := chartArchive(t, "1.0.0")
	index := "apiVersion: v1\nentries:\n  demo:\n  - {apiVersion: v2, name: demo, version: 1.0.0, urls: [demo-1.0.0.tgz]}\n"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/index.yaml":
			_, _ = w.Write([]byte(index))
		case "/demo-1.0.0.tgz":
			_, _ = w.Write(archive)
		default:
			http.NotFound(w, r)
		}
	}))
	var mu sync.Mutex
	conns := 0
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	defer srv.Close()

	h := newHandler(Config{}, nil, nil, slog.New(slog.DiscardHandler), time.Now)
	if h.charts == nil {
		t.Fatal("New built no chart transport")
	}
	h.charts.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig // trust the test server
	var first *http.Client
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		f := newFetcher(ctx, h.charts, nil, nil)
		if f.hc.Transport != h.charts {
			t.Fatalf("invocation %d: the fetcher's transport is not the Handler's", i)
		}
		if f.hc.Timeout <= 0 || f.hc.Timeout > time.Minute {
			t.Errorf("invocation %d: timeout %v, want at most the deadline's minute", i, f.hc.Timeout)
		}
		if f.hc == first {
			t.Error("the invocations share an http.Client: want one each, for its timeout")
		}
		first = f.hc
		if _, _, err := f.fetch(ctx, ChartRef{Repository: srv.URL, Name: "demo"}); err != nil {
			t.Fatalf("invocation %d: %v", i, err)
		}
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections for two invocations, want 1 (the second reuses the first's)", conns)
	}
}

// TestMatchTag: a registry's tags as registry.Client.Tags lists them
// (semantic versions, newest first, "_" read back as "+").
func TestMatchTag(t *testing.T) {
	t.Parallel()
	tags := []string{"2.0.0-rc.1", "1.2.5", "1.2.0", "1.0.0+build.7", "0.1.1", "0.1.0"}
	for _, tc := range []struct{ version, want string }{
		{"", "1.2.5"}, // a prerelease only when asked for
		{"*", "1.2.5"},
		{"~0.1", "0.1.1"},
		{"1.2", "1.2.5"},
		{"v1.2", "1.2.5"},
		{"<1.2", "1.0.0+build.7"},
		{"^1.0.0-0", "1.2.5"},
		{">=2.0.0-0", "2.0.0-rc.1"},
		{"1.0", "1.0.0+build.7"},
		{"0.1.0 || 1.2.0", "1.2.0"},
	} {
		got, err := matchTag(ChartRef{OCI: "oci://r.example/charts/demo", Version: tc.version}, tags)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.version, got, err, tc.want)
		}
	}
	for _, version := range []string{">=3", "~0.2", "1.3"} {
		_, err := matchTag(ChartRef{OCI: "oci://r.example/charts/demo", Version: version}, tags)
		var nf *ChartNotFoundError
		if !errors.As(err, &nf) || !strings.Contains(err.Error(), "no tag matches (tags: 2.0.0-rc.1, 1.2.5,") {
			t.Errorf("%q: got %v, want a ChartNotFoundError listing the tags", version, err)
		}
	}
	var nf *ChartNotFoundError
	if _, err := matchTag(ChartRef{OCI: "oci://r.example/charts/demo"}, nil); !errors.As(err, &nf) || !strings.Contains(err.Error(), "tags: none") {
		t.Errorf("no tags: got %v, want a ChartNotFoundError", err)
	}
}

// A registry's refusals reach classify as the error types oras returns
// (errcode.ErrorResponse, errdef.ErrNotFound), not as text: a CNCF
// distribution registry's answers, served here.
func TestOCIErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer := func(status int, code, message string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, message)
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/charts/missing/"):
			answer(http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
		case strings.HasPrefix(r.URL.Path, "/v2/charts/private/"):
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			answer(http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		case strings.HasPrefix(r.URL.Path, "/v2/charts/denied/"):
			answer(http.StatusForbidden, "DENIED", "requested access to the resource is denied")
		case strings.HasPrefix(r.URL.Path, "/v2/charts/broken/"):
			answer(http.StatusServiceUnavailable, "UNAVAILABLE", "try later")
		default: // a tag that is not there: the manifest's HEAD answers 404
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	f := &fetcher{hc: srv.Client(), creds: Credentials{host: {"u", "wrong"}}}
	for _, tc := range []struct {
		name, chart, version string
		code                 invoke.Code
		says                 string
	}{
		{"no repository", "missing", "", invoke.NotFound, "no such repository or tag"},
		{"no tag", "demo", "9.9.9", invoke.NotFound, "no such repository or tag"},
		{"credentials refused", "private", "", invoke.Forbidden, "REGISTRY_CREDENTIALS"},
		{"denied", "denied", "1.0.0", invoke.Forbidden, "REGISTRY_CREDENTIALS"},
		{"registry failing", "broken", "", invoke.Unavailable, "try again later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ref := ChartRef{OCI: "oci://" + host + "/charts/" + tc.chart, Name: tc.chart, Version: tc.version}
			_, _, err := f.pullOCI(ctx, ref)
			if err == nil {
				t.Fatal("no error")
			}
			var resp *errcode.ErrorResponse
			if !errors.Is(err, errdef.ErrNotFound) && !errors.As(err, &resp) {
				t.Errorf("%v: neither errdef.ErrNotFound nor an *errcode.ErrorResponse in the chain", err)
			}
			e := classify(ctx, err, invoke.Diagnosis{Cluster: "demo", Access: access})
			if e.Code != tc.code || !strings.Contains(e.Message, tc.says) {
				t.Errorf("got %s %q, want %s saying %q", e.Code, e.Message, tc.code, tc.says)
			}
		})
	}
}
