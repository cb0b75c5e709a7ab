package kube

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/lambda-eks/lambda-eks/internal/kubefake"
)

func TestPlanScale(t *testing.T) {
	t.Parallel()
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
		{"restore with nothing remembered changes nothing", ptr.To[int32](2), nil, 0, true,
			scalePlan{from: 2, to: 2, note: "nothing to restore: not scaled down by lambda-eks"}, false},
		{"restore of a workload scaled up since keeps it, drops the annotation", ptr.To[int32](5), remembered, 0, true,
			scalePlan{from: 5, to: 5, unannotate: true, note: "scaled to 5 since the scale-down: left as it is, " + ReplicasAnnotation + " removed"}, false},
		{"a count drops a stale annotation", ptr.To[int32](0), remembered, 5, false, scalePlan{from: 0, to: 5, unannotate: true}, false},
		{"up without annotation", ptr.To[int32](1), nil, 4, false, scalePlan{from: 1, to: 4}, false},
		{"a bad annotation", ptr.To[int32](0), map[string]string{ReplicasAnnotation: "many"}, 0, true, scalePlan{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planScale(tt.replicas, tt.annotations, tt.target, tt.restore)
			if tt.wantErr {
				var bad *ReplicasAnnotationError
				if !errors.As(err, &bad) {
					t.Fatalf("plan %+v, err %v: want a *ReplicasAnnotationError", got, err)
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

func deploymentObj(ns, name string, replicas int64, labels map[string]any) *unstructured.Unstructured {
	u := unstructuredObj("apps/v1", "Deployment", ns, name, map[string]any{"spec": map[string]any{"replicas": replicas}})
	if labels != nil {
		_ = unstructured.SetNestedMap(u.Object, labels, "metadata", "labels")
	}
	u.SetResourceVersion("1")
	return u
}

func TestScaleDownAndRestore(t *testing.T) {
	t.Parallel()
	night := map[string]any{"schedule": "office-hours"}
	srv := newFakeCluster(t, deploymentObj("team", "web", 3, night), deploymentObj("team", "api", 2, night), deploymentObj("team", "db", 1, nil))
	c := srv.client(t)
	ctx := context.Background()

	type line struct {
		Name     string
		Result   Result
		From, To int32
		Note     string
	}
	lines := func(rs []ObjectResult) []line {
		var out []line
		for _, r := range rs {
			out = append(out, line{r.Name, r.Result, *r.From, *r.To, r.Note})
		}
		return out
	}
	state := func() map[string]string {
		out := map[string]string{}
		for _, n := range []string{"web", "api", "db"} {
			u, err := srv.Get(deployments, "team", n)
			if err != nil {
				t.Fatal(err)
			}
			replicas, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
			out[n] = string(rune('0'+replicas)) + "/" + u.GetAnnotations()[ReplicasAnnotation]
		}
		return out
	}
	sel := "schedule=office-hours"
	steps := []struct {
		name      string
		req       ScaleRequest
		before    func()
		want      []line
		wantState map[string]string
	}{
		{"dry run changes nothing", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: sel, DryRun: true}, nil,
			[]line{{"api", Scaled, 2, 0, ""}, {"web", Scaled, 3, 0, ""}}, map[string]string{"web": "3/", "api": "2/", "db": "1/"}},
		{"night", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: sel}, nil,
			[]line{{"api", Scaled, 2, 0, ""}, {"web", Scaled, 3, 0, ""}}, map[string]string{"web": "0/3", "api": "0/2", "db": "1/"}},
		{"night again", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: sel}, nil,
			[]line{{"api", Unchanged, 0, 0, ""}, {"web", Unchanged, 0, 0, ""}}, map[string]string{"web": "0/3", "api": "0/2", "db": "1/"}},
		{"morning, after someone scaled api up by hand", ScaleRequest{Namespace: "team", Kind: KindDeployment, Selector: sel, Restore: true},
			func() {
				if err := srv.Edit(deployments, "team", "api", func(u *unstructured.Unstructured) {
					_ = unstructured.SetNestedField(u.Object, int64(4), "spec", "replicas")
				}); err != nil {
					t.Fatal(err)
				}
			},
			[]line{{"api", Unchanged, 4, 4, "scaled to 4 since the scale-down: left as it is, " + ReplicasAnnotation + " removed"}, {"web", Scaled, 0, 3, ""}},
			map[string]string{"web": "3/", "api": "4/", "db": "1/"}},
		{"one by name", ScaleRequest{Namespace: "team", Kind: KindDeployment, Name: "db", Replicas: 4}, nil,
			[]line{{"db", Scaled, 1, 4, ""}}, map[string]string{"web": "3/", "api": "4/", "db": "4/"}},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
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
	if _, err := c.Scale(ctx, ScaleRequest{Namespace: "team", Kind: KindDaemonSet, Name: "x"}); err == nil {
		t.Error("scale of a DaemonSet: want an error")
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	srv := newFakeCluster(t, deploymentObj("team", "web", 1, nil))
	c := srv.client(t)
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return at }
	res, err := c.Restart(context.Background(), RestartRequest{Namespace: "team", Kind: KindDeployment, Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Result != Restarted {
		t.Errorf("result %s, want restarted", res.Result)
	}
	var patches []kubefake.Request
	for _, r := range srv.Requests() {
		if r.Verb == "patch" {
			patches = append(patches, r)
		}
	}
	if len(patches) != 1 || patches[0].PatchType != types.StrategicMergePatchType {
		t.Fatalf("requests %v, want one strategic merge patch, as kubectl rollout restart sends", srv.Requests())
	}
	var got map[string]any
	if err := json.Unmarshal(patches[0].Body, &got); err != nil {
		t.Fatal(err)
	}
	at2, _, _ := unstructured.NestedString(got, "spec", "template", "metadata", "annotations", RestartedAtAnnotation)
	if at2 != "2026-11-22T12:00:00Z" {
		t.Errorf("patch %s: pod template annotation %s = %q, want the RFC 3339 time", patches[0].Body, RestartedAtAnnotation, at2)
	}
	if _, err := c.Restart(context.Background(), RestartRequest{Namespace: "team", Kind: "ConfigMap", Name: "web"}); err == nil ||
		!strings.Contains(err.Error(), "not a workload") {
		t.Errorf("restart of a ConfigMap: err = %v, want it refused", err)
	}
}
