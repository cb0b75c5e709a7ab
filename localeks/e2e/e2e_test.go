package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

const fieldManager = "lambda-eks"

// Claim 1: ensure-nginx creates default/nginx, its spec owned by the field
// manager lambda-eks; a second call is unchanged; other replicas are
// configured.
func TestEnsureNginx(t *testing.T) {
	h := mustHarness(t)
	h.mustDeleteDeployment(t, "default", "nginx")
	fn := h.startFunction(t, fnOptions{})

	steps := []struct {
		name, event  string
		wantResult   string
		wantReplicas int32
	}{
		{"create", `{"action":"ensure-nginx"}`, "created", 2},
		{"again", `{"action":"ensure-nginx"}`, "unchanged", 2},
		{"scale", `{"action":"ensure-nginx","replicas":3}`, "configured", 3},
		{"scale again", `{"action":"ensure-nginx","replicas":3}`, "unchanged", 3},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			got := mustSucceed(t, fn, step.event)
			want := Response{Cluster: stack.ClusterName, Action: "ensure-nginx",
				Objects: []Object{deployment("default", "nginx", step.wantResult)}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("response (-want +got):\n%s", diff)
			}
			d, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), "nginx", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("admin get default/nginx: %v", err)
			}
			if diff := cmp.Diff(observed{Image: "nginx:1.27", Replicas: step.wantReplicas, Managers: []string{fieldManager + "/Apply"}}, observe(d)); diff != "" {
				t.Errorf("deployment as the admin sees it (-want +got):\n%s", diff)
			}
		})
	}
}

type observed struct {
	Image    string
	Replicas int32
	Managers []string
}

func observe(d *appsv1.Deployment) observed {
	var o observed
	if cs := d.Spec.Template.Spec.Containers; len(cs) > 0 {
		o.Image = cs[0].Image
	}
	if d.Spec.Replicas != nil {
		o.Replicas = *d.Spec.Replicas
	}
	// Who owns the spec: the replica's controllers own the status and the
	// revision annotation, never a field of the spec.
	for _, mf := range d.ManagedFields {
		var fields map[string]json.RawMessage
		if mf.FieldsV1 != nil && json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields) == nil && fields["f:spec"] != nil {
			o.Managers = append(o.Managers, mf.Manager+"/"+string(mf.Operation))
		}
	}
	return o
}

// Claim 3: a role session that aws-auth does not map is refused with an
// error naming the role ARN to map; nothing is written.
func TestUnmappedRole(t *testing.T) {
	h := mustHarness(t)
	const name = "nginx-unmapped"
	h.mustDeleteDeployment(t, "default", name)
	fn := h.startFunction(t, fnOptions{role: stack.UnmappedRole})

	fnErr := mustFail(t, fn, `{"action":"ensure-nginx","name":"`+name+`"}`, "Unauthorized")
	if want := stack.RoleARN(stack.UnmappedRole); !strings.Contains(fnErr.Message, want) {
		t.Errorf("message %q does not name the role to map, %s", fnErr.Message, want)
	}
	_, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("default/%s: got err %v, want NotFound (nothing written)", name, err)
	}
}

// Claim 4: a namespace that permissions.yml does not grant is Forbidden, and
// the message names what the apiserver refused: verb, resource, namespace.
func TestForbiddenNamespace(t *testing.T) {
	h := mustHarness(t)
	h.mustNamespace(t, "other")
	h.mustDeleteDeployment(t, "other", "nginx")
	fn, id := h.startFunctionAs(t, fnOptions{})

	mark := h.auditMark(t)
	fnErr := mustFail(t, fn, `{"action":"ensure-nginx","namespace":"other"}`, "Forbidden")
	events := h.auditSince(t, mark, id.User)
	var refused []auditEvent
	for _, e := range events {
		if e.ResponseStatus != nil && e.ResponseStatus.Code == 403 {
			refused = append(refused, e)
		}
	}
	if len(refused) != 1 || refused[0].ObjectRef == nil {
		t.Fatalf("apiserver refused %d requests of %s, want 1:%s", len(refused), id.User, describe(events))
	}
	r := refused[0]
	for _, want := range []string{r.Verb, r.ObjectRef.Resource, r.ObjectRef.Namespace} {
		if !strings.Contains(fnErr.Message, want) {
			t.Errorf("message %q does not name %q (refused: %s %s in %s)", fnErr.Message, want, r.Verb, r.ObjectRef.Resource, r.ObjectRef.Namespace)
		}
	}
	if !strings.Contains(fnErr.Message, "permissions.yml") {
		t.Errorf("message %q does not point to permissions.yml", fnErr.Message)
	}
	_, err := h.admin.AppsV1().Deployments("other").Get(context.Background(), "nginx", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("other/nginx: got err %v, want NotFound", err)
	}
}

