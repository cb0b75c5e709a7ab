package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// A PodDisruptionBudget that allows no eviction holds the drain past the
// invocation: it records a heartbeat, continues in new invocations (the
// function invoking itself through Lambda's Invoke API), and once the
// budget is relaxed the drain ends and the action is answered CONTINUE,
// once. The same event again answers nothing twice.
func TestLifecycleDrainHeldByPDBContinues(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	ns := h.lifecycleNamespace(t, "pdb")
	nodes, insts := h.testNodes(t, "pdb", 2)
	h.cordon(t, nodes[1], true) // both pods on nodes[0] first
	h.testWorkload(t, ns, "pdb", 2, 2)
	h.cordon(t, nodes[1], false)
	if on := h.readyPods(t, ns, "pdb")[nodes[0]]; len(on) != 2 {
		t.Fatalf("pods on %s: %v, want 2", nodes[0], on)
	}
	mark := h.auditMark(t)
	fn := h.startLifecycle(t, 12*time.Second)
	ev, token := terminateEvent(t, h, insts[0])

	first := lifecycleOK(t, fn, ev)
	if !first.Continued || len(first.Nodes) != 1 {
		t.Fatalf("first invocation %+v, want it to continue", first)
	}
	n := first.Nodes[0]
	if n.Node != nodes[0] || n.State != "continuing" || n.Remaining != 2 || n.Heartbeats < 1 || !strings.Contains(n.Blocked, "disruption budget") {
		t.Errorf("first invocation's node %+v: want continuing, 2 remaining, a heartbeat, blocked by the budget", n)
	}
	cordoned, taints, record := h.nodeState(t, nodes[0])
	if !cordoned || !hasTaint(taints, "lambda-eks.io/asg-lifecycle-termination") || !strings.Contains(record, token) {
		t.Errorf("node %s: cordoned %v, taints %v, record %s", nodes[0], cordoned, taints, record)
	}
	if a, calls := h.actionOf(t, token); a.State != "pending" || a.Heartbeats < 1 || len(completions(calls)) != 0 {
		t.Fatalf("while held: action %+v, completions %v; want pending with a heartbeat", a, completions(calls))
	}
	// Let at least one continuation run into the budget too.
	deadline := time.Now().Add(30 * time.Second)
	for len(fn.AsyncResults()) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if len(fn.AsyncResults()) == 0 {
		t.Fatal("no continuation ran")
	}
	h.setPDB(t, ns, "pdb", 1)
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := fn.WaitAsync(wait); err != nil {
		t.Fatalf("the chain of continuations did not end: %v", err)
	}
	results := fn.AsyncResults()
	last := results[len(results)-1]
	if last.Error != nil || last.Err != nil {
		t.Fatalf("last continuation failed: %+v %v", last.Error, last.Err)
	}
	end := decodeLifecycle(t, last.Response)
	if end.Continued || end.Nodes[0].State != "drained" || end.Nodes[0].LifecycleAction != "CONTINUE" || end.Attempt != 0 {
		t.Errorf("last invocation %+v, want drained and CONTINUE", end)
	}
	var atts []int
	for _, r := range results[:len(results)-1] {
		atts = append(atts, decodeLifecycle(t, r.Response).Attempt)
	}
	t.Logf("continuations: %d (their next attempts %v)", len(results), atts)
	a, calls := h.actionOf(t, token)
	if a.State != "completed" || a.Result != "CONTINUE" || strings.Join(completions(calls), ",") != "CONTINUE" {
		t.Errorf("action %+v, completions %v; want one CONTINUE", a, completions(calls))
	}
	if ready := h.waitReady(t, ns, "pdb", 2); len(ready[nodes[1]]) != 2 {
		t.Errorf("pods Ready %v, want both on %s", ready, nodes[1])
	}
	lam, err := h.stack.LambdaRecord(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for _, c := range lam.Calls {
		if c.Function == lifecycleFunction && c.InvocationType == "Event" && c.Status == http.StatusAccepted {
			events++
		}
	}
	if events < len(results) {
		t.Errorf("%d asynchronous Invoke calls through the shim for %d continuations", events, len(results))
	}

	// The same event again (a duplicate delivery, a retry): nothing twice.
	again := lifecycleOK(t, fn, ev)
	if again.Nodes[0].State != "already-completed" || again.Nodes[0].LifecycleAction != "CONTINUE" || again.Continued {
		t.Errorf("duplicate %+v, want already-completed", again)
	}
	if _, calls := h.actionOf(t, token); len(completions(calls)) != 1 {
		t.Errorf("completions after the duplicate: %v", completions(calls))
	}
	verbs := h.podVerbs(t, mark, stack.LifecycleUser, ns)
	if len(verbs["delete"]) != 0 || len(verbs["evict"]) < 2 {
		t.Errorf("the function's pod requests: %v; want evictions only", verbs)
	}
}

// A drain that its budget holds past DRAIN_TIMEOUT answers as configured
// (TERMINATE_TIMEOUT_RESULT=ABANDON here) and leaves the pods.
func TestLifecycleDrainTimeoutAnswersAsConfigured(t *testing.T) {
	h := mustHarness(t)
	ns := h.lifecycleNamespace(t, "tmo")
	nodes, insts := h.testNodes(t, "tmo", 1)
	h.testWorkload(t, ns, "tmo", 1, 1)
	fn := h.startLifecycle(t, 30*time.Second, "DRAIN_TIMEOUT=3s", "TERMINATE_TIMEOUT_RESULT=ABANDON")
	ev, token := terminateEvent(t, h, insts[0])
	r := lifecycleOK(t, fn, ev)
	if r.Continued || r.Nodes[0].State != "timed-out" || r.Nodes[0].LifecycleAction != "ABANDON" || r.Nodes[0].Remaining != 1 {
		t.Errorf("result %+v, want timed-out, ABANDON, 1 pod left", r)
	}
	if a, calls := h.actionOf(t, token); a.Result != "ABANDON" || len(completions(calls)) != 1 {
		t.Errorf("action %+v, completions %v; want one ABANDON", a, completions(calls))
	}
	if on := h.readyPods(t, ns, "tmo")[nodes[0]]; len(on) != 1 {
		t.Errorf("pods left on %s: %v, want the one its budget kept", nodes[0], on)
	}
}

// A launch lifecycle action is answered CONTINUE only once the instance's
// Node has registered and is Ready; one whose Node never comes is answered
// LAUNCH_TIMEOUT_RESULT (ABANDON).
func TestLifecycleLaunchWaitsForReadyNode(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	inst := h.newInstance(t)
	ev, token := h.lifecycleEvent(t, "autoscaling:EC2_INSTANCE_LAUNCHING", inst)
	fn := h.startLifecycle(t, 20*time.Second)
	name := "lc-launch-" + inst[len(inst)-6:]
	var joined time.Time
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(3 * time.Second)
		h.addTestNode(t, "launch", name, inst)
		joined = time.Now()
	})
	r := lifecycleOK(t, fn, ev)
	wg.Wait()
	if len(r.Nodes) != 1 || r.Nodes[0].State != "ready" || r.Nodes[0].Node != name || r.Nodes[0].LifecycleAction != "CONTINUE" {
		t.Fatalf("result %+v, want ready on %s and CONTINUE", r, name)
	}
	a, calls := h.actionOf(t, token)
	if a.Result != "CONTINUE" || a.Completed == nil || len(completions(calls)) != 1 {
		t.Fatalf("action %+v, completions %v", a, completions(calls))
	}
	n, err := h.admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && a.Completed.Before(c.LastTransitionTime.Time) {
			t.Errorf("completed at %s, before the node was Ready at %s", a.Completed, c.LastTransitionTime)
		}
	}
	if a.Completed.Before(joined.Add(-time.Second)) {
		t.Errorf("completed at %s, before the node joined at %s", a.Completed, joined)
	}

	t.Run("never joins", func(t *testing.T) {
		inst := h.newInstance(t)
		ev, token := h.lifecycleEvent(t, "autoscaling:EC2_INSTANCE_LAUNCHING", inst)
		fn := h.startLifecycle(t, 20*time.Second, "LAUNCH_TIMEOUT=2s")
		r := lifecycleOK(t, fn, ev)
		if r.Nodes[0].State != "timed-out" || r.Nodes[0].LifecycleAction != "ABANDON" {
			t.Errorf("result %+v, want timed-out and ABANDON", r)
		}
		if a, _ := h.actionOf(t, token); a.Result != "ABANDON" {
			t.Errorf("action %+v, want ABANDON", a)
		}
	})
}

