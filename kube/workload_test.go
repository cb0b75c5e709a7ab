package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func TestPlanScale(t *testing.T) {
	remembered := map[string]string{ReplicasAnnotation: "3"}
	tests := []struct {
		name        string
		replicas    *int32
		annotations map[string]string
		target      int32
		restore     bool
		want        scalePlan
		wantErr     bool
	}{
		{"down to 0 remembers", ptr.To[int32](3), nil, 0, false, scalePlan{from: 3, to: 0, annotate: "3"}, false},
		{"unset replicas count as 1", nil, nil, 0, false, scalePlan{from: 1, to: 0, annotate: "1"}, false},
		{"already 0 keeps what was remembered", ptr.To[int32](0), remembered, 0, false, scalePlan{from: 0, to: 0}, false},
		{"restore", ptr.To[int32](0), remembered, 0, true, scalePlan{from: 0, to: 3, unannotate: true}, false},
		{"restore with nothing remembered changes nothing", ptr.To[int32](2), nil, 0, true, scalePlan{from: 2, to: 2}, false},
		{"a count drops a stale annotation", ptr.To[int32](0), remembered, 5, false, scalePlan{from: 0, to: 5, unannotate: true}, false},
		{"up without annotation", ptr.To[int32](1), nil, 4, false, scalePlan{from: 1, to: 4}, false},
		{"a bad annotation", ptr.To[int32](0), map[string]string{ReplicasAnnotation: "many"}, 0, true, scalePlan{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planScale(tt.replicas, tt.annotations, tt.target, tt.restore)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("plan %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(scalePlan{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

// scaleReactor makes the fake clientset's deployments/scale update set the
// Deployment's replicas, as the API server does.
func scaleReactor(cs *fake.Clientset) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		s := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		if len(a.(k8stesting.UpdateAction).(k8stesting.UpdateActionImpl).UpdateOptions.DryRun) > 0 {
			return true, s, nil
		}
		d, err := cs.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("deployments"), s.Namespace, s.Name)
		if err != nil {
			return true, nil, err
		}
		dep := d.(*appsv1.Deployment).DeepCopy()
		dep.Spec.Replicas = ptr.To(s.Spec.Replicas)
		return true, s, cs.Tracker().Update(appsv1.SchemeGroupVersion.WithResource("deployments"), dep, s.Namespace)
	}
}

func deploymentObj(ns, name string, replicas int32, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas)}}
}

func TestScaleDownAndRestore(t *testing.T) {
	night := map[string]string{"schedule": "office-hours"}
	cs := fake.NewClientset(deploymentObj("team", "web", 3, night), deploymentObj("team", "api", 2, night),
		deploymentObj("team", "db", 1, nil))
	cs.PrependReactor("update", "deployments", scaleReactor(cs))
	// The fake's tracker ignores dryRun on a patch; the API server keeps nothing.
	cs.PrependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchActionImpl)
		if len(p.PatchOptions.DryRun) == 0 {
			return false, nil, nil
		}
		obj, err := cs.Tracker().Get(p.GetResource(), p.GetNamespace(), p.GetName())
		return true, obj, err
	})
	c := New(cs, nil, nil)
	ctx := context.Background()

	type line struct {
		Name     string
		Result   Result
		From, To int32
	}
	lines := func(rs []ObjectResult) []line {
		var out []line
		for _, r := range rs {
			out = append(out, line{r.Name, r.Result, *r.From, *r.To})
		}
		return out
	}
	state := func() map[string]string {
		out := map[string]string{}
		for _, n := range []string{"web", "api", "db"} {
			d, err := cs.AppsV1().Deployments("team").Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			out[n] = string(rune('0'+*d.Spec.Replicas)) + "/" + d.Annotations[ReplicasAnnotation]
		}
		return out
	}

	steps := []struct {
		name      string
		req       ScaleRequest
		want      []line
		wantState map[string]string
	}{
		{"dry run changes nothing", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: "schedule=office-hours", DryRun: true},
			[]line{{"api", Scaled, 2, 0}, {"web", Scaled, 3, 0}}, map[string]string{"web": "3/", "api": "2/", "db": "1/"}},
		{"night", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: "schedule=office-hours"},
			[]line{{"api", Scaled, 2, 0}, {"web", Scaled, 3, 0}}, map[string]string{"web": "0/3", "api": "0/2", "db": "1/"}},
		{"night again", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: "schedule=office-hours"},
			[]line{{"api", Unchanged, 0, 0}, {"web", Unchanged, 0, 0}}, map[string]string{"web": "0/3", "api": "0/2", "db": "1/"}},
		{"morning", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: "schedule=office-hours", Restore: true},
			[]line{{"api", Scaled, 0, 2}, {"web", Scaled, 0, 3}}, map[string]string{"web": "3/", "api": "2/", "db": "1/"}},
		{"one by name", ScaleRequest{Namespace: "team", Kind: KindDeployment, Name: "db", Replicas: 4},
			[]line{{"db", Scaled, 1, 4}}, map[string]string{"web": "3/", "api": "2/", "db": "4/"}},
	}
	for _, s := range steps {
		got, err := c.Scale(ctx, s.req)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, lines(got)); diff != "" {
			t.Errorf("%s: results (-want +got):\n%s", s.name, diff)
		}
		if diff := cmp.Diff(s.wantState, state()); diff != "" {
			t.Errorf("%s: replicas/annotation (-want +got):\n%s", s.name, diff)
		}
	}
}

