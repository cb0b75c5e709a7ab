package handler

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

func TestResolveActions(t *testing.T) {
	t.Parallel()
	const cm = `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n`
	// summary is the part of a Request the new actions set.
	type summary struct {
		Action, Kind, Name, Selector string
		Replicas                     int32
		Restore, Force, DryRun       bool
		Propagation                  metav1.DeletionPropagation
		Wait                         time.Duration
		Objects                      int
	}
	tests := []struct {
		name    string
		event   string
		want    summary
		wantErr string
	}{
		{"apply", `{"action":"apply","manifest":"` + cm + `","force":true,"wait":"90s"}`,
			summary{Action: "apply", Name: "nginx", Replicas: 2, Force: true, Wait: 90 * time.Second, Objects: 1}, ""},
		{"apply dry run", `{"action":"apply","manifest":"` + cm + `","dryRun":true}`,
			summary{Action: "apply", Name: "nginx", Replicas: 2, DryRun: true, Objects: 1}, ""},
		{"delete by kind and name", `{"action":"delete","kind":"ConfigMap","name":"a","propagation":"Foreground"}`,
			summary{Action: "delete", Kind: "ConfigMap", Name: "a", Replicas: 2, Propagation: "Foreground"}, ""},
		{"delete by manifest", `{"action":"delete","manifest":"` + cm + `"}`,
			summary{Action: "delete", Name: "nginx", Replicas: 2, Propagation: "Background", Objects: 1}, ""},
		{"scale by name defaults to a Deployment", `{"action":"scale","name":"web","replicas":0}`,
			summary{Action: "scale", Kind: "Deployment", Name: "web", Replicas: 0}, ""},
		{"scale by selector", `{"action":"scale","selector":"tier in (web,api)","replicas":"restore"}`,
			summary{Action: "scale", Selector: "tier in (web,api)", Restore: true}, ""},
		{"restart a StatefulSet", `{"action":"restart","kind":"StatefulSet","name":"db","wait":"1m"}`,
			summary{Action: "restart", Kind: "StatefulSet", Name: "db", Replicas: 2, Wait: time.Minute}, ""},
		{"status of the default Deployment", `{"action":"status"}`,
			summary{Action: "status", Kind: "Deployment", Name: "nginx", Replicas: 2}, ""},
		{"status of a qualified kind", `{"action":"status","kind":"Widget.example.com","name":"w"}`,
			summary{Action: "status", Kind: "Widget.example.com", Name: "w", Replicas: 2}, ""},

		{"apply without manifest", `{"action":"apply"}`, summary{}, "needs a manifest"},
		{"a bad document names its index", `{"action":"apply","manifest":"` + cm + `---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"}`,
			summary{}, "manifest document 2"},
		{"field the action does not read", `{"action":"apply","manifest":"` + cm + `","replicas":3}`, summary{}, "does not use replicas"},
		{"image on scale", `{"action":"scale","replicas":1,"image":"x"}`, summary{}, "does not use image"},
		{"delete with no name", `{"action":"delete","kind":"ConfigMap"}`, summary{}, "kind and name"},
		{"delete with both", `{"action":"delete","kind":"ConfigMap","name":"a","manifest":"` + cm + `"}`, summary{}, "not both"},
		{"bad propagation", `{"action":"delete","kind":"ConfigMap","name":"a","propagation":"Orphan"}`, summary{}, "propagation"},
		{"scale without replicas", `{"action":"scale","name":"web"}`, summary{}, "needs replicas"},
		{"scale a DaemonSet", `{"action":"scale","kind":"DaemonSet","name":"x","replicas":1}`, summary{}, "Deployment or StatefulSet"},
		{"scale name and selector", `{"action":"scale","name":"a","selector":"x=y","replicas":1}`, summary{}, "not both"},
		{"bad selector", `{"action":"scale","selector":"x==(","replicas":1}`, summary{}, "selector"},
		{"restore is a scale's", `{"action":"ensure-nginx","replicas":"restore"}`, summary{}, "only for action scale"},
		{"other replicas string", `{"action":"scale","replicas":"three"}`, summary{}, `must be a JSON integer or "restore"`},
		{"scale out of range", `{"action":"scale","replicas":1001}`, summary{}, "out of range"},
		{"restart a ConfigMap", `{"action":"restart","kind":"ConfigMap","name":"a"}`, summary{}, "Deployment, StatefulSet or DaemonSet"},
		{"bad wait", `{"action":"restart","wait":"soon"}`, summary{}, "not a positive duration"},
		{"negative wait", `{"action":"restart","wait":"-1s"}`, summary{}, "not a positive duration"},
		{"wait over Lambda's cap", `{"action":"restart","wait":"16m"}`, summary{}, "15-minute"},
		{"wait with dry run", `{"action":"restart","wait":"1m","dryRun":true}`, summary{}, "do not go together"},
		{"wait on status", `{"action":"status","wait":"1m"}`, summary{}, "does not use wait"},
		{"bad kind", `{"action":"status","kind":"config map"}`, summary{}, "not a kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := DecodeEvent([]byte(tt.event))
			var r Request
			if err == nil {
				r, err = Resolve(ev, testConfig)
			}
			if tt.wantErr != "" {
				var e *invoke.Error
				if !errors.As(err, &e) || e.Code != invoke.InvalidEvent || !strings.Contains(e.Message, tt.wantErr) {
					t.Fatalf("err = %v, want invoke.InvalidEvent with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := summary{r.Action, r.Kind, r.Name, r.Selector, r.Replicas, r.Restore, r.Force, r.DryRun, r.Propagation, r.Wait, len(r.Objects)}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplicasJSON(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`3`, `0`, `"restore"`} {
		var r Replicas
		if err := json.Unmarshal([]byte(in), &r); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		out, err := json.Marshal(r)
		if err != nil || string(out) != in {
			t.Errorf("%s round-trips to %s (%v)", in, out, err)
		}
	}
	for _, in := range []string{`"3"`, `1.5`, `true`, `99999999999`, `"Restore"`} {
		var r Replicas
		if err := json.Unmarshal([]byte(in), &r); err == nil {
			t.Errorf("%s: accepted as %+v, want an error", in, r)
		}
	}
}

func TestCheckWait(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := checkWait(ctx, 30*time.Second); err != nil {
		t.Errorf("a wait of the function's timeout: %v", err)
	}
	var e *invoke.Error
	if err := checkWait(ctx, 45*time.Second); !errors.As(err, &e) || e.Code != invoke.InvalidEvent || !strings.Contains(e.Message, "Timeout") {
		t.Errorf("a wait past the timeout: err = %v, want invoke.InvalidEvent naming the Timeout", err)
	}
}

func TestResponseDryRunAndExtras(t *testing.T) {
	t.Parallel()
	from, to := int32(3), int32(0)
	resp := Response{Cluster: "demo", Action: "scale", DryRun: true, Objects: []kube.ObjectResult{
		{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "n", Name: "d", Result: kube.Scaled, From: &from, To: &to}}}
	got, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cluster":"demo","action":"scale","dryRun":true,"objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"n","name":"d","result":"scaled","from":3,"to":0}]}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
}

func TestHandlerScaleAndRestart(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t, deployment("web", 3))
	h := New(testConfig, api.connector(), discardLogger())
	ctx := t.Context()
	steps := []struct{ event, want string }{
		{`{"action":"restart","name":"web","dryRun":true}`,
			`{"cluster":"demo","action":"restart","dryRun":true,"objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default","name":"web","result":"restarted"}]}`},
		{`{"action":"restart","name":"web"}`,
			`{"cluster":"demo","action":"restart","objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default","name":"web","result":"restarted"}]}`},
		{`{"action":"scale","name":"web","replicas":3}`,
			`{"cluster":"demo","action":"scale","objects":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default","name":"web","result":"unchanged","from":3,"to":3}]}`},
	}
	for _, s := range steps {
		got, err := h.Invoke(ctx, []byte(s.event))
		if err != nil {
			t.Fatalf("%s: %v", s.event, err)
		}
		if diff := cmp.Diff(s.want, string(got)); diff != "" {
			t.Errorf("%s: response (-want +got):\n%s", s.event, diff)
		}
	}
	d, err := api.Get(deployments, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if at, _, _ := unstructured.NestedString(d.Object, "spec", "template", "metadata", "annotations", kube.RestartedAtAnnotation); at == "" {
		t.Error("restart did not set the restartedAt annotation")
	}
}
