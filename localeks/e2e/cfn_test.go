package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// The tests here play CloudFormation against the real bootstrap: each
// request carries, as its ResponseURL, a presigned S3 PUT URL of moto (the
// kind CloudFormation sends), which the function reaches through the shim;
// the answer is read back from moto's S3.

// cfnBucket holds the answers and the manifests of ManifestS3.
const cfnBucket = "lambda-eks-cfn"

// ownerAnnotation is kube.OwnerAnnotation.
const ownerAnnotation = "lambda-eks.io/owner"

// cfnAnswer is the body CloudFormation receives; decoded strictly.
type cfnAnswer struct {
	Status             string            `json:"Status"`
	Reason             string            `json:"Reason"`
	PhysicalResourceID string            `json:"PhysicalResourceId"`
	StackID            string            `json:"StackId"`
	RequestID          string            `json:"RequestId"`
	LogicalResourceID  string            `json:"LogicalResourceId"`
	NoEcho             bool              `json:"NoEcho"`
	Data               map[string]string `json:"Data"`
}

// cfnStack plays one CloudFormation stack.
type cfnStack struct {
	h       *harness
	fn      *lambdart.Function
	s3      *s3.Client // straight to moto, for the harness
	presign *s3.PresignClient
	stackID string
	n       int
}

func (h *harness) motoS3(tb testing.TB) *s3.Client {
	tb.Helper()
	return s3.NewFromConfig(aws.Config{
		Region:      stack.Region,
		Credentials: credentials.NewStaticCredentialsProvider("AKIALOCALEKSADMIN000", "localeks", ""),
		HTTPClient:  &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second},
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String("http://127.0.0.1:" + strconv.Itoa(h.stack.Ports.Moto))
		o.UsePathStyle = true
	})
}

// newCFNStack starts a fresh function (env and timeout as given) and a
// stack of a unique name.
func (h *harness) newCFNStack(tb testing.TB, o fnOptions) *cfnStack {
	tb.Helper()
	c := &cfnStack{h: h, fn: h.startFunction(tb, o), s3: h.motoS3(tb)}
	// The URL CloudFormation would send: virtual-hosted, https, presigned
	// for PUT, signed for no content type.
	c.presign = s3.NewPresignClient(s3.NewFromConfig(aws.Config{
		Region:                     stack.Region,
		Credentials:                credentials.NewStaticCredentialsProvider("AKIALOCALEKSADMIN000", "localeks", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	}))
	_, err := c.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(cfnBucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	var exists *s3types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		tb.Fatalf("create bucket: %v", err)
	}
	c.stackID = "arn:aws:cloudformation:us-east-1:123456789012:stack/e2e-" + randomHex(4) + "/" + randomHex(16)
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cfnRequest describes one request of the stack.
type cfnRequest struct {
	Type       string // Create, Update, Delete
	Logical    string
	Physical   string
	Props      map[string]any
	OldProps   map[string]any
	ResponseTo string // S3 key; default: unique
}

// send delivers r and returns the answer CloudFormation received, after
// checking that the invocation's own result is that same body, that the
// body fits CloudFormation's limit and that the ids are copied.
func (c *cfnStack) send(tb testing.TB, r cfnRequest) cfnAnswer {
	tb.Helper()
	ans, _ := c.sendRaw(tb, r)
	return ans
}

func (c *cfnStack) sendRaw(tb testing.TB, r cfnRequest) (cfnAnswer, time.Duration) {
	tb.Helper()
	ctx := context.Background()
	c.n++
	key := r.ResponseTo
	if key == "" {
		key = fmt.Sprintf("responses/%s/%d-%s", c.stackID[len(c.stackID)-16:], c.n, r.Type)
	}
	signed, err := c.presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key)},
		s3.WithPresignExpires(time.Hour))
	if err != nil {
		tb.Fatalf("presign: %v", err)
	}
	props := map[string]any{"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:lambda-eks"}
	for k, v := range r.Props {
		props[k] = v
	}
	ev := map[string]any{
		"RequestType": r.Type, "ResponseURL": signed.URL, "StackId": c.stackID,
		"RequestId": fmt.Sprintf("req-%d-%s", c.n, randomHex(4)), "ResourceType": "Custom::KubernetesManifest",
		"LogicalResourceId": r.Logical, "ResourceProperties": props,
	}
	if r.Physical != "" {
		ev["PhysicalResourceId"] = r.Physical
	}
	if r.OldProps != nil {
		old := map[string]any{"ServiceToken": props["ServiceToken"]}
		for k, v := range r.OldProps {
			old[k] = v
		}
		ev["OldResourceProperties"] = old
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	out, fnErr, err := c.fn.Invoke(ctx, payload)
	took := time.Since(start)
	if err != nil {
		tb.Fatalf("invoke: %v", err)
	}
	if fnErr != nil {
		tb.Fatalf("%s %s: function error %s: %s", r.Type, r.Logical, fnErr.Type, fnErr.Message)
	}
	obj, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key)})
	if err != nil {
		tb.Fatalf("%s %s: no answer in S3 at %s: %v (the invocation returned %s)", r.Type, r.Logical, key, err, out)
	}
	body, err := io.ReadAll(obj.Body)
	_ = obj.Body.Close()
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(out), body) {
		tb.Errorf("the invocation returned\n%s\nbut CloudFormation received\n%s", out, body)
	}
	if len(body) > 4096 {
		tb.Errorf("answer of %d bytes, CloudFormation takes at most 4096", len(body))
	}
	var ans cfnAnswer
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ans); err != nil {
		tb.Fatalf("answer %s: %v", body, err)
	}
	if ans.StackID != c.stackID || ans.RequestID != ev["RequestId"] || ans.LogicalResourceID != r.Logical {
		tb.Errorf("ids not copied: %s", body)
	}
	if ans.PhysicalResourceID == "" || len(ans.PhysicalResourceID) > 1024 {
		tb.Errorf("PhysicalResourceId %q: want 1 to 1024 bytes", ans.PhysicalResourceID)
	}
	if ans.Status == "FAILED" && ans.Reason == "" {
		tb.Errorf("FAILED without a Reason: %s", body)
	}
	tb.Logf("%s %s -> %s %s (%s) %.300s", r.Type, r.Logical, ans.Status, ans.PhysicalResourceID, took.Round(time.Millisecond), ans.Reason)
	return ans, took
}

