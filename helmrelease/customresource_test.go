package helmrelease

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func TestHelmProperties(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, props string
		want        Event
		problem     string
	}{
		{name: "strings as CloudFormation sends them", props: `{"ServiceToken":"arn","ServiceTimeout":"300","Release":"web","Chart":"demo","Repository":"https://x.example",` +
			`"Version":"1.0.0","Values":{"replicaCount":"2"},"CreateNamespace":"true","Wait":"300","Atomic":"false"}`,
			want: Event{Action: ActionUpgrade, Release: "web", Chart: "demo", Repository: "https://x.example", Version: "1.0.0",
				Values: json.RawMessage(`{"replicaCount":"2"}`), CreateNamespace: true, Wait: &Wait{On: true, Max: 300 * time.Second}}},
		{name: "values as a JSON string", props: `{"Release":"web","Values":"{\"a\":1}","Wait":"true"}`,
			want: Event{Action: ActionUpgrade, Release: "web", Values: json.RawMessage(`{"a":1}`), Wait: &Wait{On: true}}},
		{name: "unknown property", props: `{"Release":"web","Value":{}}`, problem: `ResourceProperties: unknown field "Value"; field names are case-sensitive; known fields: ServiceToken,`},
		{name: "repeated property", props: `{"Release":"web","Release":"api"}`, problem: `ResourceProperties: duplicate field "Release"`},
		{name: "bad bool", props: `{"Release":"web","Atomic":"yes"}`, problem: "Atomic must be true or false"},
		{name: "bad wait", props: `{"Release":"web","Wait":"soon"}`, problem: "Wait"},
		{name: "values not an object", props: `{"Release":"web","Values":"a: 1"}`, problem: "Values must be an object"},
		{name: "no properties", props: ``, problem: "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeHelmProperties(json.RawMessage(tc.props), "ResourceProperties", ActionUpgrade)
			if tc.problem != "" {
				mustInvalid(t, err, tc.problem)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

var testDefaults = invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"}

// failingOpener counts its calls and fails each with err: the work of a
// resource that got past its checks.
type failingOpener struct {
	mu    sync.Mutex
	calls []auth.Target
	err   error
}

func (o *failingOpener) open(_ context.Context, t auth.Target) (*invoke.Conn[*cluster], error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, t)
	return nil, o.err
}

func (o *failingOpener) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.calls)
}

func newTestHandler(open invoke.Opener[*cluster]) *Handler {
	return newHandler(Config{Defaults: testDefaults}, open, nil, slog.New(slog.DiscardHandler), time.Now)
}

// The PhysicalResourceId changes exactly when the release does; properties
// that do not resolve name none (the engine keeps the request's).
func TestPhysicalID(t *testing.T) {
	t.Parallel()
	r := resource{newTestHandler(nil)}
	req := func(props string) cfnresource.Request {
		return cfnresource.Request{RequestType: cfn.RequestUpdate, StackID: "arn:aws:cloudformation:us-east-1:1:stack/app/u",
			LogicalResourceID: "Web", PhysicalResourceID: "old", ResourceProperties: json.RawMessage(props)}
	}
	id := func(props string) string {
		t.Helper()
		id, err := r.PhysicalID(req(props))
		if err != nil {
			t.Fatalf("%s: %v", props, err)
		}
		return id
	}
	base := id(`{"Release":"web","Chart":"demo","Repository":"https://x.example","Version":"1.0.0"}`)
	if !strings.HasPrefix(base, "app/Web/") || len(base) != len("app/Web/")+16 {
		t.Errorf("id %s, want app/Web/<16 hex digits>", base)
	}
	if got := id(`{"Release":"web","Chart":"demo","Repository":"https://x.example","Version":"2.0.0","Values":{"a":1}}`); got != base {
		t.Errorf("a new version or values changed the id: %s, %s", got, base)
	}
	for _, props := range []string{`{"Release":"api","Chart":"demo","Repository":"https://x.example"}`,
		`{"Release":"web","Namespace":"apps","Chart":"demo","Repository":"https://x.example"}`,
		`{"Release":"web","Cluster":"other","Chart":"demo","Repository":"https://x.example"}`} {
		if got := id(props); got == base {
			t.Errorf("%s kept the id %s", props, got)
		}
	}
	if got, err := r.PhysicalID(req(`{"Release":"Bad_Name"}`)); err == nil {
		t.Errorf("unreadable properties: id %s, want an error", got)
	}
}

