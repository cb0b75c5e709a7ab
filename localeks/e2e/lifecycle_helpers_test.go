package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// The lifecycle function (cmd/lifecycle, its own bootstrap) end to end, as
// EventBridge would invoke it, running as its own role (mapped to the group
// lambda-eks-lifecycle) against the replica: Auto Scaling's answers are
// the shim's (/__lifecycle), its continuations go through the shim's Lambda
// Invoke routing to an Invoke API serving the same function.

const lifecycleFunction = "lambda-eks-lifecycle"

var lifecycleBin struct {
	once sync.Once
	path string
	err  error
}

// lifecycleBootstrap builds cmd/lifecycle once per run.
func (h *harness) lifecycleBootstrap(tb testing.TB) string {
	tb.Helper()
	lifecycleBin.once.Do(func() {
		dir, err := os.MkdirTemp(filepath.Dir(h.bootstrap), "lifecycle-")
		if err != nil {
			lifecycleBin.err = err
			return
		}
		lifecycleBin.path = filepath.Join(dir, "bootstrap")
		start := time.Now()
		_, lifecycleBin.err = output(h.root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH, "GOWORK=off"},
			"go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags", "-s -w", "-o", lifecycleBin.path, "./cmd/lifecycle")
		fmt.Fprintf(os.Stderr, "e2e: built lifecycle bootstrap (%s)\n", time.Since(start).Round(time.Millisecond))
	})
	if lifecycleBin.err != nil {
		tb.Fatalf("build the lifecycle function: %v", lifecycleBin.err)
	}
	return lifecycleBin.path
}

// startLifecycle starts the lifecycle function as a fresh execution
// environment with timeout, reachable by name through the shim's Lambda
// Invoke routing (its continuations queue on it). Its logs are checked for
// secrets at the end of the test.
func (h *harness) startLifecycle(tb testing.TB, timeout time.Duration, env ...string) *lambdart.Function {
	tb.Helper()
	ctx := context.Background()
	creds, err := h.stack.AssumeRole(ctx, stack.LifecycleRole, "e2e-lifecycle-"+randomHex(4))
	if err != nil {
		tb.Fatalf("assume role: %v", err)
	}
	all := h.stack.FunctionEnv(creds)
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "POLL_INTERVAL=") }) {
		all = append(all, "POLL_INTERVAL=200ms") // the tests' waits, shorter
	}
	all = append(all, env...)
	fn, err := lambdart.Start(ctx, h.lifecycleBootstrap(tb), all, timeout, lambdart.WithName(lifecycleFunction))
	if err != nil {
		tb.Fatalf("start the lifecycle function: %v", err)
	}
	api := httptest.NewServer(lambdart.InvokeAPI(map[string]*lambdart.Function{lifecycleFunction: fn}))
	// Its own continuations (signed with its credentials) reach it, not
	// another test's function of the same name.
	withdraw, err := h.stack.RegisterInvokeAPIFrom(ctx, api.URL, []string{creds.AccessKeyID}, lifecycleFunction)
	if err != nil {
		api.Close()
		fn.Stop()
		tb.Fatalf("register the Invoke API: %v", err)
	}
	tb.Cleanup(func() {
		wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := fn.WaitAsync(wait); err != nil {
			tb.Errorf("continuations still running at the end of the test: %v", err)
		}
		withdraw()
		api.Close()
		fn.Stop()
		logs := fn.Logs()
		for _, secret := range []string{"k8s-aws-v1.", "X-Amz-Signature", creds.SecretAccessKey, creds.SessionToken} {
			if bytes.Contains(logs, []byte(secret)) {
				tb.Errorf("lifecycle function logs contain a secret (%.12s...)", secret)
			}
		}
		if tb.Failed() {
			tb.Logf("lifecycle function logs:\n%s", logs)
		}
	})
	return fn
}

// lifecycleResult is the function's answer, decoded strictly.
type lifecycleResult struct {
	Event     string `json:"event"`
	Cluster   string `json:"cluster"`
	Continued bool   `json:"continued"`
	Attempt   int    `json:"attempt"`
	Message   string `json:"message"`
	Nodes     []struct {
		Instance        string `json:"instance"`
		Node            string `json:"node"`
		State           string `json:"state"`
		Evicted         int    `json:"evicted"`
		Remaining       int    `json:"remaining"`
		Blocked         string `json:"blocked"`
		LifecycleAction string `json:"lifecycleAction"`
		Heartbeats      int    `json:"heartbeats"`
		Reason          string `json:"reason"`
	} `json:"nodes"`
}

func decodeLifecycle(tb testing.TB, out []byte) lifecycleResult {
	tb.Helper()
	var r lifecycleResult
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("response %s does not match the contract: %v", out, err)
	}
	return r
}