func mustStatus(tb testing.TB, a cfnAnswer, status string) {
	tb.Helper()
	if a.Status != status {
		tb.Fatalf("answer %s (%s), want %s", a.Status, a.Reason, status)
	}
}

// cfnConfigMaps returns a manifest of ConfigMaps name=value (data.v).
func cfnConfigMaps(kv ...string) string {
	var docs []string
	for i := 0; i+1 < len(kv); i += 2 {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  v: %q\n", kv[i], kv[i+1]))
	}
	return strings.Join(docs, "---\n")
}

// cmState returns each named ConfigMap's data.v and owner, or "absent".
func (h *harness) cmState(tb testing.TB, ns string, names ...string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for _, n := range names {
		cm, err := h.admin.CoreV1().ConfigMaps(ns).Get(context.Background(), n, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			out[n] = "absent"
		case err != nil:
			tb.Fatalf("get configmap %s/%s: %v", ns, n, err)
		default:
			out[n] = cm.Data["v"] + " @" + cm.Annotations[ownerAnnotation]
		}
	}
	return out
}

func (h *harness) cfnNamespace(tb testing.TB) string {
	tb.Helper()
	ns := "cfn-" + randomHex(4)
	h.mustNamespace(tb, ns)
	// What the README says to do for every namespace the function manages.
	h.kubectl(tb, "", "apply", "-n", ns, "-f", filepath.Join(h.root, "permissions.yml"))
	tb.Cleanup(func() {
		_ = h.admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return ns
}

func wantState(tb testing.TB, step string, want, got map[string]string) {
	tb.Helper()
	for k, w := range want {
		if got[k] != w {
			tb.Errorf("%s: ConfigMap %s is %q, want %q (all: %v)", step, k, got[k], w, got)
		}
	}
}

// TestCFNLifecycle: Create, then an Update that changes one object, removes
// (prunes) one and adds one, with an output read by JSONPath; then Delete.
func TestCFNLifecycle(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{})
	out := map[string]any{"Value": map[string]any{"Kind": "ConfigMap", "Name": "a", "JSONPath": "{.data.v}"}}
	v1 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1", "b", "1"), "Outputs": out}
	created := c.send(t, cfnRequest{Type: "Create", Logical: "Objects", Props: v1})
	mustStatus(t, created, "SUCCESS")
	id := created.PhysicalResourceID
	if created.Data["Value"] != "1" {
		t.Errorf("Data %v, want Value 1", created.Data)
	}
	wantState(t, "after Create", map[string]string{"a": "1 @" + id, "b": "1 @" + id, "c": "absent"}, h.cmState(t, ns, "a", "b", "c"))

	v2 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "2", "c", "1"), "Outputs": out, "Prune": "true"}
	updated := c.send(t, cfnRequest{Type: "Update", Logical: "Objects", Physical: id, Props: v2, OldProps: v1})
	mustStatus(t, updated, "SUCCESS")
	if updated.PhysicalResourceID != id || updated.Data["Value"] != "2" {
		t.Errorf("Update answered %s with %v, want the same id %s and Value 2", updated.PhysicalResourceID, updated.Data, id)
	}
	wantState(t, "after Update", map[string]string{"a": "2 @" + id, "b": "absent", "c": "1 @" + id}, h.cmState(t, ns, "a", "b", "c"))

	// CloudFormation sends the same request again when it got no answer.
	again := c.send(t, cfnRequest{Type: "Update", Logical: "Objects", Physical: id, Props: v2, OldProps: v1})
	mustStatus(t, again, "SUCCESS")

	deleted := c.send(t, cfnRequest{Type: "Delete", Logical: "Objects", Physical: id, Props: v2})
	mustStatus(t, deleted, "SUCCESS")
	wantState(t, "after Delete", map[string]string{"a": "absent", "b": "absent", "c": "absent"}, h.cmState(t, ns, "a", "b", "c"))
	// Delete is idempotent.
	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Objects", Physical: id, Props: v2}), "SUCCESS")
}

