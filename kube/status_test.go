package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func cond(typ, status, reason string) map[string]any {
	return map[string]any{"type": typ, "status": status, "reason": reason, "message": reason}
}

// TestReadinessOf covers every kind the README names, as kstatus judges it.
func TestReadinessOf(t *testing.T) {
	t.Parallel()
	obj := func(apiVersion, kind string, generation int64, spec, status map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
			"metadata": map[string]any{"name": "x", "namespace": "n", "generation": generation}, "spec": spec, "status": status}}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}
	dep := map[string]any{"observedGeneration": int64(2), "replicas": int64(3), "updatedReplicas": int64(3), "readyReplicas": int64(3),
		"availableReplicas": int64(3), "conditions": []any{cond("Progressing", "True", "NewReplicaSetAvailable"), cond("Available", "True", "")}}
	sts := map[string]any{"observedGeneration": int64(1), "replicas": int64(3), "readyReplicas": int64(3), "currentReplicas": int64(3),
		"updatedReplicas": int64(3), "availableReplicas": int64(3), "currentRevision": "r2", "updateRevision": "r2"}
	ds := map[string]any{"observedGeneration": int64(1), "desiredNumberScheduled": int64(2), "currentNumberScheduled": int64(2),
		"updatedNumberScheduled": int64(2), "numberReady": int64(2), "numberAvailable": int64(2)}
	tests := []struct {
		name string
		obj  *unstructured.Unstructured
		want Result
	}{
		{"deployment rolled out", obj("apps/v1", "Deployment", 2, map[string]any{"replicas": int64(3)}, dep), Ready},
		{"deployment: new generation not observed", obj("apps/v1", "Deployment", 3, map[string]any{"replicas": int64(3)}, dep), Progressing},
		{"deployment: an old failure before the new generation is observed", obj("apps/v1", "Deployment", 3, map[string]any{"replicas": int64(3)},
			with(dep, "conditions", []any{cond("Progressing", "False", "ProgressDeadlineExceeded")})), Progressing},
		{"deployment updating", obj("apps/v1", "Deployment", 2, map[string]any{"replicas": int64(3)}, with(dep, "updatedReplicas", int64(1))), Progressing},
		{"deployment past its deadline", obj("apps/v1", "Deployment", 2, map[string]any{"replicas": int64(3)},
			with(dep, "conditions", []any{cond("Progressing", "False", "ProgressDeadlineExceeded")})), Failed},
		{"statefulset ready", obj("apps/v1", "StatefulSet", 1, map[string]any{"replicas": int64(3)}, sts), Ready},
		{"statefulset partitioned: the partition's pods updated is done", obj("apps/v1", "StatefulSet", 1, map[string]any{"replicas": int64(3),
			"updateStrategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"partition": int64(2)}}},
			with(sts, "updatedReplicas", int64(1), "currentRevision", "r1")), Ready},
		{"statefulset partitioned: not yet", obj("apps/v1", "StatefulSet", 1, map[string]any{"replicas": int64(3),
			"updateStrategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"partition": int64(1)}}},
			with(sts, "updatedReplicas", int64(1), "currentRevision", "r1")), Progressing},
		{"statefulset OnDelete is not rolled by the controller", obj("apps/v1", "StatefulSet", 1, map[string]any{"replicas": int64(3),
			"updateStrategy": map[string]any{"type": "OnDelete"}}, with(sts, "updatedReplicas", int64(0), "currentRevision", "r1")), Ready},
		{"daemonset ready", obj("apps/v1", "DaemonSet", 1, map[string]any{}, ds), Ready},
		{"daemonset updating", obj("apps/v1", "DaemonSet", 1, map[string]any{}, with(ds, "updatedNumberScheduled", int64(1))), Progressing},
		{"daemonset OnDelete", obj("apps/v1", "DaemonSet", 1, map[string]any{"updateStrategy": map[string]any{"type": "OnDelete"}},
			with(ds, "updatedNumberScheduled", int64(1))), Ready},
		{"job complete", obj("batch/v1", "Job", 1, map[string]any{}, map[string]any{"succeeded": int64(1), "startTime": "2026-12-01T12:00:00Z",
			"conditions": []any{cond("Complete", "True", "")}}), Ready},
		{"job running is not done", obj("batch/v1", "Job", 1, map[string]any{}, map[string]any{"active": int64(1), "startTime": "2026-12-01T12:00:00Z"}), Progressing},
		{"job failed", obj("batch/v1", "Job", 1, map[string]any{}, map[string]any{"startTime": "2026-12-01T12:00:00Z",
			"conditions": []any{cond("Failed", "True", "BackoffLimitExceeded")}}), Failed},
		{"pod running and ready", obj("v1", "Pod", 0, map[string]any{}, map[string]any{"phase": "Running",
			"conditions": []any{cond("Ready", "True", "")}}), Ready},
		{"pod pending", obj("v1", "Pod", 0, map[string]any{}, map[string]any{"phase": "Pending"}), Progressing},
		{"pvc bound", obj("v1", "PersistentVolumeClaim", 0, map[string]any{}, map[string]any{"phase": "Bound"}), Ready},
		{"pvc pending", obj("v1", "PersistentVolumeClaim", 0, map[string]any{}, map[string]any{"phase": "Pending"}), Progressing},
		{"service LoadBalancer without a cluster IP yet", obj("v1", "Service", 0, map[string]any{"type": "LoadBalancer"},
			map[string]any{}), Progressing},
		{"service LoadBalancer with an address", obj("v1", "Service", 0, map[string]any{"type": "LoadBalancer", "clusterIP": "10.0.0.9"},
			map[string]any{"loadBalancer": map[string]any{"ingress": []any{map[string]any{"ip": "192.0.2.1"}}}}), Ready},
		{"crd established", obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", 1, map[string]any{},
			map[string]any{"conditions": []any{cond("Established", "True", "")}}), Ready},
		{"crd not established", obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", 1, map[string]any{},
			map[string]any{"conditions": []any{cond("Established", "False", "Installing")}}), Progressing},
		{"custom resource Ready=False", obj("example.com/v1", "Widget", 1, map[string]any{},
			map[string]any{"observedGeneration": int64(1), "conditions": []any{cond("Ready", "False", "Waiting")}}), Progressing},
		{"custom resource Ready=True", obj("example.com/v1", "Widget", 1, map[string]any{},
			map[string]any{"observedGeneration": int64(1), "conditions": []any{cond("Ready", "True", "")}}), Ready},
		{"custom resource Reconciling", obj("example.com/v1", "Widget", 1, map[string]any{},
			map[string]any{"observedGeneration": int64(1), "conditions": []any{cond("Reconciling", "True", "Working")}}), Progressing},
		{"custom resource Stalled", obj("example.com/v1", "Widget", 1, map[string]any{},
			map[string]any{"observedGeneration": int64(1), "conditions": []any{cond("Stalled", "True", "BadSpec")}}), Failed},
		{"configmap exists", obj("v1", "ConfigMap", 0, nil, nil), Ready},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, r, err := ReadinessOf(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ReadinessOf = %s (%s: %s), want %s", got, r.Status, r.Message, tt.want)
			}
		})
	}
	term := obj("v1", "ConfigMap", 0, nil, nil)
	term.SetDeletionTimestamp(&metav1.Time{Time: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)})
	if got, _, _ := ReadinessOf(term); got != Terminating {
		t.Errorf("an object being deleted: %s, want terminating", got)
	}
}

