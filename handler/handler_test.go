package handler

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/auth"
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

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// clientTimeout is net/http's error for a request past the client's
// Timeout: a net.Error that is also context.DeadlineExceeded.
type clientTimeout struct{}

func (clientTimeout) Error() string {
	return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
}
func (clientTimeout) Timeout() bool        { return true }
func (clientTimeout) Temporary() bool      { return true }
func (clientTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// apiError is a minimal smithy.APIError.
type apiError struct{ code string }

func (e apiError) Error() string                 { return e.code }
func (e apiError) ErrorCode() string             { return e.code }
func (e apiError) ErrorMessage() string          { return e.code }
func (e apiError) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

func TestClassify(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	forbidden := &kube.OpError{Verb: "patch", Resource: "deployments.apps", Namespace: "other", Name: "nginx",
		Err: apierrors.NewForbidden(gr, "nginx", errors.New(`User "lambda:fn" cannot patch resource "deployments" in API group "apps" in the namespace "other"`))}
	vap := &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "default", Name: "a",
		Err: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "a",
			errors.New(`ValidatingAdmissionPolicy 'no-blue' with binding 'no-blue' denied request: blue is not allowed here`))}
	webhook := &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "default", Name: "a",
		Err: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "a",
			errors.New(`admission webhook "policy.example.com" denied the request: images must come from ECR`))}
	unauthorized := &kube.OpError{Verb: "get", Resource: "deployments.apps", Namespace: "default",
		Err: apierrors.NewUnauthorized("Unauthorized")}
	const apiURL = "https://ABCD.gr7.us-east-1.eks.amazonaws.com/apis/apps/v1/namespaces/default/deployments/nginx"
	refused := &url.Error{Op: "Get", URL: apiURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	caller := func(context.Context) (string, error) { return "arn:aws:iam::123456789012:role/fn-role", nil }
	noCaller := func(context.Context) (string, error) { return "", errors.New("sts down") }

	tests := []struct {
		name      string
		err       error
		callerARN func(context.Context) (string, error)
		roleARN   string
		wantCode  Code
		wantInMsg []string
	}{
		{"cluster not found", &auth.ClusterNotFoundError{Name: "nope", Region: "us-east-1"}, nil, "", ClusterNotFound,
			[]string{"nope", "us-east-1", "CLUSTER_NAME"}},
		{"cluster creating", &auth.ClusterNotActiveError{Name: "demo", Status: "CREATING"}, nil, "", Unavailable, []string{"CREATING"}},
		{"deadline", &kube.OpError{Verb: "patch", Resource: "deployments.apps", Err: context.DeadlineExceeded}, nil, "", Timeout,
			[]string{"invocation deadline came first", "Timeout"}},
		{"a request's own timeout is Unavailable", &kube.OpError{Verb: "patch", Resource: "deployments.apps", Err: &url.Error{Op: "Patch", URL: apiURL,
			Err: clientTimeout{}}}, nil, "", Unavailable, []string{"the API server of cluster demo at https://ABCD.gr7.us-east-1.eks.amazonaws.com did not answer"}},
		{"a step's own deadline is not the invocation's", &kube.OpError{Verb: "get", Resource: "customresourcedefinitions", Err: context.DeadlineExceeded},
			nil, "", Timeout, []string{"a step of the action ran out of its time"}},
		{"401 names the caller", unauthorized, caller, "", Unauthorized,
			[]string{"arn:aws:iam::123456789012:role/fn-role", "access entry", "aws-auth"}},
		{"401 falls back to the target role without path", unauthorized, noCaller, "arn:aws:iam::210987654321:role/ops/admin", Unauthorized,
			[]string{"arn:aws:iam::210987654321:role/admin"}},
		{"403 names verb, resource, namespace", forbidden, nil, "", Forbidden,
			[]string{`"patch"`, `"deployments.apps"`, `"other"`, "permissions.yml"}},
		{"403 from a ValidatingAdmissionPolicy quotes it", vap, nil, "", Forbidden,
			[]string{"admission policy", "refused the patch of configmaps a in namespace default", "blue is not allowed here", "not RBAC"}},
		{"403 from a webhook quotes it", webhook, nil, "", Forbidden, []string{"admission policy or webhook", "images must come from ECR"}},
		{"AssumeRole denied names the target", apiError{"AccessDenied"}, nil, "arn:aws:iam::210987654321:role/t", Forbidden,
			[]string{"sts:AssumeRole", "arn:aws:iam::210987654321:role/t"}},
		{"DescribeCluster denied", apiError{"AccessDeniedException"}, nil, "", Forbidden, []string{"eks:DescribeCluster"}},
		{"unreachable", &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: refused}, nil, "", Unavailable,
			[]string{"connection refused", "https://ABCD.gr7.us-east-1.eks.amazonaws.com did not answer", "VpcConfig"}},
		{"connect timeout", &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}}}, nil, "", Unavailable, []string{"https://ABCD.gr7.us-east-1.eks.amazonaws.com"}},
		{"certificate of another CA", &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: &url.Error{Op: "Get", URL: apiURL,
			Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}}, nil, "", Unavailable,
			[]string{"certificate", "describes the cluster again"}},
		{"AWS endpoint silent", fmt.Errorf("credentials: %w", &auth.EndpointError{Service: "STS", Endpoint: "https://sts.us-east-1.amazonaws.com",
			Err: errors.New("no answer")}), nil, "", Unavailable, []string{"STS", "https://sts.us-east-1.amazonaws.com", "sts interface endpoint"}},
		{"AssumeRole denied names both roles", &auth.AssumeRoleError{Caller: "arn:aws:iam::123456789012:role/fn-role",
			Target: "arn:aws:iam::210987654321:role/t", Err: apiError{"AccessDenied"}}, nil, "", Forbidden,
			[]string{"arn:aws:iam::123456789012:role/fn-role needs sts:AssumeRole on arn:aws:iam::210987654321:role/t",
				"trust policy of arn:aws:iam::210987654321:role/t must allow arn:aws:iam::123456789012:role/fn-role"}},
		{"AWS throttling", apiError{"ThrottlingException"}, nil, "", Unavailable, []string{"throttling"}},
		{"S3 throttling", apiError{"SlowDown"}, nil, "", Unavailable, []string{"throttling"}},
		{"AWS 500", &smithy.OperationError{ServiceID: "EKS", OperationName: "DescribeCluster", Err: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 500}}, Err: errors.New("internal")}}, nil, "", Unavailable,
			[]string{"AWS EKS"}},
		{"500 from the API server", &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: apierrors.NewInternalError(errors.New("etcd is down"))},
			nil, "", Unavailable, []string{"answered 500", "etcd is down"}},
		{"429 from the API server", &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: apierrors.NewTooManyRequests("busy", 1)},
			nil, "", Unavailable, []string{"answered 429"}},
		{"typed patch 500 is the event's fault", &kube.OpError{Verb: "patch", Resource: "configmaps", Name: "a", Err: apierrors.NewInternalError(
			errors.New("failed to create typed patch object (default/a; /v1, Kind=ConfigMap): .spec: field not declared in schema"))},
			nil, "", InvalidEvent, []string{"field .spec", "does not fit the object's schema"}},
		{"an unknown error is Internal with its text", &kube.OpError{Verb: "patch", Resource: "deployments.apps",
			Err: errors.New(`unable to find api field in struct Unstructured for the json field "spec"`)}, nil, "", Internal,
			[]string{"unable to find api field"}},
		{"a transport wrapping a non-network error is Internal", &kube.OpError{Verb: "get", Resource: "deployments.apps",
			Err: &url.Error{Op: "Get", URL: apiURL, Err: errors.New("failed to refresh cached credentials")}}, nil, "", Internal,
			[]string{"failed to refresh cached credentials"}},
		{"already classified", invalid("bad"), nil, "", InvalidEvent, []string{"bad"}},
		{"422 from the server is the event's fault", &kube.OpError{Verb: "patch", Resource: "deployments.apps",
			Err: apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "nginx", nil)}, nil, "", InvalidEvent,
			[]string{"refused the object"}},
		{"400 from the server is the event's fault", apierrors.NewBadRequest("field not declared in schema"), nil, "", InvalidEvent,
			[]string{"field not declared in schema"}},
		{"a secret in an error is redacted", errors.New("Get https://sts.amazonaws.com/?X-Amz-Signature=abc123&X-Amz-Credential=AKIA: Bearer k8s-aws-v1.aHR0cHM6Ly9zdHM"),
			nil, "", Internal, []string{"X-Amz-Signature=REDACTED", "k8s-aws-v1.REDACTED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := defaultRequest
			req.RoleARN = tt.roleARN
			ctx := context.Background()
			if tt.name == "deadline" {
				// The invocation's own context has ended.
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, time.Now().Add(-time.Second))
				defer cancel()
			}
			got := classify(ctx, tt.err, diagnosis{req: req, callerARN: tt.callerARN})
			if got.Code != tt.wantCode {
				t.Errorf("code = %s, want %s (message %q)", got.Code, tt.wantCode, got.Message)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(got.Message, s) {
					t.Errorf("message %q lacks %q", got.Message, s)
				}
			}
			if strings.Contains(tt.name, "policy") || strings.Contains(tt.name, "webhook") {
				if strings.Contains(got.Message, "permissions") || strings.Contains(got.Message, "grant") {
					t.Errorf("a policy refusal points to permissions: %q", got.Message)
				}
			}
			if got.Code != Unavailable && strings.Contains(got.Message, "network access") {
				t.Errorf("a %s error points to the network: %q", got.Code, got.Message)
			}
			if strings.Contains(got.Message, "abc123") || strings.Contains(got.Message, "aHR0cHM6Ly9zdHM") {
				t.Errorf("message leaks a secret: %q", got.Message)
			}
		})
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
// the invocation is Unavailable saying so, the connection is not kept, and
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
			t.Errorf("invocation %d: %s %q, want Unavailable about the certificate", i+1, le.Type, le.Message)
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
