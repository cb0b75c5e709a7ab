package handler

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/kubefake"
	"github.com/lambda-eks/lambda-eks/kube"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func lambdaErr(tb testing.TB, err error) messages.InvokeResponse_Error {
	tb.Helper()
	var le messages.InvokeResponse_Error
	if !errors.As(err, &le) {
		tb.Fatalf("error %v (%T) is not a Lambda error response", err, err)
	}
	return le
}

var (
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	configMaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
)

// fakeAPI is a fake API server that every target connects to, through
// client-go's transport, discovery and dynamic client as main's connector
// does, and the count of connects.
type fakeAPI struct {
	*kubefake.Server
	connects atomic.Int32
}

func newFakeAPI(tb testing.TB, objs ...*unstructured.Unstructured) *fakeAPI {
	tb.Helper()
	return &fakeAPI{Server: kubefake.New(tb, kubefake.WithObjects(objs...))}
}

// connector opens a new kube.Client on the server for each connect, as a
// new process would for a cluster: through kube.NewRESTConfig (main's rate
// limits and timeouts; kubefake's own RESTConfig has client-go's 5 QPS,
// which would cost 200 ms a request past the tenth) with a static token,
// and the server's faults (FailTransport) outermost.
func (f *fakeAPI) connector() Connector {
	return func(context.Context, auth.Target) (*Conn, error) {
		f.connects.Add(1)
		cfg, err := kube.NewRESTConfig(f.URL(), f.CAData(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "test-token"}))
		if err != nil {
			return nil, err
		}
		cfg.Wrap(f.WrapTransport)
		k, err := kube.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		return &Conn{Client: k}, nil
	}
}

// deployment is a Deployment default/name of replicas, labelled app=name.
func deployment(name string, replicas int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"namespace": "default", "name": name, "labels": map[string]any{"app": name}},
		"spec":     map[string]any{"replicas": replicas}}}
}

func TestHandlerEnsureNginx(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	h := New(testConfig, api.connector(), discardLogger())
	ctx := t.Context()

	steps := []struct {
		event, want string
	}{
		{`{}`, "created"},
		{`{"source":"aws.events","detail-type":"Scheduled Event","detail":{}}`, "unchanged"},
		{`{"action":"ensure-nginx","replicas":5}`, "configured"},
	}
	for _, s := range steps {
		got, err := h.Invoke(ctx, []byte(s.event))
		if err != nil {
			t.Fatalf("%s: %v", s.event, err)
		}
		want := `{"cluster":"demo","action":"ensure-nginx","objects":[{"apiVersion":"apps/v1","kind":"Deployment",` +
			`"namespace":"default","name":"nginx","result":"` + s.want + `"}]}`
		if diff := cmp.Diff(want, string(got)); diff != "" {
			t.Errorf("%s: response (-want +got):\n%s", s.event, diff)
		}
	}
	if n := api.connects.Load(); n != 1 {
		t.Errorf("connected %d times, want once per process and target", n)
	}
}

func TestHandlerInvalidEventWritesNothing(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	h := New(testConfig, api.connector(), discardLogger())
	for _, ev := range []string{`{"replicas":-4}`, `{"nmae":"x"}`, `{"namespace":"UPPER"}`,
		`{"action":"status","kind":"Deployment","name":"nginx","action":"delete"}`, `{"action":"restart","dryRun":true,"DRYRUN":false}`,
		`{"Replicas":3}`, `{"action":"status"} {"action":"delete"}`, `not json`, `[{}]`, `"x"`,
		`{"name":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}`,
		`{"action":"scale","selector":"app=web\u0000","replicas":0}`} {
		_, err := h.Invoke(t.Context(), []byte(ev))
		if le := lambdaErr(t, err); le.Type != "InvalidEvent" {
			t.Errorf("%s: errorType %s, want InvalidEvent", ev, le.Type)
		}
	}
	if n, reqs := api.connects.Load(), api.Requests(); n != 0 || len(reqs) != 0 {
		t.Errorf("invalid events connected %d times and made %d requests, want none", n, len(reqs))
	}
}

// fakeCluster is a loopback stand-in for AWS (EKS DescribeCluster and STS
// GetCallerIdentity) in front of a fake API server, for a handler run
// through the real connector: real credentials provider, real token
// minting, real client-go transport.
type fakeCluster struct {
	aws *httptest.Server
	api *kubefake.Server

	mu sync.Mutex
	// caPEM is the CA DescribeCluster reports: the API server's, unless a
	// test replaces it (a cluster created again has another CA).
	caPEM     []byte
	describes int
}