func TestDeleteAndStatus(t *testing.T) {
	t.Parallel()
	ready := unstructuredObj("apps/v1", "Deployment", "team", "web", map[string]any{
		"spec": map[string]any{"replicas": int64(2)},
		"status": map[string]any{"observedGeneration": int64(1), "replicas": int64(2), "updatedReplicas": int64(2), "readyReplicas": int64(2),
			"availableReplicas": int64(2), "conditions": []any{cond("Progressing", "True", "NewReplicaSetAvailable"), cond("Available", "True", "")}},
	})
	cm := unstructuredObj("v1", "ConfigMap", "team", "settings", nil)
	ctx := context.Background()
	refs := []Ref{{Kind: "Deployment", Name: "web"}, {Kind: "ConfigMap", Name: "settings"}, {Kind: "Deployment", Name: "gone"}}
	line := func(rs []ObjectResult) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.APIVersion+" "+r.Kind+" "+r.Namespace+"/"+r.Name+"="+string(r.Result))
		}
		return out
	}
	srv := newFakeCluster(t, ready, cm)
	c := srv.client(t)
	st, err := c.Status(ctx, refs, "team")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apps/v1 Deployment team/web=ready", "v1 ConfigMap team/settings=ready", "apps/v1 Deployment team/gone=absent"}, line(st)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if st[0].Readiness == nil || st[0].Readiness.Available != 2 || st[0].Readiness.Status != "Current" {
		t.Errorf("deployment readiness %+v, want Current with 2 available", st[0].Readiness)
	}

	srv.ClearRequests()
	del, err := c.Delete(ctx, refs, DeleteOptions{Namespace: "team", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apps/v1 Deployment team/web=deleted", "v1 ConfigMap team/settings=deleted", "apps/v1 Deployment team/gone=absent"}, line(del)); diff != "" {
		t.Errorf("dry-run delete (-want +got):\n%s", diff)
	}
	for _, r := range srv.Requests() {
		if r.Verb == "delete" && !r.DryRun {
			t.Errorf("%s without dryRun", r)
		}
	}
	if _, err := srv.Get(deployments, "team", "web"); err != nil {
		t.Errorf("after a dry-run delete: %v, want the Deployment kept", err)
	}
	for i, want := range []string{"deleted", "absent"} {
		del, err = c.Delete(ctx, refs, DeleteOptions{Namespace: "team", Propagation: metav1.DeletePropagationForeground})
		if err != nil {
			t.Fatal(err)
		}
		w := []string{"apps/v1 Deployment team/web=" + want, "v1 ConfigMap team/settings=" + want, "apps/v1 Deployment team/gone=absent"}
		if diff := cmp.Diff(w, line(del)); diff != "" {
			t.Errorf("delete %d (-want +got):\n%s", i+1, diff)
		}
	}
}