// TestCFNPruneFalse: an object removed from the manifest stays.
func TestCFNPruneFalse(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{})
	v1 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1", "b", "1")}
	id := c.send(t, cfnRequest{Type: "Create", Logical: "Objects", Props: v1}).PhysicalResourceID
	v2 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1"), "Prune": "false"}
	mustStatus(t, c.send(t, cfnRequest{Type: "Update", Logical: "Objects", Physical: id, Props: v2, OldProps: v1}), "SUCCESS")
	wantState(t, "after Update", map[string]string{"a": "1 @" + id, "b": "1 @" + id}, h.cmState(t, ns, "a", "b"))
}

// TestCFNReplacement: a changed target (here RoleArn, which reaches the same
// cluster) is a new PhysicalResourceId, and the Delete CloudFormation then
// sends for the old one leaves the objects the new one took over.
func TestCFNReplacement(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{})
	v1 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1", "b", "1")}
	oldID := c.send(t, cfnRequest{Type: "Create", Logical: "Objects", Props: v1}).PhysicalResourceID
	v2 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "2"), "RoleArn": stack.RoleARN(stack.ExecRole)}
	up := c.send(t, cfnRequest{Type: "Update", Logical: "Objects", Physical: oldID, Props: v2, OldProps: v1})
	mustStatus(t, up, "SUCCESS")
	newID := up.PhysicalResourceID
	if newID == oldID {
		t.Fatalf("Update to another target kept the id %s", oldID)
	}
	// A replacement prunes nothing: b belongs to the old resource still.
	wantState(t, "after the replacing Update", map[string]string{"a": "2 @" + newID, "b": "1 @" + oldID}, h.cmState(t, ns, "a", "b"))

	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Objects", Physical: oldID, Props: v1}), "SUCCESS")
	wantState(t, "after the old resource's Delete", map[string]string{"a": "2 @" + newID, "b": "absent"}, h.cmState(t, ns, "a", "b"))

	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Objects", Physical: newID, Props: v2}), "SUCCESS")
	wantState(t, "after the new resource's Delete", map[string]string{"a": "absent"}, h.cmState(t, ns, "a"))
}

