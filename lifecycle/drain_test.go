package lifecycle

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestEvictableFollowsKubectlDrain(t *testing.T) {
	t.Parallel()
	ds := metav1.OwnerReference{Kind: "DaemonSet", Name: "agent", Controller: ptr.To(true)}
	rs := metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-1", Controller: ptr.To(true)}
	emptyDir := []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	cases := []struct {
		name     string
		pod      corev1.Pod
		emptyDir bool
		want     bool
		why      string
	}{
		{"replicated", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{rs}}}, true, true, ""},
		{"unreplicated (kubectl --force)", corev1.Pod{}, true, true, ""},
		{"daemonset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{ds}}}, true, false, "DaemonSet"},
		{"mirror", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "x"}}}, true, false, "mirror"},
		{"emptyDir, deleted", corev1.Pod{Spec: corev1.PodSpec{Volumes: emptyDir}}, true, true, ""},
		{"emptyDir, kept", corev1.Pod{Spec: corev1.PodSpec{Volumes: emptyDir}}, false, false, "EMPTYDIR_DATA=keep"},
		{"finished with emptyDir", corev1.Pod{Spec: corev1.PodSpec{Volumes: emptyDir}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, false, true, ""},
	}
	for _, c := range cases {
		got, why := evictable(&c.pod, c.emptyDir)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: evictable = %v (%q), want %v (%q)", c.name, got, why, c.want, c.why)
		}
	}
}

func TestGracePeriodIsThePodsUnlessItOutlastsTheDeadline(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	pod := func(s int64) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &s}}
	}
	if g := gracePeriod(pod(30), now, now.Add(time.Hour)); g != nil {
		t.Errorf("a pod that fits kept no grace period of its own: %d", *g)
	}
	if g := gracePeriod(pod(300), now, now.Add(100*time.Second)); g == nil || *g != 100 {
		t.Errorf("a 300 s pod before a deadline in 100 s: grace %v, want 100", g)
	}
	if g := gracePeriod(pod(300), now, now.Add(-time.Second)); g == nil || *g != 1 {
		t.Errorf("a passed deadline: grace %v, want 1", g)
	}
}

func TestDrainDeadline(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	hook := hookTimes{Heartbeat: 5 * time.Minute, Global: 500 * time.Minute}
	w := func(k Kind, evTime time.Time, cfg Config) *work {
		return &work{h: &Handler{cfg: cfg}, ev: &Event{Kind: k, Time: evTime}, hookTimes: hook}
	}
	cases := []struct {
		name string
		w    *work
		want time.Time
	}{
		{"terminate: the hook's global timeout less a minute", w(Terminate, now, Config{}), now.Add(499 * time.Minute)},
		{"terminate: DRAIN_TIMEOUT when shorter", w(Terminate, now, Config{DrainTimeout: time.Minute}), now.Add(time.Minute)},
		{"spot: two minutes from the warning, less the margin", w(Spot, now.Add(-30*time.Second), Config{}), now.Add(80 * time.Second)},
		{"spot: a stale warning counts from now", w(Spot, now.Add(-time.Hour), Config{}), now.Add(110 * time.Second)},
		{"health: an hour by default", w(Scheduled, now, Config{}), now.Add(time.Hour)},
		{"rebalance: DRAIN_TIMEOUT", w(Rebalance, now, Config{DrainTimeout: 10 * time.Minute}), now.Add(10 * time.Minute)},
	}
	for _, c := range cases {
		if got := c.w.drainDeadline(now); !got.Equal(c.want) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestHeartbeatDueAtHalfTheShortestTimeout(t *testing.T) {
	t.Parallel()
	w := &work{}
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rec := &record{Actions: []action{{Token: "a", HeartbeatSeconds: 600}, {Token: "b", HeartbeatSeconds: 60}, {Token: "c", HeartbeatSeconds: 10, Result: resultContinue}}}
	if w.heartbeatDue(rec, t0, t0.Add(29*time.Second)) {
		t.Error("due before half of 60 s")
	}
	if !w.heartbeatDue(rec, t0, t0.Add(30*time.Second)) {
		t.Error("not due at half of 60 s (an answered action's 10 s does not count)")
	}
	if w.heartbeatDue(&record{}, t0, t0.Add(time.Hour)) {
		t.Error("due with no action")
	}
}

func TestNodePatchCordonsTaintsAndGuardsTheVersion(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: "42"},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}}}
	rec := &record{Reasons: []Kind{Terminate}, Started: now, Deadline: now.Add(time.Hour), Holder: "req-1", Until: now.Add(15 * time.Minute)}
	b, err := nodePatch(n, rec, Terminate, true, now)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Unschedulable bool           `json:"unschedulable"`
			Taints        []corev1.Taint `json:"taints"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if p.Metadata.ResourceVersion != "42" || !p.Spec.Unschedulable || len(p.Spec.Taints) != 2 ||
		p.Spec.Taints[1].Key != "lambda-eks.io/asg-lifecycle-termination" || p.Spec.Taints[0].Key != "dedicated" {
		t.Fatalf("patch %s", b)
	}
	n.Annotations = map[string]string{RecordAnnotation: p.Metadata.Annotations[RecordAnnotation]}
	back, err := readRecord(n)
	if err != nil || back.Holder != "req-1" || !back.Deadline.Equal(rec.Deadline) {
		t.Fatalf("record read back %+v, %v", back, err)
	}
	n.Spec.Taints = p.Spec.Taints
	again, _ := nodePatch(n, rec, Terminate, true, now)
	if strings.Count(string(again), "asg-lifecycle-termination") != 1 {
		t.Errorf("a second patch taints twice: %s", again)
	}
	n.Annotations[RecordAnnotation] = "{not json"
	if _, err := readRecord(n); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("a broken record: %v", err)
	}
}

func TestLeaseHeldOnlyByAnotherUntilItLapses(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	r := &record{Holder: "req-1", Until: now.Add(time.Minute)}
	if !r.heldBy("req-2", now) || r.heldBy("req-1", now) || r.heldBy("req-2", now.Add(time.Minute)) {
		t.Error("lease: held by another until Until, never against its holder")
	}
}

func TestProviderIDInstance(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"aws:///us-east-1a/i-0123456789abcdef0": "i-0123456789abcdef0",
		"aws://us-east-1a/i-01234567":           "i-01234567",
		"kwok://node-1":                         "",
		"":                                      "",
	} {
		if got := providerIDInstance(in); got != want {
			t.Errorf("providerIDInstance(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResultCountsNodesAndEvictions(t *testing.T) {
	t.Parallel()
	r := &Result{Nodes: []NodeResult{{State: StateDrained, Evicted: 3}, {State: StateDrained, Evicted: 2}, {State: StateNoNode}}}
	got := r.CountResults()
	if got[StateDrained] != 2 || got[StateNoNode] != 1 || got["evicted"] != 5 || len(got) != 3 {
		t.Errorf("CountResults = %v", got)
	}
}