// TestDeleteOwned: a delete for an owner removes only what it still owns.
func TestDeleteOwned(t *testing.T) {
	t.Parallel()
	owned := func(name, owner string) *unstructured.Unstructured {
		u := unstructuredObj("v1", "ConfigMap", "team", name, nil)
		if owner != "" {
			u.SetAnnotations(map[string]string{OwnerAnnotation: owner})
		}
		return u
	}
	srv := newFakeCluster(t, owned("mine", "stack/A"), owned("moved", "stack/B"), owned("foreign", ""))
	m := mustManifest(t, configMap("mine", ""), configMap("moved", ""), configMap("foreign", ""), configMap("gone", ""))
	got, err := srv.client(t).DeleteManifest(context.Background(), m, DeleteOptions{Namespace: "team", Owner: "stack/A"})
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, r := range got {
		results = append(results, r.Name+"="+string(r.Result))
	}
	if diff := cmp.Diff([]string{"mine=deleted", "moved=kept", "foreign=kept", "gone=absent"}, results); diff != "" {
		t.Errorf("owned delete (-want +got):\n%s", diff)
	}
	if !strings.Contains(got[1].Note, "stack/B") {
		t.Errorf("note %q, want it to name the owner", got[1].Note)
	}
	for _, n := range []string{"moved", "foreign"} {
		if _, err := srv.Get(configMaps, "team", n); err != nil {
			t.Errorf("%s: %v, want it kept", n, err)
		}
	}
}