// TestCFNMove: an object moved from resource A to resource B is never
// deleted, in either order of CloudFormation's work: B takes it over, A's
// prune (an Update) or Delete (A removed) keeps it.
func TestCFNMove(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{})
	a1 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("mx", "1", "my", "1")}
	b1 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("mz", "1")}
	idA := c.send(t, cfnRequest{Type: "Create", Logical: "A", Props: a1}).PhysicalResourceID
	idB := c.send(t, cfnRequest{Type: "Create", Logical: "B", Props: b1}).PhysicalResourceID
	if idA == idB {
		t.Fatalf("two resources share the id %s", idA)
	}

	// mx moves from A to B: B is updated first, then A.
	b2 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("mz", "1", "mx", "1")}
	a2 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("my", "1")}
	mustStatus(t, c.send(t, cfnRequest{Type: "Update", Logical: "B", Physical: idB, Props: b2, OldProps: b1}), "SUCCESS")
	upA := c.send(t, cfnRequest{Type: "Update", Logical: "A", Physical: idA, Props: a2, OldProps: a1})
	mustStatus(t, upA, "SUCCESS")
	if !strings.Contains(upA.Reason, "kept 1") {
		t.Errorf("A's Update says %q, want it to report mx kept", upA.Reason)
	}
	wantState(t, "after the move", map[string]string{"mx": "1 @" + idB, "my": "1 @" + idA, "mz": "1 @" + idB}, h.cmState(t, ns, "mx", "my", "mz"))

	// my moves from A to B and A is removed from the template: B's Update,
	// then (cleanup) A's Delete.
	b3 := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("mz", "1", "mx", "1", "my", "1")}
	mustStatus(t, c.send(t, cfnRequest{Type: "Update", Logical: "B", Physical: idB, Props: b3, OldProps: b2}), "SUCCESS")
	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "A", Physical: idA, Props: a2}), "SUCCESS")
	wantState(t, "after A's Delete", map[string]string{"mx": "1 @" + idB, "my": "1 @" + idB, "mz": "1 @" + idB}, h.cmState(t, ns, "mx", "my", "mz"))
}

// TestCFNDeleteNeverBlocks: Delete answers SUCCESS when the cluster is
// gone, and after a Create that failed.
func TestCFNDeleteNeverBlocks(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{})

	gone := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1"), "Cluster": "deleted-cluster"}
	del := c.send(t, cfnRequest{Type: "Delete", Logical: "Gone", Physical: "some-id", Props: gone})
	mustStatus(t, del, "SUCCESS")
	if !strings.Contains(del.Reason, "deleted-cluster") {
		t.Errorf("Reason %q does not name the cluster", del.Reason)
	}

	// A bad manifest: FAILED naming the document, nothing written (not even
	// the good first document); then the Delete of the rollback.
	bad := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n"}
	failed := c.send(t, cfnRequest{Type: "Create", Logical: "Bad", Props: bad})
	mustStatus(t, failed, "FAILED")
	if !strings.HasPrefix(failed.Reason, "InvalidEvent: ") || !strings.Contains(failed.Reason, "manifest document 2") {
		t.Errorf("Reason %q, want InvalidEvent naming manifest document 2", failed.Reason)
	}
	wantState(t, "after the failed Create", map[string]string{"a": "absent"}, h.cmState(t, ns, "a"))
	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Bad", Physical: failed.PhysicalResourceID, Props: bad}), "SUCCESS")

	// A Create the API server refuses (an unknown kind): FAILED, nothing
	// written; its rollback Delete succeeds.
	unknown := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1") + "---\napiVersion: example.com/v1\nkind: Nothing\nmetadata:\n  name: nothing\n"}
	failed = c.send(t, cfnRequest{Type: "Create", Logical: "Unknown", Props: unknown})
	mustStatus(t, failed, "FAILED")
	wantState(t, "after the refused Create", map[string]string{"a": "absent"}, h.cmState(t, ns, "a"))
	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Unknown", Physical: failed.PhysicalResourceID, Props: unknown}), "SUCCESS")
}

// TestCFNLongReason: a Reason longer than the body allows is trimmed, the
// ids are whole, and the body is at most 4,096 bytes (checked by send). The
// long Reason is a Timeout naming each of 32 outputs that stayed empty (a
// value quoted from the event is itself cut to 256 bytes, so one long value
// no longer makes a long Reason).
func TestCFNLongReason(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{})
	outputs := map[string]any{}
	for i := range 32 {
		outputs[fmt.Sprintf("Output%02d%s", i, strings.Repeat("x", 100))] = map[string]any{
			"Kind": "ConfigMap", "Name": "absent-" + strings.Repeat("n", 200), "JSONPath": "{.data." + strings.Repeat("k", 100) + "}"}
	}
	props := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1"), "Wait": "1", "Outputs": outputs}
	a := c.send(t, cfnRequest{Type: "Create", Logical: "Long", Props: props})
	mustStatus(t, a, "FAILED")
	if !strings.HasSuffix(a.Reason, "[trimmed]") || !strings.HasPrefix(a.Reason, "Timeout: still empty after") || !strings.Contains(a.Reason, "output Output00") {
		t.Errorf("Reason %.200q...%q, want Timeout naming the outputs, ending [trimmed]", a.Reason, a.Reason[max(0, len(a.Reason)-20):])
	}
	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Long", Physical: a.PhysicalResourceID, Props: props}), "SUCCESS")
}

