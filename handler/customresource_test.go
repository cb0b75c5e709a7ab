package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/internal/kubefake"
	"github.com/lambda-eks/lambda-eks/kube"
)

// toServer sends every request to srv, whatever its URL says, as the shim
// does for the replica: the handler checks for an AWS host first.
type toServer struct{ srv *httptest.Server }

func (t toServer) RoundTrip(r *http.Request) (*http.Response, error) {
	u, _ := url.Parse(t.srv.URL)
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
	return t.srv.Client().Transport.RoundTrip(r)
}

// cfnHarness plays CloudFormation: it sends requests to a Handler whose
// connector is given, and receives the answers.
type cfnHarness struct {
	h   *Handler
	rec *recorder
}

func newCFNHarness(t *testing.T, connect Connector, opts ...Option) *cfnHarness {
	t.Helper()
	cfg, err := ConfigFromEnv(func(k string) string {
		return map[string]string{"CLUSTER_NAME": "demo", "AWS_REGION": "us-east-1"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	// A short grace after a cut at the deadline and short PUT retries; the
	// PUT goes to loopback.
	engine := cfnresource.NewServer(discardLogger(), cfnresource.WithClient(&http.Client{Transport: toServer{srv}}),
		cfnresource.WithTiming(time.Second, 50*time.Millisecond, 2*time.Second, func(int) time.Duration { return 10 * time.Millisecond }))
	opts = append([]Option{WithCustomResources(engine), WithOutputInterval(10 * time.Millisecond)}, opts...)
	return &cfnHarness{h: New(cfg, connect, discardLogger(), opts...), rec: rec}
}

// recorder is a fake ResponseURL: it answers each PUT 200 and records the
// bodies it received.
type recorder struct {
	mu     sync.Mutex
	bodies []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, string(b))
	w.WriteHeader(http.StatusOK)
}

func (r *recorder) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

// send invokes the handler with a request and returns the answer
// CloudFormation received, after checking that the invocation returned it.
func (c *cfnHarness) send(ctx context.Context, t *testing.T, fields map[string]any) cfn.Response {
	t.Helper()
	req := map[string]any{
		"RequestType": "Create", "ResponseURL": "https://cfn-response.s3.amazonaws.com/r?X-Amz-Signature=secret",
		"StackId":   "arn:aws:cloudformation:us-east-1:123456789012:stack/s/u",
		"RequestId": "req-1", "LogicalResourceId": "Objects", "ResourceType": "Custom::KubernetesManifest",
	}
	for k, v := range fields {
		req[k] = v
	}
	payload, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	before := len(c.rec.sent())
	out, err := c.h.Invoke(ctx, payload)
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	sent := c.rec.sent()
	if len(sent) != before+1 {
		t.Fatalf("%d answers sent, want 1", len(sent)-before)
	}
	if sent[before] != string(out) {
		t.Errorf("the invocation returned %s, but sent %s", out, sent[before])
	}
	var resp cfn.Response
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.StackID != req["StackId"] || resp.RequestID != req["RequestId"] || resp.LogicalResourceID != req["LogicalResourceId"] {
		t.Errorf("ids not copied: %+v", resp)
	}
	return resp
}

const oneConfigMap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"

func TestCustomResourceAnswers(t *testing.T) {
	t.Parallel()
	notFound := func(context.Context, auth.Target) (*Conn, error) {
		return nil, &auth.ClusterNotFoundError{Name: "gone", Region: "us-east-1"}
	}
	panics := func(context.Context, auth.Target) (*Conn, error) { panic("boom") }
	unauthorized := func(context.Context, auth.Target) (*Conn, error) {
		return nil, apierrors.NewUnauthorized("the server has asked for the client to provide credentials")
	}
	tests := []struct {
		name       string
		connect    Connector
		fields     map[string]any
		wantStatus cfn.StatusType
		wantReason string
		wantID     string
	}{
		{name: "bad manifest: FAILED naming the document, nothing connected",
			fields: map[string]any{"ResourceProperties": map[string]any{
				"Manifest": oneConfigMap + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"}},
			wantStatus: cfn.StatusFailed, wantReason: "InvalidEvent: manifest document 2 (ConfigMap \"\"): metadata.name is missing"},
		{name: "unknown property", fields: map[string]any{"ResourceProperties": map[string]any{"Manifest": oneConfigMap, "Prune": "maybe"}},
			wantStatus: cfn.StatusFailed, wantReason: "InvalidEvent: ResourceProperties: ", wantID: "s/Objects/"},
		{name: "cluster not found on create is FAILED", connect: notFound,
			fields:     map[string]any{"ResourceProperties": map[string]any{"Manifest": oneConfigMap, "Cluster": "gone"}},
			wantStatus: cfn.StatusFailed, wantReason: "ClusterNotFound: cluster gone not found", wantID: "s/Objects/"},
		{name: "cluster not found on delete is SUCCESS", connect: notFound,
			fields: map[string]any{"RequestType": "Delete", "PhysicalResourceId": "s/Objects/0123",
				"ResourceProperties": map[string]any{"Manifest": oneConfigMap, "Cluster": "gone"}},
			wantStatus: cfn.StatusSuccess, wantReason: "nothing to delete: cluster gone is gone", wantID: "s/Objects/0123"},
		{name: "delete after a create that failed on its properties", connect: panics,
			fields: map[string]any{"RequestType": "Delete", "PhysicalResourceId": "s/Objects/01/create-failed",
				"ResourceProperties": map[string]any{"Manifest": "kind: [", "ServiceToken": "arn"}},
			wantStatus: cfn.StatusSuccess, wantReason: "nothing to delete", wantID: "s/Objects/01/create-failed"},
		{name: "delete after a create that failed: best effort", connect: unauthorized,
			fields: map[string]any{"RequestType": "Delete", "PhysicalResourceId": "s/Objects/02/create-failed",
				"ResourceProperties": map[string]any{"Manifest": oneConfigMap}},
			wantStatus: cfn.StatusSuccess, wantReason: "the Create failed, and so did the cleanup after it (Unauthorized: ",
			wantID: "s/Objects/02/create-failed"},
		{name: "delete of a created resource is not best effort", connect: unauthorized,
			fields: map[string]any{"RequestType": "Delete", "PhysicalResourceId": "s/Objects/02",
				"ResourceProperties": map[string]any{"Manifest": oneConfigMap}},
			wantStatus: cfn.StatusFailed, wantReason: "Unauthorized: ", wantID: "s/Objects/02"},
		{name: "panic is FAILED", connect: panics,
			fields:     map[string]any{"ResourceProperties": map[string]any{"Manifest": oneConfigMap}},
			wantStatus: cfn.StatusFailed, wantReason: "Internal: the function panicked: boom"},
		{name: "unknown request type", fields: map[string]any{"RequestType": "Upsert", "PhysicalResourceId": "p",
			"ResourceProperties": map[string]any{"Manifest": oneConfigMap}},
			wantStatus: cfn.StatusFailed, wantReason: "InvalidEvent: RequestType \"Upsert\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			connect := tt.connect
			if connect == nil {
				connect = func(context.Context, auth.Target) (*Conn, error) {
					t.Error("connected, want no connection")
					return nil, context.Canceled
				}
			}
			c := newCFNHarness(t, connect)
			resp := c.send(t.Context(), t, tt.fields)
			if resp.Status != tt.wantStatus || !strings.HasPrefix(resp.Reason, tt.wantReason) {
				t.Errorf("answer %s %q, want %s %q...", resp.Status, resp.Reason, tt.wantStatus, tt.wantReason)
			}
			if tt.wantID != "" && !strings.HasPrefix(resp.PhysicalResourceID, tt.wantID) {
				t.Errorf("PhysicalResourceId %q, want %q...", resp.PhysicalResourceID, tt.wantID)
			}
			if resp.PhysicalResourceID == "" {
				t.Error("no PhysicalResourceId")
			}
		})
	}
}

// TestCustomResourceAnswersBeforeTheDeadline: work that ignores its
// context is cut, and the answer still goes out before Lambda's deadline.
func TestCustomResourceAnswersBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	release := make(chan struct{})
	defer close(release)
	stuck := func(context.Context, auth.Target) (*Conn, error) {
		calls.Add(1)
		<-release // ignores ctx
		return nil, context.Canceled
	}
	c := newCFNHarness(t, stuck)
	// invoke.DeadlineMargin (500ms) and a third of the rest kept for the
	// answer leave the work a second, and the PUT 450ms after the grace:
	// room enough on a loaded machine.
	timeout := 2 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	resp := c.send(ctx, t, map[string]any{"ResourceProperties": map[string]any{"Manifest": oneConfigMap}})
	if !time.Now().Before(deadline) {
		t.Error("answered after the invocation's deadline")
	}
	if resp.Status != cfn.StatusFailed || !strings.HasPrefix(resp.Reason, "Timeout: ") || calls.Load() != 1 {
		t.Errorf("answer %s %q after %d connects, want FAILED Timeout after 1", resp.Status, resp.Reason, calls.Load())
	}
}

func TestCustomResourceWithoutResponseURL(t *testing.T) {
	t.Parallel()
	c := newCFNHarness(t, nil)
	for _, payload := range []string{
		`{"RequestType":"Create","ResponseURL":"http://cfn.s3.amazonaws.com/x"}`,
		`{"RequestType":"Create","ResponseURL":"https://169.254.169.254/x"}`,
		`{"RequestType":"Create","ResponseURL":7}`,
	} {
		if _, err := c.h.Invoke(t.Context(), []byte(payload)); err == nil || lambdaErr(t, err).Type != string(invoke.InvalidEvent) {
			t.Errorf("Invoke(%s) = %v, want InvalidEvent", payload, err)
		}
	}
	if n := len(c.rec.sent()); n != 0 {
		t.Errorf("%d answers sent, want none", n)
	}
}

// fakeS3 answers GetObject with body, or err.
type fakeS3 struct {
	body string
	err  error
	got  *s3.GetObjectInput
}

func (f *fakeS3) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	f.got = in
	if f.err != nil {
		return nil, f.err
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(strings.NewReader(f.body))}, nil
}

func TestReadManifestS3(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		s3       *fakeS3
		wantCode invoke.Code
		wantMsg  string
	}{
		{name: "read", s3: &fakeS3{body: oneConfigMap}},
		{name: "no such key", s3: &fakeS3{err: &s3types.NoSuchKey{Message: aws.String("The specified key does not exist.")}}, wantCode: invoke.NotFound, wantMsg: "ManifestS3 s3://b/k/m.yaml: NoSuchKey"},
		{name: "denied", s3: &fakeS3{err: &smithy.GenericAPIError{Code: "AccessDenied"}}, wantCode: invoke.Forbidden,
			wantMsg: "s3:GetObject on arn:aws:s3:::b/k/m.yaml"},
		{name: "too large", s3: &fakeS3{body: strings.Repeat("#", maxManifestS3Bytes+1)}, wantCode: invoke.InvalidEvent, wantMsg: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ReadManifestS3(t.Context(), tt.s3, "b", "k/m.yaml")
			if aws.ToString(tt.s3.got.Bucket) != "b" || aws.ToString(tt.s3.got.Key) != "k/m.yaml" {
				t.Errorf("GetObject of %s/%s, want b/k/m.yaml", aws.ToString(tt.s3.got.Bucket), aws.ToString(tt.s3.got.Key))
			}
			if tt.wantCode == "" {
				if err != nil || got != tt.s3.body {
					t.Fatalf("ReadManifestS3 = %q, %v; want the body", got, err)
				}
				return
			}
			if e := invoke.AsError(err); err == nil || e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("error %v, want %s containing %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestCountResults(t *testing.T) {
	t.Parallel()
	got := countResults([]kube.ObjectResult{
		{Kind: "ConfigMap", Namespace: "n", Name: "a", Result: kube.Deleted},
		{Kind: "ConfigMap", Namespace: "n", Name: "b", Result: kube.Kept, Note: "owned by s/B/1: left in place"},
		{Kind: "ConfigMap", Namespace: "n", Name: "c", Result: kube.Deleted},
	})
	if want := "deleted 2, kept 1 (ConfigMap n/b owned by s/B/1: left in place)"; got != want {
		t.Errorf("countResults = %q, want %q", got, want)
	}
	if got := countResults(nil); got != "no objects" {
		t.Errorf("countResults(nil) = %q", got)
	}
}

// TestCustomResourceLifecycle plays a stack's life against the fake API
// server: Create, an Update that changes, removes and adds, a replacement by a
// Cluster change (the fake serves every cluster) whose old resource's Delete
// keeps what the new one took over, and the last Delete.
func TestCustomResourceLifecycle(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	c := newCFNHarness(t, api.connector())
	state := func(names ...string) map[string]string {
		out := map[string]string{}
		for _, n := range names {
			u, err := api.Get(configMaps, "default", n)
			if apierrors.IsNotFound(err) {
				out[n] = "absent"
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			v, _, _ := unstructured.NestedString(u.Object, "data", "v")
			out[n] = v + " @" + u.GetAnnotations()[kube.OwnerAnnotation]
		}
		return out
	}
	manifest := func(kv ...string) string {
		var docs []string
		for i := 0; i+1 < len(kv); i += 2 {
			docs = append(docs, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+kv[i]+"\ndata:\n  v: \""+kv[i+1]+"\"\n")
		}
		return strings.Join(docs, "---\n")
	}
	out := map[string]any{"V": map[string]any{"Kind": "ConfigMap", "Name": "a", "JSONPath": "{.data.v}"}}
	v1 := map[string]any{"Manifest": manifest("a", "1", "b", "1"), "Outputs": out}
	created := c.send(t.Context(), t, map[string]any{"ResourceProperties": v1})
	id := created.PhysicalResourceID
	if created.Status != cfn.StatusSuccess || created.Data["V"] != "1" || !strings.HasPrefix(id, "s/Objects/") {
		t.Fatalf("Create answered %+v", created)
	}
	if diff := cmp.Diff(map[string]string{"a": "1 @" + id, "b": "1 @" + id, "c": "absent"}, state("a", "b", "c")); diff != "" {
		t.Errorf("after Create (-want +got):\n%s", diff)
	}

	v2 := map[string]any{"Manifest": manifest("a", "2", "c", "1"), "Outputs": out}
	updated := c.send(t.Context(), t, map[string]any{"RequestType": "Update", "PhysicalResourceId": id,
		"ResourceProperties": v2, "OldResourceProperties": v1})
	if updated.Status != cfn.StatusSuccess || updated.PhysicalResourceID != id || updated.Data["V"] != "2" {
		t.Fatalf("Update answered %+v", updated)
	}
	if diff := cmp.Diff(map[string]string{"a": "2 @" + id, "b": "absent", "c": "1 @" + id}, state("a", "b", "c")); diff != "" {
		t.Errorf("after Update (-want +got):\n%s", diff)
	}

	v3 := map[string]any{"Manifest": manifest("a", "3"), "Cluster": "other"}
	replaced := c.send(t.Context(), t, map[string]any{"RequestType": "Update", "PhysicalResourceId": id,
		"ResourceProperties": v3, "OldResourceProperties": v2})
	newID := replaced.PhysicalResourceID
	if replaced.Status != cfn.StatusSuccess || newID == id {
		t.Fatalf("replacing Update answered %+v, want SUCCESS with a new id", replaced)
	}
	if diff := cmp.Diff(map[string]string{"a": "3 @" + newID, "c": "1 @" + id}, state("a", "c")); diff != "" {
		t.Errorf("after the replacing Update, nothing pruned (-want +got):\n%s", diff)
	}
	oldDeleted := c.send(t.Context(), t, map[string]any{"RequestType": "Delete", "PhysicalResourceId": id, "ResourceProperties": v2})
	if oldDeleted.Status != cfn.StatusSuccess || !strings.Contains(oldDeleted.Reason, "kept 1") {
		t.Errorf("the old resource's Delete answered %+v, want SUCCESS keeping a", oldDeleted)
	}
	if diff := cmp.Diff(map[string]string{"a": "3 @" + newID, "c": "absent"}, state("a", "c")); diff != "" {
		t.Errorf("after the old resource's Delete (-want +got):\n%s", diff)
	}
	last := c.send(t.Context(), t, map[string]any{"RequestType": "Delete", "PhysicalResourceId": newID, "ResourceProperties": v3})
	if last.Status != cfn.StatusSuccess {
		t.Errorf("Delete answered %+v", last)
	}
	if diff := cmp.Diff(map[string]string{"a": "absent"}, state("a")); diff != "" {
		t.Errorf("after the Delete (-want +got):\n%s", diff)
	}
}

// TestCustomResourceFailedCreateCleanup: a Create that wrote its objects and
// then failed (an output that stayed empty) is cleaned up by the Delete of
// its rollback, which carries the FAILED answer's PhysicalResourceId.
func TestCustomResourceFailedCreateCleanup(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	c := newCFNHarness(t, api.connector())
	// Wait bounds the polls of the output (every 10ms in the harness).
	props := map[string]any{"Manifest": oneConfigMap, "Wait": "100ms",
		"Outputs": map[string]any{"Never": map[string]any{"Kind": "ConfigMap", "Name": "a", "JSONPath": "{.data.never}"}}}
	failed := c.send(t.Context(), t, map[string]any{"ResourceProperties": props})
	if failed.Status != cfn.StatusFailed || !strings.Contains(failed.Reason, "output Never") || !strings.HasSuffix(failed.PhysicalResourceID, cfnresource.FailedCreateSuffix) {
		t.Fatalf("Create answered %+v, want FAILED naming output Never, with a /create-failed id", failed)
	}
	if _, err := api.Get(configMaps, "default", "a"); err != nil {
		t.Fatalf("the failed Create wrote nothing (%v): the test needs it to have written", err)
	}
	deleted := c.send(t.Context(), t, map[string]any{"RequestType": "Delete", "PhysicalResourceId": failed.PhysicalResourceID,
		"ResourceProperties": props})
	if deleted.Status != cfn.StatusSuccess || deleted.Reason != "delete: deleted 1" {
		t.Errorf("Delete answered %+v, want SUCCESS deleting 1", deleted)
	}
	if _, err := api.Get(configMaps, "default", "a"); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap a still there after the rollback's Delete: %v", err)
	}
}

// TestCustomResourceFailedReplacement: a replacing Update (a Cluster change;
// the fake serves every cluster) that fails after writing is answered with
// the old ID, which CloudFormation keeps; no Delete will name the new one,
// so what it created under the new ID is deleted before the answer, and
// what it took over stays. An Update in place keeps what it wrote: the
// resource still owns it.
func TestCustomResourceFailedReplacement(t *testing.T) {
	t.Parallel()
	doc := func(kind, ns, name string) string {
		s := "---\napiVersion: v1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n"
		if ns != "" {
			s += "  namespace: " + ns + "\n"
		}
		return s
	}
	type reactor func(api *fakeAPI, newID string) kubefake.Reactor
	refuse := func(verb, resource, name string, dryRun bool) reactor {
		return func(*fakeAPI, string) kubefake.Reactor {
			return func(r kubefake.Request) error {
				if r.Verb == verb && r.Resource.Resource == resource && (name == "" || r.Name == name) && r.DryRun == dryRun {
					return apierrors.NewForbidden(r.Resource.GroupResource(), r.Name, errors.New("refused by a test policy"))
				}
				return nil
			}
		}
	}
	// invalid refuses the dry run of ConfigMap name, as a schema would.
	invalid := func(name string) reactor {
		return func(*fakeAPI, string) kubefake.Reactor {
			return func(r kubefake.Request) error {
				if r.Verb == "patch" && r.Resource.Resource == "configmaps" && r.Name == name && r.DryRun {
					return apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, name, nil)
				}
				return nil
			}
		}
	}
	// lose writes ConfigMap default/name as the apply asked, and answers
	// 500: the write was made, its answer lost.
	lose := func(name string) reactor {
		return func(api *fakeAPI, newID string) kubefake.Reactor {
			return func(r kubefake.Request) error {
				if r.Verb != "patch" || r.Resource.Resource != "configmaps" || r.Name != name || r.DryRun {
					return nil
				}
				cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
					"metadata": map[string]any{"namespace": "default", "name": name, "annotations": map[string]any{kube.OwnerAnnotation: newID}}}}
				if err := api.Create(cm); err != nil {
					t.Error(err)
				}
				return apierrors.NewInternalError(errors.New("the answer was lost"))
			}
		}
	}
	never := map[string]any{"Never": map[string]any{"Kind": "ConfigMap", "Name": "a", "JSONPath": "{.data.never}"}}
	tests := []struct {
		name   string
		props  map[string]any // the Update's; the Create's manifest is ConfigMap a
		react  []reactor
		reason string // the answer's Reason starts so
		note   string // and says so, after the failure's own message
		// want is every object annotated with an owner: the old ID or the
		// new one.
		want       map[string]string
		noDelete   bool
		dryRunOnly bool
	}{
		{name: "the apply fails part-way",
			props: map[string]any{"Cluster": "other", "Manifest": doc("Namespace", "", "fresh") + doc("ConfigMap", "fresh", "x") + doc("ConfigMap", "default", "bad")},
			react: []reactor{refuse("patch", "configmaps", "bad", false)}, reason: "Forbidden: ",
			// ConfigMap fresh/x may or may not have been written.
			note: "; the objects this replacing Update created under NEW were deleted: Namespace fresh",
			want: map[string]string{"ConfigMap default/a": "OLD"}},
		{name: "a write whose answer was lost",
			props: map[string]any{"Cluster": "other", "Manifest": doc("ConfigMap", "default", "lost")},
			react: []reactor{lose("lost")}, reason: "Unavailable: ",
			note: "; the objects this replacing Update created under NEW were deleted: ConfigMap default/lost",
			want: map[string]string{"ConfigMap default/a": "OLD"}},
		{name: "an output stays empty after the apply",
			props:  map[string]any{"Cluster": "other", "Manifest": doc("ConfigMap", "", "a") + doc("ConfigMap", "", "b"), "Wait": "100ms", "Outputs": never},
			reason: "Timeout: still empty", note: "; the objects this replacing Update created under NEW were deleted: ConfigMap default/b",
			// a was the old resource's: taken over, not this Update's to delete.
			want: map[string]string{"ConfigMap default/a": "NEW"}},
		{name: "the cleanup fails too",
			props:  map[string]any{"Cluster": "other", "Manifest": doc("Namespace", "", "fresh") + doc("ConfigMap", "default", "bad")},
			react:  []reactor{refuse("patch", "configmaps", "bad", false), refuse("delete", "namespaces", "", false)},
			reason: "Forbidden: ", note: "; the objects this replacing Update may have created under NEW could not all be deleted (",
			want: map[string]string{"ConfigMap default/a": "OLD", "Namespace fresh": "NEW"}},
		{name: "refused by the dry run: nothing written, nothing to undo",
			props:  map[string]any{"Cluster": "other", "Manifest": doc("Namespace", "", "fresh") + doc("ConfigMap", "default", "bad")},
			react:  []reactor{invalid("bad")},
			reason: "InvalidEvent: ", want: map[string]string{"ConfigMap default/a": "OLD"}, dryRunOnly: true},
		{name: "an Update in place keeps what it wrote",
			props:  map[string]any{"Manifest": doc("ConfigMap", "", "a") + doc("ConfigMap", "", "b"), "Wait": "100ms", "Outputs": never},
			reason: "Timeout: still empty",
			want:   map[string]string{"ConfigMap default/a": "OLD", "ConfigMap default/b": "OLD"}, noDelete: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			api := newFakeAPI(t)
			c := newCFNHarness(t, api.connector())
			v1 := map[string]any{"Manifest": oneConfigMap}
			created := c.send(t.Context(), t, map[string]any{"ResourceProperties": v1})
			if created.Status != cfn.StatusSuccess {
				t.Fatalf("Create answered %+v", created)
			}
			oldID := created.PhysicalResourceID
			newID := oldID
			if tt.props["Cluster"] != nil {
				newID = physicalID("arn:aws:cloudformation:us-east-1:123456789012:stack/s/u", "Objects", c.h.targetOf(Properties{Cluster: "other"}))
			}
			for _, r := range tt.react {
				api.React(r(api, newID))
			}
			api.ClearRequests()
			failed := c.send(t.Context(), t, map[string]any{"RequestType": "Update", "PhysicalResourceId": oldID,
				"ResourceProperties": tt.props, "OldResourceProperties": v1})
			if failed.Status != cfn.StatusFailed || failed.PhysicalResourceID != oldID {
				t.Fatalf("Update answered %s with %q, want FAILED with the old id %q", failed.Status, failed.PhysicalResourceID, oldID)
			}
			note := strings.ReplaceAll(tt.note, "NEW", newID)
			if !strings.HasPrefix(failed.Reason, tt.reason) || !strings.Contains(failed.Reason, note) ||
				(tt.note == "" && strings.Contains(failed.Reason, "replacing Update")) {
				t.Errorf("Reason %q, want %q... saying %q", failed.Reason, tt.reason, note)
			}
			got := map[string]string{}
			for _, gvr := range []schema.GroupVersionResource{{Version: "v1", Resource: "namespaces"}, configMaps} {
				for _, u := range api.List(gvr, "") {
					switch owner := u.GetAnnotations()[kube.OwnerAnnotation]; owner {
					case "":
					case oldID:
						got[u.GetKind()+" "+invoke.Qualified(u.GetNamespace(), u.GetName())] = "OLD"
					case newID:
						got[u.GetKind()+" "+invoke.Qualified(u.GetNamespace(), u.GetName())] = "NEW"
					default:
						t.Errorf("%s %s owned by %q", u.GetKind(), u.GetName(), owner)
					}
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("owned objects after the failed Update (-want +got):\n%s", diff)
			}
			for _, r := range api.Requests() {
				if (tt.noDelete && r.Verb == "delete") || (tt.dryRunOnly && !r.IsDiscovery() && !r.DryRun) {
					t.Errorf("%s, want no delete, or with dryRunOnly only discovery and dry runs", r)
				}
			}
		})
	}
}