func TestRestart(t *testing.T) {
	cs := fake.NewClientset(deploymentObj("team", "web", 1, nil))
	c := New(cs, nil, nil)
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return at }
	res, err := c.Restart(context.Background(), RestartRequest{Namespace: "team", Kind: KindDeployment, Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Result != Restarted {
		t.Errorf("result %s, want restarted", res.Result)
	}
	d, err := cs.AppsV1().Deployments("team").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Annotations[RestartedAtAnnotation]; got != "2026-11-22T12:00:00Z" {
		t.Errorf("pod template annotation %s = %q, want the RFC 3339 time", RestartedAtAnnotation, got)
	}
	if _, err := c.Restart(context.Background(), RestartRequest{Namespace: "team", Kind: "ConfigMap", Name: "web"}); err == nil {
		t.Error("restart of a ConfigMap: want an error")
	}
}

func TestReadinessOf(t *testing.T) {
	obj := func(apiVersion, kind string, spec, status map[string]any, generation int64) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
			"metadata": map[string]any{"name": "x", "generation": generation}, "spec": spec, "status": status}}
		return u
	}
	dep := func(status map[string]any) *unstructured.Unstructured {
		return obj("apps/v1", "Deployment", map[string]any{"replicas": int64(3)}, status, 2)
	}
	full := map[string]any{"observedGeneration": int64(2), "replicas": int64(3), "updatedReplicas": int64(3), "readyReplicas": int64(3), "availableReplicas": int64(3)}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range m {
			out[kk] = vv
		}
		out[k] = v
		return out
	}
	tests := []struct {
		name        string
		obj         *unstructured.Unstructured
		want        Result
		wantMessage string
	}{
		{"deployment rolled out", dep(full), Ready, ""},
		{"deployment not observed", dep(with(full, "observedGeneration", int64(1))), Progressing, "generation 2 not observed"},
		{"an old failure before the new generation is observed", dep(with(with(full, "observedGeneration", int64(1)), "conditions", []any{
			map[string]any{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}})), Progressing, "generation 2 not observed"},
		{"deployment updating", dep(with(full, "updatedReplicas", int64(1))), Progressing, "1 of 3 replicas updated"},
		{"deployment old pods terminating", dep(with(full, "replicas", int64(4))), Progressing, "old replicas"},
		{"deployment not available", dep(with(full, "availableReplicas", int64(2))), Progressing, "2 of 3 replicas available"},
		{"deployment past its deadline", dep(with(full, "conditions", []any{map[string]any{"type": "Progressing", "status": "False",
			"reason": "ProgressDeadlineExceeded", "message": "took too long"}})), Failed, "progress deadline exceeded"},
		{"statefulset ready", obj("apps/v1", "StatefulSet", map[string]any{"replicas": int64(2)},
			map[string]any{"observedGeneration": int64(1), "updatedReplicas": int64(2), "readyReplicas": int64(2), "availableReplicas": int64(2)}, 1), Ready, ""},
		{"statefulset starting", obj("apps/v1", "StatefulSet", map[string]any{"replicas": int64(2)},
			map[string]any{"observedGeneration": int64(1), "updatedReplicas": int64(2), "readyReplicas": int64(1)}, 1), Progressing, "1 of 2 replicas ready"},
		{"daemonset ready", obj("apps/v1", "DaemonSet", map[string]any{},
			map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(2), "updatedNumberScheduled": int64(2), "numberReady": int64(2), "numberAvailable": int64(2)}, 1), Ready, ""},
		{"job complete", obj("batch/v1", "Job", map[string]any{}, map[string]any{"succeeded": int64(1),
			"conditions": []any{map[string]any{"type": "Complete", "status": "True"}}}, 1), Ready, ""},
		{"job failed", obj("batch/v1", "Job", map[string]any{}, map[string]any{
			"conditions": []any{map[string]any{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}}}, 1), Failed, "BackoffLimitExceeded"},
		{"job running", obj("batch/v1", "Job", map[string]any{}, map[string]any{"active": int64(1)}, 1), Progressing, "0 of 1 completions"},
		{"configmap exists", obj("v1", "ConfigMap", nil, nil, 0), Ready, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, r, err := ReadinessOf(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			msg := ""
			if r != nil {
				msg = r.Message
			}
			if got != tt.want || !strings.Contains(msg, tt.wantMessage) || (tt.wantMessage == "" && msg != "") {
				t.Errorf("ReadinessOf = %s %q, want %s with %q", got, msg, tt.want, tt.wantMessage)
			}
		})
	}
}