// A Spot interruption warning drains the node inside its two minutes, with
// no lifecycle action to answer.
func TestLifecycleSpotDrainsInTime(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	ns := h.lifecycleNamespace(t, "spot")
	nodes, insts := h.testNodes(t, "spot", 2)
	h.cordon(t, nodes[1], true)
	h.testWorkload(t, ns, "spot", 3, -1)
	h.cordon(t, nodes[1], false)
	before, err := h.stack.Lifecycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fn := h.startLifecycle(t, 130*time.Second)
	warned := time.Now()
	ev := fmt.Sprintf(`{"version":"0","id":"%s","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"%s",
"time":"%s","region":"%s","resources":["arn:aws:ec2:%s:%s:instance/%s"],"detail":{"instance-id":"%s","instance-action":"terminate"}}`,
		randomHex(8), stack.Account, warned.UTC().Format(time.RFC3339), stack.Region, stack.Region, stack.Account, insts[0], insts[0])
	r := lifecycleOK(t, fn, []byte(ev))
	took := time.Since(warned)
	if r.Continued || r.Nodes[0].State != "drained" || r.Nodes[0].Evicted != 3 || r.Nodes[0].LifecycleAction != "" {
		t.Errorf("result %+v, want drained, 3 evicted, no lifecycle action", r)
	}
	if took > 2*time.Minute {
		t.Errorf("the drain took %s, past the warning's two minutes", took)
	}
	t.Logf("Spot drain of 3 pods: %s", took.Round(time.Millisecond))
	if ready := h.waitReady(t, ns, "spot", 3); len(ready[nodes[1]]) != 3 {
		t.Errorf("pods %v, want all 3 on %s", ready, nodes[1])
	}
	_, taints, _ := h.nodeState(t, nodes[0])
	if !hasTaint(taints, "lambda-eks.io/spot-interruption") {
		t.Errorf("taints %v lack lambda-eks.io/spot-interruption", taints)
	}
	after, err := h.stack.Lifecycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Calls) != len(before.Calls) {
		t.Errorf("a Spot warning made lifecycle calls: %v", after.Calls[len(before.Calls):])
	}
}