// Claim 5a: a cluster name that EKS does not know.
func TestClusterNotFound(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{})
	fnErr := mustFail(t, fn, `{"action":"ensure-nginx","cluster":"nope"}`, "ClusterNotFound")
	if !strings.Contains(fnErr.Message, "nope") {
		t.Errorf("message %q does not name the cluster", fnErr.Message)
	}
}

// Claim 5b: an API server that does not answer is Unavailable, reported
// before the invocation's deadline. The replica's cluster "down" exists in
// EKS, but DescribeCluster points at a closed loopback port.
func TestAPIServerUnavailable(t *testing.T) {
	h := mustHarness(t)
	const timeout = 20 * time.Second
	fn := h.startFunction(t, fnOptions{timeout: timeout})
	start := time.Now()
	fnErr := mustFail(t, fn, `{"action":"ensure-nginx","cluster":"`+stack.DownCluster+`"}`, "Unavailable")
	took := time.Since(start)
	t.Logf("Unavailable after %s: %s", took.Round(time.Millisecond), fnErr.Message)
	if took >= timeout {
		t.Errorf("answered after %s, not before the %s deadline", took, timeout)
	}
	if !strings.Contains(fnErr.Message, "127.0.0.1:1") {
		t.Errorf("message %q does not say which endpoint did not answer", fnErr.Message)
	}
}

// Claim 6a: an EventBridge scheduled event runs the default action.
func TestScheduledEvent(t *testing.T) {
	h := mustHarness(t)
	const name = "nginx-scheduled"
	h.mustDeleteDeployment(t, "default", name)
	fn := h.startFunction(t, fnOptions{env: []string{"NAME=" + name, "DEFAULT_ACTION=ensure-nginx"}})
	event, err := os.ReadFile(filepath.Join(h.root, "events", "schedule.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := mustSucceed(t, fn, string(event))
	want := Response{Cluster: stack.ClusterName, Action: "ensure-nginx", Objects: []Object{deployment("default", name, "created")}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("response (-want +got):\n%s", diff)
	}
	if _, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), name, metav1.GetOptions{}); err != nil {
		t.Errorf("admin get default/%s: %v", name, err)
	}
}