func newFakeCluster(tb testing.TB) *fakeCluster {
	tb.Helper()
	fc := &fakeCluster{api: kubefake.New(tb)}
	fc.caPEM = fc.api.CAData()
	fc.aws = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/clusters/") {
			fc.mu.Lock()
			fc.describes++
			caPEM := fc.caPEM
			fc.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"cluster": map[string]any{
				"name": "demo", "status": "ACTIVE", "endpoint": fc.api.URL(),
				"certificateAuthority": map[string]string{"data": base64.StdEncoding.EncodeToString(caPEM)},
			}})
			return
		}
		// STS GetCallerIdentity (query protocol, XML).
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>`+
			`<Arn>arn:aws:sts::123456789012:assumed-role/fn-role/fn-session</Arn><UserId>AROA:fn-session</UserId>`+
			`<Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>`)
	}))
	tb.Cleanup(fc.aws.Close)
	return fc
}

// handler is a Handler on the real connector, whose AWS calls go to fc.
func (fc *fakeCluster) handler(log *slog.Logger) *Handler {
	awsCfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("ASIAEXAMPLEEXAMPLE01", "secret", "session"),
		BaseEndpoint: aws.String(fc.aws.URL),
	}
	return New(testConfig, NewConnector(awsCfg), log)
}

// unauthorize makes the API server answer every request 401 from now on,
// as it does to a role no longer mapped.
func (fc *fakeCluster) unauthorize() {
	fc.api.React(func(kubefake.Request) error { return apierrors.NewUnauthorized("Unauthorized") })
}

// bearers are the Authorization headers of the requests the API server
// received.
func (fc *fakeCluster) bearers() []string {
	var out []string
	for _, r := range fc.api.Requests() {
		out = append(out, r.Header.Get("Authorization"))
	}
	return out
}

func (fc *fakeCluster) setCA(caPEM []byte) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.caPEM = caPEM
}

func (fc *fakeCluster) describeCalls() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.describes
}

func TestFullRunLogsNoSecrets(t *testing.T) {
	t.Parallel()
	fc := newFakeCluster(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := fc.handler(log)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	out, err := h.Invoke(ctx, []byte(`{}`))
	if err != nil {
		t.Fatalf("first invocation: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Objects) != 1 || resp.Objects[0].Result != kube.Created {
		t.Errorf("response %s (%v), want one object created", out, err)
	}
	fc.unauthorize()
	_, err = h.Invoke(ctx, []byte(`{}`))
	le := lambdaErr(t, err)
	if le.Type != "Unauthorized" || !strings.Contains(le.Message, "arn:aws:iam::123456789012:role/fn-role") {
		t.Errorf("401: got %s %q, want Unauthorized naming the role", le.Type, le.Message)
	}

	if bearers := fc.bearers(); len(bearers) == 0 || !strings.HasPrefix(bearers[0], "Bearer k8s-aws-v1.") {
		t.Fatal("the API server saw no EKS bearer token; the test proves nothing")
	}
	seen := logs.String() + le.Message
	for _, secret := range []string{"k8s-aws-v1.", "X-Amz-Signature", "secret", "ASIAEXAMPLEEXAMPLE01"} {
		if strings.Contains(seen, secret) {
			t.Errorf("logs or error contain %q:\n%s", secret, seen)
		}
	}
	if !strings.Contains(logs.String(), `"invocation failed"`) || !strings.Contains(logs.String(), `"invocation done"`) {
		t.Errorf("logs lack the invocation records:\n%s", logs.String())
	}
}

// otherCA is the PEM of a self-signed CA that signed nothing the fake API
// server presents.
func otherCA(tb testing.TB) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another cluster"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestCertificateErrorRedescribes runs the real connector and client-go
// transport against an API server whose certificate the CA from
// DescribeCluster does not verify, as after the cluster was created again:
// the invocation is invoke.Unavailable saying so, the connection is not kept, and
// once DescribeCluster reports the right CA the next invocation works,
// without a new process.
func TestCertificateErrorRedescribes(t *testing.T) {
	t.Parallel()
	fc := newFakeCluster(t)
	right := fc.api.CAData()
	fc.setCA(otherCA(t))
	h := fc.handler(discardLogger())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	for i := range 2 {
		_, err := h.Invoke(ctx, []byte(`{}`))
		le := lambdaErr(t, err)
		if le.Type != "Unavailable" || !strings.Contains(le.Message, "certificate") || !strings.Contains(le.Message, "describes the cluster again") {
			t.Errorf("invocation %d: %s %q, want invoke.Unavailable about the certificate", i+1, le.Type, le.Message)
		}
	}
	if got := fc.describeCalls(); got != 2 {
		t.Errorf("DescribeCluster called %d times for two invocations, want 2 (the connection dropped each time)", got)
	}
	if n := len(fc.api.Requests()); n != 0 {
		t.Errorf("the API server answered %d requests over a connection the client should not trust", n)
	}
	fc.setCA(right)
	for range 2 {
		if _, err := h.Invoke(ctx, []byte(`{}`)); err != nil {
			t.Fatalf("with the right CA: %v", err)
		}
	}
	if got := fc.describeCalls(); got != 3 {
		t.Errorf("DescribeCluster called %d times in all, want 3 (once more, then the connection is kept)", got)
	}
}

// TestUnauthorizedRedescribes: an API server that answers 401 even to the
// retry with a fresh token drops the connection, so each invocation
// describes the cluster again (a cluster created again under the same name
// is found), and the message names the identity to map.
func TestUnauthorizedRedescribes(t *testing.T) {
	t.Parallel()
	fc := newFakeCluster(t)
	fc.unauthorize()
	h := fc.handler(discardLogger())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range 2 {
		_, err := h.Invoke(ctx, []byte(`{}`))
		if le := lambdaErr(t, err); le.Type != "Unauthorized" {
			t.Fatalf("invocation %d: %s %q, want Unauthorized", i+1, le.Type, le.Message)
		}
	}
	if d, n := fc.describeCalls(), len(fc.bearers()); d != 2 || n != 4 {
		t.Errorf("%d DescribeCluster calls and %d API requests for two invocations, want 2 and 4 (each request retried once)", d, n)
	}
}