// What the function refuses or leaves alone changes nothing: an instance
// with no node (its action answered CONTINUE at once), a node of an EKS
// managed node group (left to EKS), malformed and foreign events, Auto
// Scaling's test notification.
func TestLifecycleRefusesAndLeavesAlone(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	fn := h.startLifecycle(t, 30*time.Second)

	t.Run("instance with no node", func(t *testing.T) {
		inst := h.newInstance(t)
		ev, token := terminateEvent(t, h, inst)
		r := lifecycleOK(t, fn, ev)
		if r.Nodes[0].State != "no-node" || r.Nodes[0].LifecycleAction != "CONTINUE" {
			t.Errorf("result %+v, want no-node, CONTINUE", r)
		}
		if a, _ := h.actionOf(t, token); a.Result != "CONTINUE" {
			t.Errorf("action %+v", a)
		}
		spot := `{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning","detail":{"instance-id":"i-00000000000000dea"}}`
		if r := lifecycleOK(t, fn, []byte(spot)); r.Nodes[0].State != "no-node" {
			t.Errorf("spot for an unknown instance: %+v", r)
		}
	})
	t.Run("managed node group node", func(t *testing.T) {
		inst := h.newInstance(t)
		name := "lc-managed-" + inst[len(inst)-6:]
		h.addTestNode(t, "managed", name, inst)
		patch := `{"metadata":{"labels":{"eks.amazonaws.com/nodegroup":"ng-1"}}}`
		if _, err := h.admin.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		ev, token := terminateEvent(t, h, inst)
		r := lifecycleOK(t, fn, ev)
		if r.Nodes[0].State != "skipped" || !strings.Contains(r.Nodes[0].Reason, "managed node group ng-1") || r.Nodes[0].LifecycleAction != "" {
			t.Errorf("result %+v, want skipped for its owner", r)
		}
		// (kwok's heartbeats change its status: the spec and record say.)
		if cordoned, taints, record := h.nodeState(t, name); cordoned || len(taints) != 1 || record != "" {
			t.Errorf("the managed node was changed: cordoned %v, taints %v, record %q", cordoned, taints, record)
		}
		if a, _ := h.actionOf(t, token); a.State != "pending" {
			t.Errorf("action %+v, want left pending for its owner", a)
		}
	})
	t.Run("malformed and foreign events", func(t *testing.T) {
		for _, ev := range []string{`{"source":"aws.autoscaling"`, `{"source":"aws.s3","detail-type":"Object Created","detail":{}}`,
			`{"source":"aws.autoscaling","detail-type":"EC2 Instance-terminate Lifecycle Action","detail":{"EC2InstanceId":"i-1; rm -rf /"}}`} {
			_, fnErr, err := fn.Invoke(ctx, []byte(ev))
			if err != nil || fnErr == nil || fnErr.Type != "InvalidEvent" {
				t.Errorf("%s: %v %+v, want InvalidEvent", ev, err, fnErr)
			}
		}
		test := `{"source":"aws.autoscaling","detail-type":"EC2 Instance-terminate Lifecycle Action","detail":{"AutoScalingGroupName":"x","Event":"autoscaling:TEST_NOTIFICATION"}}`
		if r := lifecycleOK(t, fn, []byte(test)); r.Event != "test-notification" || r.Message == "" {
			t.Errorf("test notification: %+v", r)
		}
	})
}