// TestCFNOutputNeverSet: an output that stays empty is FAILED naming it,
// answered before the function's deadline (no Wait: the default 5 minutes
// is cut by the 10-second timeout).
func TestCFNOutputNeverSet(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	timeout := 10 * time.Second
	c := h.newCFNStack(t, fnOptions{timeout: timeout})
	props := map[string]any{"Namespace": ns, "Manifest": cfnConfigMaps("a", "1"),
		"Outputs": map[string]any{"Missing": map[string]any{"Kind": "ConfigMap", "Name": "a", "JSONPath": ".data.nothing"}}}
	a, took := c.sendRaw(t, cfnRequest{Type: "Create", Logical: "Out", Props: props})
	mustStatus(t, a, "FAILED")
	if !strings.HasPrefix(a.Reason, "Timeout: ") || !strings.Contains(a.Reason, "output Missing") {
		t.Errorf("Reason %q, want Timeout naming output Missing", a.Reason)
	}
	if took >= timeout {
		t.Errorf("answered after %s, want before the %s deadline", took, timeout)
	}
}

// TestCFNManifestS3: a manifest of 1,000 objects read from S3 applies, and
// its Delete removes them all.
func TestCFNManifestS3(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{timeout: 120 * time.Second, env: []string{"MAX_DOCUMENTS=1000"}})
	const n = 1000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%04d\n  labels: {cfn-bulk: %q}\ndata:\n  v: %q\n", i, ns, strconv.Itoa(i))
	}
	key := "manifests/" + ns + ".yaml"
	if _, err := c.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key),
		Body: strings.NewReader(b.String())}); err != nil {
		t.Fatalf("upload manifest: %v", err)
	}
	t.Logf("manifest of %d objects, %d bytes", n, b.Len())
	props := map[string]any{"Namespace": ns, "ManifestS3": "s3://" + cfnBucket + "/" + key}
	a, took := c.sendRaw(t, cfnRequest{Type: "Create", Logical: "Bulk", Props: props})
	mustStatus(t, a, "SUCCESS")
	t.Logf("Create of %d objects from S3 took %s", n, took.Round(time.Millisecond))
	count := func() int {
		list, err := h.admin.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "cfn-bulk=" + ns})
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, cm := range list.Items {
			if cm.Annotations[ownerAnnotation] == a.PhysicalResourceID {
				owned++
			}
		}
		return owned
	}
	if got := count(); got != n {
		t.Errorf("%d ConfigMaps owned by %s, want %d", got, a.PhysicalResourceID, n)
	}
	d, took := c.sendRaw(t, cfnRequest{Type: "Delete", Logical: "Bulk", Physical: a.PhysicalResourceID, Props: props})
	mustStatus(t, d, "SUCCESS")
	t.Logf("Delete of %d objects took %s", n, took.Round(time.Millisecond))
	if got := count(); got != 0 {
		t.Errorf("%d ConfigMaps left after Delete, want 0", got)
	}

	// More objects than MAX_DOCUMENTS: FAILED saying so, nothing written.
	small := h.newCFNStack(t, fnOptions{timeout: 60 * time.Second, env: []string{"MAX_DOCUMENTS=999"}})
	f := small.send(t, cfnRequest{Type: "Create", Logical: "Bulk", Props: props})
	mustStatus(t, f, "FAILED")
	if !strings.Contains(f.Reason, "more than 999 objects") {
		t.Errorf("Reason %q, want it to say the manifest has more than 999 objects", f.Reason)
	}
	if got := count(); got != 0 {
		t.Errorf("%d ConfigMaps written by a refused manifest", got)
	}
}

// TestCFNWaitAndOutputs: with Wait, the answer comes after the rollout
// (the replica's controllers and kwok's nodes run the pods), and an output
// read from the Deployment's status says so.
func TestCFNWaitAndOutputs(t *testing.T) {
	h := mustHarness(t)
	ns := h.cfnNamespace(t)
	c := h.newCFNStack(t, fnOptions{timeout: 120 * time.Second})
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: cfn-web}
  template:
    metadata:
      labels: {app: cfn-web}
    spec:
      containers:
      - {name: web, image: "nginx:1.27"}