// s3Answering is an S3 client whose every request is answered status and
// body by a loopback server, with the SDK's standard retryer (two attempts,
// no pause), and the count of requests the server received.
func s3Answering(t *testing.T, status int, body string) (*s3.Client, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	retryer := retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 2
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
	})
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: aws.AnonymousCredentials{}, Retryer: retryer, HTTPClient: srv.Client()}), &calls
}

// TestCustomResourceManifestS3Unavailable: S3 throttling or failing past the
// SDK's retries is Unavailable (try again), on Create as on Delete, not
// Internal.
func TestCustomResourceManifestS3Unavailable(t *testing.T) {
	t.Parallel()
	const s3Error = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>r1</RequestId></Error>`
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{"throttled", http.StatusServiceUnavailable, fmt.Sprintf(s3Error, "SlowDown", "Please reduce your request rate.")},
		{"503 without a body", http.StatusServiceUnavailable, ""},
		{"500", http.StatusInternalServerError, fmt.Sprintf(s3Error, "InternalError", "We encountered an internal error. Please try again.")},
	}
	for _, tt := range tests {
		for _, requestType := range []string{"Create", "Delete"} {
			t.Run(tt.name+" on "+requestType, func(t *testing.T) {
				t.Parallel()
				client, calls := s3Answering(t, tt.status, tt.body)
				c := newCFNHarness(t, func(context.Context, auth.Target) (*Conn, error) {
					t.Error("connected, want no connection")
					return nil, context.Canceled
				}, WithS3(client))
				fields := map[string]any{"RequestType": requestType, "ResourceProperties": map[string]any{"ManifestS3": "s3://manifests/m.yaml"}}
				if requestType == "Delete" {
					fields["PhysicalResourceId"] = "s/Objects/0123"
				}
				resp := c.send(t.Context(), t, fields)
				if resp.Status != cfn.StatusFailed || !strings.HasPrefix(resp.Reason, "Unavailable: read ManifestS3 s3://manifests/m.yaml: ") ||
					!strings.Contains(resp.Reason, "try again later") {
					t.Errorf("answer %s %q, want FAILED Unavailable naming the URI and saying to try again", resp.Status, resp.Reason)
				}
				if n := calls.Load(); n != 2 {
					t.Errorf("S3 answered %d requests, want 2 (the SDK's retry, and none on top)", n)
				}
			})
		}
	}
}