// ./local.sh events/asg-terminate.json drains the sample's node (kwok-node-2)
// on the replica: cordoned and tainted, its Deployment pod evicted and
// rescheduled by the scheduler, its DaemonSet pod left, one CONTINUE at
// /__lifecycle; run again, it changes nothing and completes nothing twice.
func TestLifecycleLocalShSample(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	const node = "kwok-node-2"
	var sample struct {
		Detail struct {
			Token    string `json:"LifecycleActionToken"`
			Instance string `json:"EC2InstanceId"`
		} `json:"detail"`
	}
	b, err := readRepoFile(h, "events/asg-terminate.json")
	if err != nil || json.Unmarshal(b, &sample) != nil {
		t.Fatalf("sample: %v", err)
	}
	restore := func() {
		patch := `{"metadata":{"annotations":{"lambda-eks.io/drain":null}},"spec":{"unschedulable":null,"taints":null}}`
		if _, err := h.admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Errorf("restore %s: %v", node, err)
		}
	}
	restore()
	t.Cleanup(restore)
	// The shim forgets an earlier run's answer to the sample's action:
	// local.sh registers it again.
	if err := h.stack.ForgetLifecycleAction(ctx, sample.Detail.Token); err != nil {
		t.Fatal(err)
	}

	ns := h.lifecycleNamespace(t, "sample")
	labels := map[string]string{"app": "spread"}
	spread := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "spread", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
					WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				NodeSelector:                  map[string]string{"type": "kwok"},
				Affinity:                      baseNodesOnly(),
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers:                    []corev1.Container{{Name: "app", Image: "nginx:1.27"}}}}}}
	dsLabels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: dsLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dsLabels}, Spec: corev1.PodSpec{
				Affinity:   baseNodesOnly(),
				Containers: []corev1.Container{{Name: "agent", Image: "busybox:1.36"}}}}}}
	if _, err := h.admin.AppsV1().Deployments(ns).Create(ctx, spread, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	onNode := func(app string) (on, ready int) {
		pods, err := h.admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Spec.NodeName == node {
				on++
			}
			if p.Status.Phase == corev1.PodRunning {
				ready++
			}
		}
		return on, ready
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		depOn, depReady := onNode("spread")
		dsOn, dsReady := onNode("agent")
		if depOn >= 1 && depReady == 3 && dsOn == 1 && dsReady == stack.NodeCount {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workload not spread: deployment %d on %s (%d running), daemonset %d on it (%d running)", depOn, node, depReady, dsOn, dsReady)
		}
		time.Sleep(200 * time.Millisecond)
	}

	run := func() lifecycleResult {
		cmd := exec.Command(filepath.Join(h.root, "local.sh"), "events/asg-terminate.json")
		cmd.Dir = h.root
		// A drain that cannot finish ends in 90 s (timed-out), not in
		// local.sh's 15 minutes of continuations.
		cmd.Env = append(os.Environ(), "DRAIN_TIMEOUT=90s")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("./local.sh events/asg-terminate.json: %v\n%s", err, stderr.String())
		}
		return decodeLifecycle(t, out)
	}
	r := run()
	if len(r.Nodes) != 1 || r.Nodes[0].Node != node || r.Nodes[0].State != "drained" || r.Nodes[0].LifecycleAction != "CONTINUE" || r.Nodes[0].Evicted < 1 {
		t.Fatalf("result %+v, want %s drained and CONTINUE", r, node)
	}
	cordoned, taints, _ := h.nodeState(t, node)
	if !cordoned || !hasTaint(taints, "lambda-eks.io/asg-lifecycle-termination") {
		t.Errorf("%s: cordoned %v, taints %v", node, cordoned, taints)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		depOn, depReady := onNode("spread")
		dsOn, _ := onNode("agent")
		if depOn == 0 && depReady == 3 && dsOn == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the drain: deployment %d on %s, %d running elsewhere; daemonset %d on it", depOn, node, depReady, dsOn)
		}
		time.Sleep(200 * time.Millisecond)
	}
	a, calls := h.actionOf(t, sample.Detail.Token)
	if a.InstanceID != sample.Detail.Instance || a.Result != "CONTINUE" || strings.Join(completions(calls), ",") != "CONTINUE" {
		t.Errorf("action %+v, completions %v; want one CONTINUE", a, completions(calls))
	}

	_, _, record := h.nodeState(t, node)
	again := run()
	if again.Nodes[0].State != "already-completed" {
		t.Errorf("second run %+v, want already-completed", again)
	}
	if _, _, after := h.nodeState(t, node); after != record {
		t.Errorf("the second run changed %s's record: %s -> %s", node, record, after)
	}
	if _, calls := h.actionOf(t, sample.Detail.Token); len(completions(calls)) != 1 {
		t.Errorf("completions after the second run: %v", completions(calls))
	}
}

