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
	"log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"

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

func TestHandlerEnsureNginx(t *testing.T) {
	dyn := newFakeDynamic()
	connects := 0
	h := New(testConfig, fakeConnector(dyn, &connects), discardLogger())
	ctx := context.Background()

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
	if connects != 1 {
		t.Errorf("connected %d times, want once per process and target", connects)
	}
}

func TestHandlerInvalidEventWritesNothing(t *testing.T) {
	dyn := newFakeDynamic()
	connects := 0
	h := New(testConfig, fakeConnector(dyn, &connects), discardLogger())
	for _, ev := range []string{`{"replicas":-4}`, `{"nmae":"x"}`, `{"namespace":"UPPER"}`,
		`{"action":"status","kind":"Deployment","name":"nginx","action":"delete"}`, `{"action":"restart","dryRun":true,"DRYRUN":false}`,
		`{"Replicas":3}`, `{"action":"status"} {"action":"delete"}`, `not json`, `[{}]`, `"x"`,
		`{"name":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}`,
		`{"action":"scale","selector":"app=web\u0000","replicas":0}`} {
		_, err := h.Invoke(context.Background(), []byte(ev))
		if le := lambdaErr(t, err); le.Type != "InvalidEvent" {
			t.Errorf("%s: errorType %s, want InvalidEvent", ev, le.Type)
		}
	}
	if connects != 0 || len(dyn.Actions()) != 0 {
		t.Errorf("invalid events connected %d times and made %d requests, want none", connects, len(dyn.Actions()))
	}
}

// fakeCluster is a loopback stand-in for AWS (EKS DescribeCluster and STS
// GetCallerIdentity) and a TLS API server, for a handler run through the
// real connector: real credentials provider, real token minting, real
// client-go transport.
type fakeCluster struct {
	aws, api     *httptest.Server
	unauthorized bool

	mu          sync.Mutex
	bearers     []string
	deployments map[string]bool
	// caPEM is the CA DescribeCluster reports: the API server's, unless a
	// test replaces it (a cluster created again has another CA).
	caPEM     []byte
	describes int
}

func newFakeCluster(tb testing.TB) *fakeCluster {
	tb.Helper()
	fc := &fakeCluster{deployments: map[string]bool{}}
	fc.api = httptest.NewUnstartedServer(http.HandlerFunc(fc.serveAPI))
	fc.api.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes a test fails on purpose
	fc.api.StartTLS()
	tb.Cleanup(fc.api.Close)
	fc.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fc.api.Certificate().Raw})
	fc.aws = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/clusters/") {
			fc.mu.Lock()
			fc.describes++
			caPEM := fc.caPEM
			fc.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"cluster": map[string]any{
				"name": "demo", "status": "ACTIVE", "endpoint": fc.api.URL,
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

func (fc *fakeCluster) serveAPI(w http.ResponseWriter, r *http.Request) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.bearers = append(fc.bearers, r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	status := func(code int, reason string) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"`+reason+`","code":`+
			map[int]string{401: "401", 404: "404"}[code]+`}`)
	}
	if fc.unauthorized {
		status(http.StatusUnauthorized, "Unauthorized")
		return
	}
	switch r.Method {
	case http.MethodGet:
		if !fc.deployments[r.URL.Path] {
			status(http.StatusNotFound, "NotFound")
			return
		}
	case http.MethodPatch:
		fc.deployments[r.URL.Path] = true
		w.WriteHeader(http.StatusCreated)
	}
	_, _ = io.WriteString(w, `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"nginx","namespace":"default","resourceVersion":"7"}}`)
}

func TestFullRunLogsNoSecrets(t *testing.T) {
	fc := newFakeCluster(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	awsCfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("ASIAEXAMPLEEXAMPLE01", "secret", "session"),
		BaseEndpoint: aws.String(fc.aws.URL),
	}
	h := New(testConfig, NewConnector(awsCfg), log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	out, err := h.Invoke(ctx, []byte(`{}`))
	if err != nil {
		t.Fatalf("first invocation: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Objects) != 1 || resp.Objects[0].Result != kube.Created {
		t.Errorf("response %s (%v), want one object created", out, err)
	}
	fc.mu.Lock()
	fc.unauthorized = true
	fc.mu.Unlock()
	_, err = h.Invoke(ctx, []byte(`{}`))
	le := lambdaErr(t, err)
	if le.Type != "Unauthorized" || !strings.Contains(le.Message, "arn:aws:iam::123456789012:role/fn-role") {
		t.Errorf("401: got %s %q, want Unauthorized naming the role", le.Type, le.Message)
	}

	fc.mu.Lock()
	bearers := fc.bearers
	fc.mu.Unlock()
	if len(bearers) == 0 || !strings.HasPrefix(bearers[0], "Bearer k8s-aws-v1.") {
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
	fc := newFakeCluster(t)
	right := fc.caPEM
	fc.caPEM = otherCA(t)
	awsCfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("ASIAEXAMPLEEXAMPLE01", "secret", "session"),
		BaseEndpoint: aws.String(fc.aws.URL),
	}
	h := New(testConfig, NewConnector(awsCfg), discardLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	describes := func() int { fc.mu.Lock(); defer fc.mu.Unlock(); return fc.describes }

	for i := range 2 {
		_, err := h.Invoke(ctx, []byte(`{}`))
		le := lambdaErr(t, err)
		if le.Type != "Unavailable" || !strings.Contains(le.Message, "certificate") || !strings.Contains(le.Message, "describes the cluster again") {
			t.Errorf("invocation %d: %s %q, want invoke.Unavailable about the certificate", i+1, le.Type, le.Message)
		}
	}
	if got := describes(); got != 2 {
		t.Errorf("DescribeCluster called %d times for two invocations, want 2 (the connection dropped each time)", got)
	}
	fc.mu.Lock()
	fc.caPEM = right
	fc.mu.Unlock()
	for range 2 {
		if _, err := h.Invoke(ctx, []byte(`{}`)); err != nil {
			t.Fatalf("with the right CA: %v", err)
		}
	}
	if got := describes(); got != 3 {
		t.Errorf("DescribeCluster called %d times in all, want 3 (once more, then the connection is kept)", got)
	}
}

// TestUnauthorizedRedescribes: an API server that answers 401 even to the
// retry with a fresh token drops the connection, so each invocation
// describes the cluster again (a cluster created again under the same name
// is found), and the message names the identity to map.
func TestUnauthorizedRedescribes(t *testing.T) {
	fc := newFakeCluster(t)
	fc.unauthorized = true
	awsCfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("ASIAEXAMPLEEXAMPLE01", "secret", "session"),
		BaseEndpoint: aws.String(fc.aws.URL),
	}
	h := New(testConfig, NewConnector(awsCfg), discardLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 2 {
		_, err := h.Invoke(ctx, []byte(`{}`))
		if le := lambdaErr(t, err); le.Type != "Unauthorized" {
			t.Fatalf("invocation %d: %s %q, want Unauthorized", i+1, le.Type, le.Message)
		}
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.describes != 2 || len(fc.bearers) != 4 {
		t.Errorf("%d DescribeCluster calls and %d API requests for two invocations, want 2 and 4 (each request retried once)",
			fc.describes, len(fc.bearers))
	}
}