`
	props := map[string]any{"Namespace": ns, "Manifest": manifest, "Wait": "90s",
		"Outputs": map[string]any{"Ready": map[string]any{"Kind": "Deployment", "ApiVersion": "apps/v1", "Name": "web",
			"JSONPath": "{.status.readyReplicas}"}}}
	a, took := c.sendRaw(t, cfnRequest{Type: "Create", Logical: "Web", Props: props})
	mustStatus(t, a, "SUCCESS")
	if a.Data["Ready"] != "2" {
		t.Errorf("Data %v, want Ready 2", a.Data)
	}
	t.Logf("Create with Wait answered after %s", took.Round(time.Millisecond))
	mustStatus(t, c.send(t, cfnRequest{Type: "Delete", Logical: "Web", Physical: a.PhysicalResourceID, Props: props}), "SUCCESS")
}

// TestCFNSamples: `localeks cfn` (what ./local.sh runs for a custom resource
// event) plays CloudFormation for the samples in events/: Create, Update
// (one ConfigMap changed, one pruned, one added), Delete. It prints the body
// CloudFormation received and exits 0 for SUCCESS, 1 for FAILED.
func TestCFNSamples(t *testing.T) {
	h := mustHarness(t)
	run := func(t *testing.T, event string) (cfnAnswer, int) {
		t.Helper()
		cmd := exec.Command(h.self, "cfn", "--bootstrap", h.bootstrap, "--dir", h.stack.Paths.Dir,
			"--parts", h.parts, "--permissions", filepath.Join(h.root, "permissions.yml"), event)
		cmd.Dir = h.root
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("localeks cfn %s: %v", event, err)
		}
		if bytes.Contains(stderr.Bytes(), []byte("X-Amz-Signature")) {
			t.Errorf("localeks cfn %s: the output shows a presigned signature", event)
		}
		var a cfnAnswer
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("localeks cfn %s (exit %d): stdout is not the answer: %v\nstderr:\n%s", event, code, err, stderr.Bytes())
		}
		return a, code
	}
	cms := func() map[string]string {
		return h.cmState(t, "default", "web-config", "web-extra", "web-flags")
	}
	id := "lambda-eks-demo/WebObjects/e1c020373ace7850" // in events/cfn-update.json and cfn-delete.json

	created, code := run(t, "events/cfn-create.json")
	if code != 0 || created.Status != "SUCCESS" || created.PhysicalResourceID != id || created.Data["ClusterIP"] == "" || created.Data["Greeting"] != "hello" {
		t.Fatalf("create: exit %d, answer %+v; want 0, SUCCESS, %s, a ClusterIP and Greeting hello", code, created, id)
	}
	wantState(t, "after create", map[string]string{"web-config": " @" + id, "web-extra": " @" + id, "web-flags": "absent"}, cms())

	updated, code := run(t, "events/cfn-update.json")
	if code != 0 || updated.Status != "SUCCESS" || updated.PhysicalResourceID != id || updated.Data["Greeting"] != "hello again" {
		t.Fatalf("update: exit %d, answer %+v", code, updated)
	}
	wantState(t, "after update", map[string]string{"web-config": " @" + id, "web-extra": "absent", "web-flags": " @" + id}, cms())

	deleted, code := run(t, "events/cfn-delete.json")
	if code != 0 || deleted.Status != "SUCCESS" {
		t.Fatalf("delete: exit %d, answer %+v", code, deleted)
	}
	wantState(t, "after delete", map[string]string{"web-config": "absent", "web-extra": "absent", "web-flags": "absent"}, cms())

	// A FAILED answer exits 1 and still prints the body.
	bad, err := os.ReadFile(filepath.Join(h.root, "events", "cfn-create.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(bad, &ev); err != nil {
		t.Fatal(err)
	}
	ev["ResourceProperties"].(map[string]any)["Manifest"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"
	path := filepath.Join(t.TempDir(), "bad-create.json")
	b, _ := json.Marshal(ev)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	failed, code := run(t, path)
	if code != 1 || failed.Status != "FAILED" || !strings.Contains(failed.Reason, "manifest document 1") {
		t.Errorf("bad create: exit %d, answer %+v; want 1, FAILED naming manifest document 1", code, failed)
	}
}
