package handler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

func TestConnectionsAreLeastRecentlyUsed(t *testing.T) {
	dyn := newFakeDynamic()
	connects := map[string]int{}
	connect := func(_ context.Context, target auth.Target) (*Conn, error) {
		connects[target.Cluster]++
		return &Conn{Kube: kube.New(dyn, newTestMapper())}, nil
	}
	h := New(testConfig, connect, discardLogger())
	invoke := func(cluster string) {
		t.Helper()
		if _, err := h.Invoke(context.Background(), []byte(`{"cluster":"`+cluster+`"}`)); err != nil {
			t.Fatalf("cluster %s: %v", cluster, err)
		}
	}
	for i := range maxConns {
		invoke(fmt.Sprintf("c%d", i))
	}
	invoke("c0")  // cached, and now the most recently used
	invoke("new") // one more than maxConns: c1, the least recently used, goes
	invoke("c0")  // still cached
	invoke("c1")  // opened again
	want := map[string]int{"new": 1}
	for i := range maxConns {
		want[fmt.Sprintf("c%d", i)] = 1
	}
	want["c1"] = 2
	if diff := cmp.Diff(want, connects); diff != "" {
		t.Errorf("connects per cluster (-want +got):\n%s", diff)
	}
	if h.conns.Len() != maxConns {
		t.Errorf("%d connections kept, want at most %d", h.conns.Len(), maxConns)
	}
}

func TestStaleConnectionIsDropped(t *testing.T) {
	const apiURL = "https://ABCD.gr7.us-east-1.eks.amazonaws.com/apis/apps/v1/namespaces/default/deployments/nginx"
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	tests := []struct {
		name     string
		err      error
		wantType string
		dropped  bool
	}{
		{"certificate of another CA", &url.Error{Op: "Get", URL: apiURL,
			Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, "Unavailable", true},
		{"certificate for another host", &url.Error{Op: "Get", URL: apiURL, Err: x509.HostnameError{Host: "ABCD"}}, "Unavailable", true},
		{"endpoint name gone", &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "ABCD", IsNotFound: true}}}, "Unavailable", true},
		{"401 after a fresh token", apierrors.NewUnauthorized("Unauthorized"), "Unauthorized", true},
		{"403 keeps the connection", apierrors.NewForbidden(gr, "nginx",
			errors.New(`User "x" cannot patch resource "deployments" in API group "apps" in the namespace "default"`)), "Forbidden", false},
		{"connection refused keeps it", &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}, "Unavailable", false},
		{"500 keeps it", apierrors.NewInternalError(errors.New("etcd")), "Unavailable", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dyn := newFakeDynamic()
			var failing atomic.Bool
			failing.Store(true)
			dyn.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
				if failing.Load() {
					return true, nil, tt.err
				}
				return false, nil, nil
			})
			connects := 0
			h := New(testConfig, fakeConnector(dyn, &connects), discardLogger())
			ctx := context.Background()
			for range 2 {
				_, err := h.Invoke(ctx, []byte(`{}`))
				if le := lambdaErr(t, err); le.Type != tt.wantType {
					t.Fatalf("errorType %s (%s), want %s", le.Type, le.Message, tt.wantType)
				}
			}
			wantConnects := 1
			if tt.dropped {
				wantConnects = 2
			}
			if connects != wantConnects {
				t.Errorf("two failed invocations connected %d times, want %d", connects, wantConnects)
			}
			// Once the cluster answers again, the connection is kept.
			failing.Store(false)
			for range 2 {
				if _, err := h.Invoke(ctx, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			// A dropped connection is opened once more, then kept.
			if tt.dropped {
				wantConnects++
			}
			if connects != wantConnects {
				t.Errorf("connected %d times in all after the cluster answered again, want %d", connects, wantConnects)
			}
		})
	}
}

func TestIsCustomResource(t *testing.T) {
	tests := []struct {
		payload string
		want    bool
	}{
		{`{"RequestType":"Create","ResponseURL":"https://example.com/x","StackId":"s"}`, true},
		{`{"ResponseURL":"https://example.com/x","RequestType":"Delete"}`, true},
		{`{"requestType":"Create","responseURL":"https://example.com/x"}`, false}, // names are case-sensitive
		{`{"RequestType":"Create"}`, false},
		{`{"action":"apply","manifest":"RequestType: ResponseURL"}`, false},
		{`{"a":{"RequestType":"Create","ResponseURL":"u"}}`, false}, // only the top level counts
		{`{"RequestType":1,"ResponseURL":"u"}`, false},
		{`not json "RequestType" "ResponseURL"`, false},
	}
	for _, tt := range tests {
		if got := isCustomResource([]byte(tt.payload)); got != tt.want {
			t.Errorf("isCustomResource(%s) = %v, want %v", tt.payload, got, tt.want)
		}
	}
}

// TestResponseBytesAsBefore: the raw-payload handler writes a Response
// byte for byte as aws-lambda-go wrote the typed handler's value before it.
func TestResponseBytesAsBefore(t *testing.T) {
	from, to := int32(3), int32(0)
	resp := &Response{Cluster: "demo", Action: "status", DryRun: true, Objects: []kube.ObjectResult{
		{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "n", Name: "d", Result: kube.Scaled, From: &from, To: &to,
			Readiness: &kube.Readiness{Message: `<b>&"quoted"</b> ünïcode`}}}}
	typed := lambda.NewHandler(func(context.Context, json.RawMessage) (*Response, error) { return resp, nil })
	want, err := typed.Invoke(context.Background(), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := marshalResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("response bytes (-aws-lambda-go +handler):\n%s", diff)
	}
}