// Delete uninstalls only the release its owner (Plan.Owner) names: a Delete
// whose properties are another owner's touches nothing, and the Delete
// after a failed Create (its ID ends in /create-failed) works for the ID
// without the suffix.
func TestDeleteOwnership(t *testing.T) {
	t.Parallel()
	opener := &failingOpener{err: errors.New("unreachable")}
	r := resource{newTestHandler(opener.open)}
	props := json.RawMessage(`{"Release":"web","Chart":"demo","Repository":"https://x.example"}`)
	req := cfnresource.Request{RequestType: cfn.RequestDelete, StackID: "arn:aws:cloudformation:us-east-1:1:stack/app/u",
		LogicalResourceID: "Web", ResourceProperties: props}
	id, err := r.PhysicalID(req)
	if err != nil {
		t.Fatal(err)
	}

	req.PhysicalResourceID = id + cfnresource.FailedCreateSuffix
	req.ResourceProperties = json.RawMessage(`{"Release":"api","Chart":"demo","Repository":"https://x.example"}`)
	reason, err := r.Delete(context.Background(), req, cfnresource.Plan{ID: req.PhysicalResourceID, Owner: id, AfterFailedCreate: true})
	if err != nil || !strings.Contains(reason, "names no release of these properties") || opener.count() != 0 {
		t.Errorf("another owner's properties: got %q, %v, %d connections; want nothing to delete and none", reason, err, opener.count())
	}

	req.ResourceProperties = props
	_, err = r.Delete(context.Background(), req, cfnresource.Plan{ID: req.PhysicalResourceID, Owner: id, AfterFailedCreate: true})
	if err == nil || opener.count() != 1 {
		t.Errorf("the owner's properties: got %v after %d connections; want the uninstall tried (and failed)", err, opener.count())
	}
}

// Through the engine, as CloudFormation sees it: a Create that fails
// answers FAILED with <id>/create-failed; the rollback's Delete of that ID
// tries to uninstall the release of <id>, and is answered SUCCESS even
// though the cluster cannot be reached.
func TestCustomResourceFailedCreate(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		answers []cfn.Response
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a cfn.Response
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &a); err != nil {
			t.Errorf("answer %s: %v", body, err)
		}
		mu.Lock()
		answers = append(answers, a)
		mu.Unlock()
	}))
	defer srv.Close()
	opener := &failingOpener{err: &auth.ClusterNotActiveError{Name: "demo", Status: "UPDATING"}}
	h := newTestHandler(opener.open)
	h.cfn = cfnresource.NewServer(h.log, cfnresource.WithClient(toServer(t, srv)))

	send := func(fields map[string]any) cfn.Response {
		t.Helper()
		ev := map[string]any{"StackId": "arn:aws:cloudformation:us-east-1:1:stack/app/u", "RequestId": "r-" + fields["RequestType"].(string),
			"ResponseURL":  "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?X-Amz-Signature=s",
			"ResourceType": "Custom::HelmRelease", "LogicalResourceId": "Web",
			"ResourceProperties": map[string]any{"Release": "web", "Chart": "demo", "Repository": "https://127.0.0.1:1/charts"}}
		for k, v := range fields {
			ev[k] = v
		}
		payload, _ := json.Marshal(ev)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.Invoke(ctx, payload); err != nil {
			t.Fatalf("%v: %v", fields, err)
		}
		mu.Lock()
		defer mu.Unlock()
		return answers[len(answers)-1]
	}
	// The chart cannot be fetched (nothing listens): FAILED.
	created := send(map[string]any{"RequestType": "Create"})
	if created.Status != cfn.StatusFailed || !strings.HasSuffix(created.PhysicalResourceID, cfnresource.FailedCreateSuffix) ||
		!strings.HasPrefix(created.PhysicalResourceID, "app/Web/") {
		t.Fatalf("create: %+v, want FAILED with app/Web/<hash>/create-failed", created)
	}
	deleted := send(map[string]any{"RequestType": "Delete", "PhysicalResourceId": created.PhysicalResourceID})
	if deleted.Status != cfn.StatusSuccess || deleted.PhysicalResourceID != created.PhysicalResourceID ||
		!strings.Contains(deleted.Reason, "Unavailable") || opener.count() != 1 {
		t.Errorf("rollback delete: %+v after %d connections; want SUCCESS saying why the uninstall failed, after one", deleted, opener.count())
	}
}

// toServer is an http.Client that sends every request to srv, trusting its
// certificate for any AWS host name.
func toServer(t *testing.T, srv *httptest.Server) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com", MinVersion: tls.VersionTLS12},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