// Claim 6b: a malformed event is InvalidEvent, and the function does not
// even reach the apiserver.
func TestInvalidEvent(t *testing.T) {
	h := mustHarness(t)
	bad, err := os.ReadFile(filepath.Join(h.root, "events", "bad.json"))
	if err != nil {
		t.Fatal(err)
	}
	fn, id := h.startFunctionAs(t, fnOptions{})
	// Warm it up first, so that the checks below also hold for a process
	// that already has its clients.
	mustSucceed(t, fn, `{"action":"ensure-nginx"}`)
	before, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, event string }{
		{"events/bad.json", string(bad)},
		{"unknown field", `{"action":"ensure-nginx","replicaz":3}`},
		{"wrong type", `{"action":"ensure-nginx","replicas":"3"}`},
		{"replicas out of range", `{"action":"ensure-nginx","replicas":1001}`},
		{"negative replicas", `{"action":"ensure-nginx","replicas":-1}`},
		{"invalid name", `{"action":"ensure-nginx","name":"Not_A_DNS_Name"}`},
		{"invalid namespace", `{"action":"ensure-nginx","namespace":"UPPER"}`},
		{"unknown action", `{"action":"delete-everything"}`},
		{"not an object", `[1,2,3]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := h.auditMark(t)
			_ = mustFail(t, fn, tc.event, "InvalidEvent")
			if events := h.auditSince(t, mark, id.User); len(events) != 0 {
				t.Errorf("function made %d requests to the apiserver for an invalid event:%s", len(events), describe(events))
			}
		})
	}
	after, err := h.admin.AppsV1().Deployments("default").Get(context.Background(), "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The controllers may still write its status: the spec is what the
	// function would have changed (and the audit log above shows it sent
	// nothing).
	if before.Generation != after.Generation {
		t.Errorf("default/nginx changed: generation %d -> %d", before.Generation, after.Generation)
	}
}

// Claim 7: a warm invocation makes exactly one request to the apiserver and
// none to STS or EKS; the cold one before it proves both counters count.
func TestWarmInvocation(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	fn, id := h.startFunctionAs(t, fnOptions{})
	const event = `{"action":"ensure-nginx"}`

	type sample struct {
		took      time.Duration
		apiserver []auditEvent
		sts, eks  int
	}
	measure := func(t *testing.T) sample {
		t.Helper()
		if err := h.stack.ResetShimCounts(ctx); err != nil {
			t.Fatal(err)
		}
		mark := h.auditMark(t)
		start := time.Now()
		mustSucceed(t, fn, event)
		took := time.Since(start)
		counts, err := h.stack.ShimCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shim counts: %v", counts)
		// Only this function's own requests, signed with its session's key:
		// the replica may be shared.
		return sample{took: took, apiserver: h.auditSince(t, mark, id.User),
			sts: counts["sts@"+id.AccessKeyID], eks: counts["eks@"+id.AccessKeyID]}
	}

	cold := measure(t)
	t.Logf("cold: %s, apiserver requests:%s", cold.took.Round(time.Microsecond), describe(cold.apiserver))
	if cold.eks < 1 || len(cold.apiserver) < 1 {
		t.Fatalf("cold invocation: %d EKS requests at the shim, %d apiserver requests in the audit log; want at least 1 each (are the counters counting?)",
			cold.eks, len(cold.apiserver))
	}

	h.settleDeployment(t, "default", "nginx")
	warm := measure(t)
	t.Logf("warm: %s, apiserver requests:%s", warm.took.Round(time.Microsecond), describe(warm.apiserver))
	if len(warm.apiserver) != 1 {
		t.Errorf("warm invocation made %d requests to the apiserver, want 1:%s", len(warm.apiserver), describe(warm.apiserver))
	}
	if warm.sts != 0 || warm.eks != 0 {
		t.Errorf("warm invocation made %d STS and %d EKS requests, want none", warm.sts, warm.eks)
	}
	if len(warm.apiserver) == 1 {
		e := warm.apiserver[0]
		if !slices.Contains(e.User.Groups, stack.Group) {
			t.Errorf("apiserver saw groups %v, want %s among them", e.User.Groups, stack.Group)
		}
	}
}

// Claim 5c: the API server of a warm function goes away: Unavailable, before
// the deadline; when it is back, the same process recovers.
func TestAPIServerStopped(t *testing.T) {
	h := mustHarness(t)
	const timeout = 20 * time.Second
	fn := h.startFunction(t, fnOptions{timeout: timeout})
	mustSucceed(t, fn, `{"action":"ensure-nginx"}`)

	err := h.stack.WithAPIServerStopped(context.Background(), func() error {
		start := time.Now()
		fnErr := mustFail(t, fn, `{"action":"ensure-nginx"}`, "Unavailable")
		took := time.Since(start)
		t.Logf("Unavailable after %s: %s", took.Round(time.Millisecond), fnErr.Message)
		if took >= timeout {
			t.Errorf("answered after %s, not before the %s deadline", took, timeout)
		}
		if !strings.Contains(fnErr.Message, h.stack.APIServerURL()) && !strings.Contains(fnErr.Message, strings.TrimPrefix(h.stack.APIServerURL(), "https://")) {
			t.Errorf("message %q does not say which endpoint did not answer (%s)", fnErr.Message, h.stack.APIServerURL())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("stop and restart the apiserver: %v", err)
	}
	got := mustSucceed(t, fn, `{"action":"ensure-nginx"}`)
	want := Response{Cluster: stack.ClusterName, Action: "ensure-nginx", Objects: []Object{deployment("default", "nginx", "unchanged")}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after the apiserver is back (-want +got):\n%s", diff)
	}
}