func lifecycleOK(tb testing.TB, fn *lambdart.Function, event []byte) lifecycleResult {
	tb.Helper()
	out, fnErr, err := fn.Invoke(context.Background(), event)
	if err != nil {
		tb.Fatalf("invoke: %v", err)
	}
	if fnErr != nil {
		tb.Fatalf("function error %s: %s", fnErr.Type, fnErr.Message)
	}
	return decodeLifecycle(tb, out)
}

// lifecycleEvent is an EventBridge lifecycle action event of NodeASG, whose
// action is registered at the shim as the group would wait on it.
func (h *harness) lifecycleEvent(tb testing.TB, transition, instance string) ([]byte, string) {
	tb.Helper()
	token := uuid.NewString()
	detailType, hook := "EC2 Instance-terminate Lifecycle Action", stack.TerminateHook
	if transition == "autoscaling:EC2_INSTANCE_LAUNCHING" {
		detailType, hook = "EC2 Instance-launch Lifecycle Action", stack.LaunchHook
	}
	d := shim.LifecycleDetail{LifecycleActionToken: token, AutoScalingGroupName: stack.NodeASG, LifecycleHookName: hook,
		EC2InstanceID: instance, LifecycleTransition: transition}
	if _, err := h.stack.RegisterLifecycleAction(context.Background(), d); err != nil {
		tb.Fatal(err)
	}
	ev := map[string]any{"version": "0", "id": uuid.NewString(), "detail-type": detailType, "source": "aws.autoscaling",
		"account": stack.Account, "time": time.Now().UTC().Format(time.RFC3339), "region": stack.Region,
		"resources": []string{"arn:aws:autoscaling:" + stack.Region + ":" + stack.Account + ":autoScalingGroup:x:autoScalingGroupName/" + stack.NodeASG},
		"detail": map[string]any{"LifecycleActionToken": token, "AutoScalingGroupName": stack.NodeASG, "LifecycleHookName": hook,
			"EC2InstanceId": instance, "LifecycleTransition": transition, "Origin": "AutoScalingGroup", "Destination": "EC2"}}
	b, err := json.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	return b, token
}

func terminateEvent(tb testing.TB, h *harness, instance string) ([]byte, string) {
	return h.lifecycleEvent(tb, "autoscaling:EC2_INSTANCE_TERMINATING", instance)
}

// actionOf is the shim's record of token's action, and the calls naming it.
func (h *harness) actionOf(tb testing.TB, token string) (shim.LifecycleAction, []shim.LifecycleCall) {
	tb.Helper()
	rec, err := h.stack.Lifecycle(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	var calls []shim.LifecycleCall
	for _, c := range rec.Calls {
		if c.Token == token {
			calls = append(calls, c)
		}
	}
	for _, a := range rec.Actions {
		if a.Token == token {
			return a, calls
		}
	}
	tb.Fatalf("the shim has no action with token %s", token)
	return shim.LifecycleAction{}, nil
}

// completions are the successful CompleteLifecycleAction calls of calls.
func completions(calls []shim.LifecycleCall) []string {
	var out []string
	for _, c := range calls {
		if c.Op == "CompleteLifecycleAction" && c.Status == 200 {
			out = append(out, c.Result)
		}
	}
	return out
}

// testNodeTaint keeps every workload but the test's own off the test's
// nodes.
const testNodeTaint = "lambda-eks.io/e2e-lifecycle"

// testNodes adds n nodes of new NodeASG instances, labelled and tainted
// for test, and removes them at the end of the test; it returns their
// names and instance ids.
func (h *harness) testNodes(tb testing.TB, test string, n int) (names, instances []string) {
	tb.Helper()
	for range n {
		inst := h.newInstance(tb)
		name := "lc-" + test + "-" + inst[len(inst)-6:]
		h.addTestNode(tb, test, name, inst)
		names, instances = append(names, name), append(instances, inst)
	}
	return names, instances
}

// newInstance launches one more NodeASG instance in moto and returns its id.
func (h *harness) newInstance(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	insts, err := h.stack.NodeInstances(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	added, err := h.stack.ScaleNodeGroup(ctx, len(insts)+1)
	if err != nil || len(added) != 1 {
		tb.Fatalf("scale the node group out by one: %v, %v", added, err)
	}
	return added[0]
}

// addTestNode registers name as instance's node, labelled and tainted for
// test, removed at the end of the test.
func (h *harness) addTestNode(tb testing.TB, test, name, instance string) {
	tb.Helper()
	ctx := context.Background()
	if err := h.stack.AddNode(ctx, name, stack.ProviderID(instance), map[string]string{"lifecycle-e2e": test}); err != nil {
		tb.Fatal(err)
	}
	patch := fmt.Sprintf(`{"spec":{"taints":[{"key":%q,"value":%q,"effect":"NoSchedule"}]}}`, testNodeTaint, test)
	if _, err := h.admin.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		err := h.admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			tb.Errorf("delete node %s: %v", name, err)
		}
	})
}