// baseNodesOnly keeps a pod on the replica's base nodes (kwok-node-N).
func baseNodesOnly() *corev1.Affinity {
	var names []string
	for i := range stack.NodeCount {
		names = append(names, stack.NodeName(i))
	}
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
			Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: names}}}}}}}
}

// A rolling refresh of a node group (each new node joining through its
// launch action, then each old node's terminate action in turn) keeps a
// Deployment of 6 replicas with a budget of minAvailable 5 at 5 Ready pods
// or more at every sample (200 ms apart), and no pod goes but by an
// eviction.
func TestLifecycleRollingRefreshKeepsTheBudget(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	const test = "roll"
	ns := h.lifecycleNamespace(t, test)
	old, oldInsts := h.testNodes(t, test, 3)
	labels := map[string]string{"app": "drain-" + test}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "drain-" + test, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](6), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"lifecycle-e2e": test},
				Tolerations:  []corev1.Toleration{{Key: testNodeTaint, Operator: corev1.TolerationOpExists}},
				TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
					WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers:                    []corev1.Container{{Name: "app", Image: "nginx:1.27"}}}}}}
	if _, err := h.admin.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t, ns, test, 6)
	h.setPDB(t, ns, test, 5)

	// The sampler: Ready pods every 200 ms, and every pod name seen.
	var mu sync.Mutex
	minReady, samples := 6, 0
	var sampleErrs []error
	seen := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ready, err := h.readyPodsErr(ns, test)
			mu.Lock()
			if err != nil {
				sampleErrs = append(sampleErrs, err)
				mu.Unlock()
				continue
			}
			samples++
			minReady = min(minReady, count(ready))
			for _, pods := range ready {
				for _, p := range pods {
					seen[p] = true
				}
			}
			mu.Unlock()
		}
	})
	mark := h.auditMark(t)
	fn := h.startLifecycle(t, 60*time.Second)
	for i, oldNode := range old {
		inst := h.newInstance(t)
		launch, launchToken := h.lifecycleEvent(t, "autoscaling:EC2_INSTANCE_LAUNCHING", inst)
		var wg2 sync.WaitGroup
		wg2.Go(func() {
			time.Sleep(time.Second)
			h.addTestNode(t, test, fmt.Sprintf("lc-roll-new%d-%s", i, inst[len(inst)-6:]), inst)
		})
		if r := lifecycleOK(t, fn, launch); r.Nodes[0].State != "ready" {
			t.Fatalf("launch of the new node %d: %+v", i, r)
		}
		wg2.Wait()
		if a, _ := h.actionOf(t, launchToken); a.Result != "CONTINUE" {
			t.Fatalf("launch action %+v", a)
		}
		ev, token := terminateEvent(t, h, oldInsts[i])
		r := lifecycleOK(t, fn, ev)
		if r.Nodes[0].State != "drained" {
			wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
			err := fn.WaitAsync(wait)
			cancel()
			if err != nil {
				t.Fatalf("drain of %s: %+v; continuations: %v", oldNode, r, err)
			}
		}
		if a, calls := h.actionOf(t, token); a.Result != "CONTINUE" || len(completions(calls)) != 1 {
			t.Fatalf("terminate action of %s: %+v, %v", oldNode, a, completions(calls))
		}
		// The instance terminates: its node goes.
		if err := h.admin.CoreV1().Nodes().Delete(ctx, oldNode, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		h.waitReady(t, ns, test, 6)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d samples, at least %d Ready pods in each, %d pods over the refresh", samples, minReady, len(seen))
	if len(sampleErrs) > 0 {
		t.Errorf("%d samples failed: %v", len(sampleErrs), sampleErrs[0])
	}
	if minReady < 5 {
		t.Errorf("a sample saw %d Ready pods; the budget allows no fewer than 5", minReady)
	}
	ready := h.readyPods(t, ns, test)
	for _, n := range old {
		if len(ready[n]) != 0 {
			t.Errorf("pods still on the old node %s: %v", n, ready[n])
		}
	}
	// Every pod that went was evicted; nothing deleted a pod.
	evicted := map[string]bool{}
	for _, p := range h.podVerbs(t, mark, stack.LifecycleUser, ns)["evict"] {
		evicted[p] = true
	}
	now := map[string]bool{}
	for _, pods := range ready {
		for _, p := range pods {
			now[p] = true
		}
	}
	for p := range seen {
		if !now[p] && !evicted[p] {
			t.Errorf("pod %s went without an eviction", p)
		}
	}
	if v := h.podVerbs(t, mark, stack.LifecycleUser, ns); len(v["delete"]) != 0 {
		t.Errorf("the function deleted pods: %v", v["delete"])
	}
}

// The same terminate event delivered twice at once, to two execution
// environments: one drains, the other sees the drain held (or done), and
// the action is answered once.
func TestLifecycleDuplicateAtOnce(t *testing.T) {
	h := mustHarness(t)
	ns := h.lifecycleNamespace(t, "dup")
	nodes, insts := h.testNodes(t, "dup", 2)
	h.cordon(t, nodes[1], true)
	h.testWorkload(t, ns, "dup", 4, -1)
	h.cordon(t, nodes[1], false)
	a, b := h.startLifecycle(t, 60*time.Second), h.startLifecycle(t, 60*time.Second)
	ev, token := terminateEvent(t, h, insts[0])
	states := make([]string, 2)
	outs, errs := invokeAtOnce(ev, a, b)
	for i := range outs {
		var r lifecycleResult
		switch {
		case errs[i] != nil:
			t.Errorf("invocation %d: %v", i, errs[i])
		case json.Unmarshal(outs[i], &r) != nil || len(r.Nodes) != 1:
			t.Errorf("invocation %d: %s", i, outs[i])
		default:
			states[i] = r.Nodes[0].State
		}
	}
	drained := strings.Count(strings.Join(states, ","), "drained")
	others := strings.Count(strings.Join(states, ","), "in-progress-elsewhere") + strings.Count(strings.Join(states, ","), "already-completed")
	if drained != 1 || others != 1 {
		t.Errorf("states %v: want one drained and one that left it to the other", states)
	}
	if act, calls := h.actionOf(t, token); act.Result != "CONTINUE" || len(completions(calls)) != 1 {
		t.Errorf("action %+v, completions %v; want one CONTINUE", act, completions(calls))
	}
	if ready := h.waitReady(t, ns, "dup", 4); len(ready[nodes[1]]) != 4 {
		t.Errorf("pods %v, want all on %s", ready, nodes[1])
	}
}

// A rebalance recommendation cordons and taints the node and leaves its
// pods (REBALANCE_DRAIN unset); an AWS Health scheduled change drains the
// node of every instance it names.
func TestLifecycleRebalanceCordonsHealthDrains(t *testing.T) {
	h := mustHarness(t)
	ns := h.lifecycleNamespace(t, "health")
	nodes, insts := h.testNodes(t, "health", 2)
	h.cordon(t, nodes[1], true)
	h.testWorkload(t, ns, "health", 2, -1)
	h.cordon(t, nodes[1], false)
	fn := h.startLifecycle(t, 60*time.Second)

	rebalance := fmt.Sprintf(`{"version":"0","id":"%s","detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2",
"account":"%s","time":"%s","region":"%s","resources":[],"detail":{"instance-id":"%s"}}`,
		randomHex(8), stack.Account, time.Now().UTC().Format(time.RFC3339), stack.Region, insts[0])
	r := lifecycleOK(t, fn, []byte(rebalance))
	if r.Nodes[0].State != "cordoned" || r.Nodes[0].Evicted != 0 {
		t.Errorf("rebalance: %+v, want cordoned, nothing evicted", r)
	}
	cordoned, taints, _ := h.nodeState(t, nodes[0])
	if !cordoned || !hasTaint(taints, "lambda-eks.io/rebalance-recommendation") {
		t.Errorf("after the rebalance recommendation: cordoned %v, taints %v", cordoned, taints)
	}
	if on := h.readyPods(t, ns, "health")[nodes[0]]; len(on) != 2 {
		t.Errorf("pods on %s after a rebalance recommendation: %v, want both left", nodes[0], on)
	}

	health := fmt.Sprintf(`{"version":"0","id":"%s","detail-type":"AWS Health Event","source":"aws.health","account":"%s",
"time":"%s","region":"%s","resources":["%s"],"detail":{"eventArn":"arn:aws:health:%s::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/x",
"service":"EC2","eventTypeCode":"AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED","eventTypeCategory":"scheduledChange",
"affectedEntities":[{"entityValue":"%s"}]}}`,
		randomHex(8), stack.Account, time.Now().UTC().Format(time.RFC3339), stack.Region, insts[0], stack.Region, insts[0])
	r = lifecycleOK(t, fn, []byte(health))
	if len(r.Nodes) != 1 || r.Nodes[0].State != "drained" || r.Nodes[0].Evicted != 2 {
		t.Errorf("health: %+v, want the one node drained, 2 evicted", r)
	}
	_, taints, record := h.nodeState(t, nodes[0])
	if !hasTaint(taints, "lambda-eks.io/scheduled-maintenance") || !strings.Contains(record, "scheduled-change") {
		t.Errorf("after the scheduled change: taints %v, record %s", taints, record)
	}
	if ready := h.waitReady(t, ns, "health", 2); len(ready[nodes[1]]) != 2 {
		t.Errorf("pods %v, want both on %s", ready, nodes[1])
	}
}
