package kube

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestWait(t *testing.T) {
	waitInterval = 10 * time.Millisecond
	t.Cleanup(func() { waitInterval = time.Second })
	deployments := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	progressing := map[string]any{"observedGeneration": int64(1), "replicas": int64(2), "updatedReplicas": int64(2), "readyReplicas": int64(1), "availableReplicas": int64(1)}
	done := map[string]any{"observedGeneration": int64(1), "replicas": int64(2), "updatedReplicas": int64(2), "readyReplicas": int64(2), "availableReplicas": int64(2),
		"conditions": []any{
			map[string]any{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
			map[string]any{"type": "Available", "status": "True"},
		}}
	objs := []ObjectResult{
		{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "team", Name: "web", Result: Configured},
		{APIVersion: "v1", Kind: "ConfigMap", Namespace: "team", Name: "settings", Result: Unchanged},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Run("returns when the rollout completes", func(t *testing.T) {
		dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), unstructuredObj("apps/v1", "Deployment", "team", "web",
			map[string]any{"spec": map[string]any{"replicas": int64(2)}, "status": progressing}))
		gets := 0
		dyn.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
			gets++
			if gets == 3 { // the controller catches up
				obj, err := dyn.Tracker().Get(deployments, "team", "web")
				if err != nil {
					return true, nil, err
				}
				u := obj.(*unstructured.Unstructured).DeepCopy()
				u.Object["status"] = done
				if err := dyn.Tracker().Update(deployments, u, "team"); err != nil {
					return true, nil, err
				}
			}
			return false, nil, nil
		})
		got, err := New(dyn, newTestMapper()).Wait(context.Background(), objs, 5*time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Result != Configured || got[0].Readiness == nil || got[0].Readiness.Ready != 2 || got[1].Readiness != nil {
			t.Errorf("results %+v %+v, want the Deployment configured and ready, the ConfigMap not read", got[0], got[1])
		}
		if gets < 3 {
			t.Errorf("%d reads, want the wait to poll until the rollout completed", gets)
		}
	})

	t.Run("past its bound a Timeout with the readiness seen", func(t *testing.T) {
		dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), unstructuredObj("apps/v1", "Deployment", "team", "web",
			map[string]any{"spec": map[string]any{"replicas": int64(2)}, "status": progressing}))
		_, err := New(dyn, newTestMapper()).Wait(context.Background(), objs, 100*time.Millisecond, log)
		var te *WaitTimeoutError
		if !errors.As(err, &te) {
			t.Fatalf("err = %v, want a *WaitTimeoutError", err)
		}
		if !strings.Contains(te.Error(), "Deployment team/web progressing (InProgress; desired 2, updated 2, ready 1") {
			t.Errorf("message %q does not carry the readiness seen", te.Error())
		}
	})
}