// testWorkload is a Deployment of replicas pods on test's nodes (and a PDB
// of minAvailable when >= 0), in ns.
func (h *harness) testWorkload(tb testing.TB, ns, test string, replicas int32, minAvailable int) {
	tb.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": "drain-" + test}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "drain-" + test, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{"lifecycle-e2e": test},
				Tolerations:                   []corev1.Toleration{{Key: testNodeTaint, Operator: corev1.TolerationOpExists}},
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers:                    []corev1.Container{{Name: "app", Image: "nginx:1.27"}}}}}}
	if _, err := h.admin.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	if minAvailable >= 0 {
		h.setPDB(tb, ns, test, minAvailable)
	}
	h.waitReady(tb, ns, test, int(replicas))
}

// setPDB creates or replaces the test's PodDisruptionBudget.
func (h *harness) setPDB(tb testing.TB, ns, test string, minAvailable int) {
	tb.Helper()
	ctx := context.Background()
	pdbs := h.admin.PolicyV1().PodDisruptionBudgets(ns)
	mina := intstr.FromInt32(int32(minAvailable)) //nolint:gosec // G115: small
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "drain-" + test, Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &mina,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "drain-" + test}}}}
	cur, err := pdbs.Get(ctx, pdb.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = pdbs.Create(ctx, pdb, metav1.CreateOptions{})
	case err == nil:
		cur.Spec.MinAvailable = &mina
		_, err = pdbs.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		tb.Fatal(err)
	}
	// The disruption controller counts the budget's healthy pods first.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := pdbs.Get(ctx, pdb.Name, metav1.GetOptions{})
		if err == nil && cur.Status.ObservedGeneration == cur.Generation && cur.Status.DesiredHealthy == int32(minAvailable) { //nolint:gosec // G115: small
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("PDB %s not observed: %+v, %v", pdb.Name, cur, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readyPods lists the test's pods that are Ready and not terminating, by
// node.
func (h *harness) readyPods(tb testing.TB, ns, test string) map[string][]string {
	tb.Helper()
	out, err := h.readyPodsErr(ns, test)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// readyPodsErr is readyPods for a goroutine of the test's own.
func (h *harness) readyPodsErr(ns, test string) (map[string][]string, error) {
	pods, err := h.admin.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=drain-" + test})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p.Name)
			}
		}
	}
	return out, nil
}

func count(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// waitReady waits until want of the test's pods are Ready.
func (h *harness) waitReady(tb testing.TB, ns, test string, want int) map[string][]string {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := h.readyPods(tb, ns, test)
		if count(got) == want {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d pods of %s Ready: %v", count(got), want, test, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeState is what a drain leaves on a node.
func (h *harness) nodeState(tb testing.TB, name string) (cordoned bool, taints []string, record string) {
	tb.Helper()
	n, err := h.admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range n.Spec.Taints {
		taints = append(taints, t.Key)
	}
	return n.Spec.Unschedulable, taints, n.Annotations["lambda-eks.io/drain"]
}

func hasTaint(taints []string, key string) bool { return slices.Contains(taints, key) }

// lifecycleNamespace is a namespace of the test's own, deleted at its end.
func (h *harness) lifecycleNamespace(tb testing.TB, test string) string {
	tb.Helper()
	ns := "lc-" + test + "-" + randomHex(3)
	h.mustNamespace(tb, ns)
	tb.Cleanup(func() { _ = h.admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	return ns
}

// cordon sets node's spec.unschedulable as an admin would.
func (h *harness) cordon(tb testing.TB, node string, on bool) {
	tb.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	if _, err := h.admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// podVerbs is what username did to pods in ns since mark: "delete", or
// "evict" for an eviction, with the pod's name.
func (h *harness) podVerbs(tb testing.TB, mark auditMark, username, ns string) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for _, e := range h.auditSince(tb, mark, username) {
		if e.ObjectRef == nil || e.ObjectRef.Resource != "pods" || e.ObjectRef.Namespace != ns {
			continue
		}
		verb := e.Verb
		if strings.Contains(e.URI, "/eviction") {
			verb = "evict"
		}
		out[verb] = append(out[verb], e.ObjectRef.Name)
	}
	return out
}

// readRepoFile reads a file of the repository.
func readRepoFile(h *harness, path string) ([]byte, error) {
	return os.ReadFile(filepath.Join(h.root, path)) //nolint:gosec // G304: the repository's own files
}
