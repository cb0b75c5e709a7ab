package kube

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func TestNewDeployment(t *testing.T) {
	ac := NewDeployment(Deployment{Namespace: "web", Name: "nginx", Image: "nginx:1.27", Replicas: 3})
	labels := map[string]string{"app.kubernetes.io/name": "nginx"}
	got := struct {
		Name, Namespace, Image, Container string
		Replicas                          *int32
		Selector, PodLabels, Labels       map[string]string
	}{
		Name: *ac.Name, Namespace: *ac.Namespace,
		Image: *ac.Spec.Template.Spec.Containers[0].Image, Container: *ac.Spec.Template.Spec.Containers[0].Name,
		Replicas: ac.Spec.Replicas, Selector: ac.Spec.Selector.MatchLabels, PodLabels: ac.Spec.Template.Labels,
		Labels: ac.Labels,
	}
	want := got
	want.Name, want.Namespace, want.Image, want.Container = "nginx", "web", "nginx:1.27", "nginx"
	want.Replicas = ptr.To[int32](3)
	want.Selector, want.PodLabels = labels, labels
	want.Labels = map[string]string{"app.kubernetes.io/name": "nginx", "app.kubernetes.io/managed-by": "lambda-eks"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("apply configuration (-want +got):\n%s", diff)
	}
	if ac.ResourceVersion != nil {
		t.Error("the builder must not set a resourceVersion")
	}
}

func TestEnsureDeploymentResults(t *testing.T) {
	cs := fake.NewClientset()
	c := New(cs, nil, nil)
	ctx := context.Background()
	d := Deployment{Namespace: "default", Name: "nginx", Image: "nginx:1.27", Replicas: 2}
	scaled := d
	scaled.Replicas = 3

	steps := []struct {
		name string
		c    *Client
		d    Deployment
		want Result
	}{
		{"first call creates", c, d, Created},
		{"same again is unchanged", c, d, Unchanged},
		{"other replicas configure", c, scaled, Configured},
		{"a new process (cold) sees the change", New(cs, nil, nil), d, Configured},
		{"a new process (cold) sees no change", New(cs, nil, nil), d, Unchanged},
	}
	for _, s := range steps {
		res, err := s.c.EnsureDeployment(ctx, s.d)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want := ObjectResult{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "default", Name: "nginx", Result: s.want}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}

	got, err := cs.AppsV1().Deployments("default").Get(ctx, "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *got.Spec.Replicas != 2 || got.Spec.Template.Spec.Containers[0].Image != "nginx:1.27" {
		t.Errorf("deployment has replicas %d image %s", *got.Spec.Replicas, got.Spec.Template.Spec.Containers[0].Image)
	}
	list, err := cs.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("%d deployments, want exactly 1: ensure must never create another", len(list.Items))
	}
}

func TestEnsureDeploymentWarmIsOneRequest(t *testing.T) {
	cs := fake.NewClientset()
	c := New(cs, nil, nil)
	ctx := context.Background()
	d := Deployment{Namespace: "default", Name: "nginx", Image: "nginx:1.27", Replicas: 2}
	if _, err := c.EnsureDeployment(ctx, d); err != nil {
		t.Fatal(err)
	}
	cs.ClearActions()
	if _, err := c.EnsureDeployment(ctx, d); err != nil {
		t.Fatal(err)
	}
	var verbs []string
	for _, a := range cs.Actions() {
		verbs = append(verbs, a.GetVerb())
	}
	if diff := cmp.Diff([]string{"patch"}, verbs); diff != "" {
		t.Errorf("warm call requests (-want +got):\n%s", diff)
	}
}

var deploymentsGR = schema.GroupResource{Group: "apps", Resource: "deployments"}

func TestEnsureDeploymentErrors(t *testing.T) {
	tests := []struct {
		name     string
		react    func(calls int) error // error for the patch call number calls (1-based)
		wantVerb string
		wantErr  func(error) bool
		wantOK   bool
	}{
		{"forbidden names the verb", func(int) error {
			return apierrors.NewForbidden(deploymentsGR, "nginx", errors.New("no"))
		}, "patch", apierrors.IsForbidden, false},
		{"one 401 is retried with a new token", func(n int) error {
			if n == 1 {
				return apierrors.NewUnauthorized("expired")
			}
			return nil
		}, "", nil, true},
		{"a second 401 is returned", func(int) error {
			return apierrors.NewUnauthorized("unmapped")
		}, "patch", apierrors.IsUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset()
			calls := 0
			cs.PrependReactor("patch", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
				calls++
				if err := tt.react(calls); err != nil {
					return true, nil, err
				}
				return false, nil, nil
			})
			_, err := New(cs, nil, nil).EnsureDeployment(context.Background(),
				Deployment{Namespace: "team", Name: "nginx", Image: "nginx:1.27", Replicas: 1})
			if tt.wantOK {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				return
			}
			var op *OpError
			if !errors.As(err, &op) || !tt.wantErr(err) {
				t.Fatalf("err = %v, want an *OpError of the right kind", err)
			}
			if diff := cmp.Diff(OpError{Verb: tt.wantVerb, Resource: "deployments.apps", Namespace: "team", Name: "nginx"},
				*op, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Err" }, cmp.Ignore())); diff != "" {
				t.Errorf("OpError (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnsureDeploymentStopsAtDeadline(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := New(cs, nil, nil).EnsureDeployment(ctx, Deployment{Namespace: "default", Name: "nginx", Image: "nginx", Replicas: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want it to wrap context.Canceled", err)
	}
}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{apierrors.NewServiceUnavailable("x"), true},
		{apierrors.NewTooManyRequests("x", 1), true},
		{apierrors.NewForbidden(deploymentsGR, "n", errors.New("x")), false},
		{context.DeadlineExceeded, false},
		{errors.New("plain"), false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// Compile-time check that the fake returns what Apply expects.
var _ = appsv1.Deployment{}

func TestProject(t *testing.T) {
	intent := map[string]any{
		"metadata": map[string]any{"name": "web", "labels": map[string]any{"app": "web"}},
		"data":     map[string]any{"color": "red"},
		"spec":     map[string]any{"ports": []any{map[string]any{"port": 80}}},
	}
	live := map[string]any{
		"metadata": map[string]any{"name": "web", "labels": map[string]any{"app": "web", "team": "x"},
			"resourceVersion": "9", "managedFields": []any{"..."}},
		"data":   map[string]any{"color": "red", "extra": "someone else's"},
		"spec":   map[string]any{"ports": []any{map[string]any{"port": 80, "protocol": "TCP"}}, "clusterIP": "10.0.0.1"},
		"status": map[string]any{"ready": true},
	}
	want := map[string]any{
		"metadata": map[string]any{"name": "web", "labels": map[string]any{"app": "web"}},
		"data":     map[string]any{"color": "red"},
		// Lists are taken whole, defaults and all.
		"spec": map[string]any{"ports": []any{map[string]any{"port": 80, "protocol": "TCP"}}},
	}
	if diff := cmp.Diff(want, project(intent, live)); diff != "" {
		t.Errorf("project (-want +got):\n%s", diff)
	}
}
