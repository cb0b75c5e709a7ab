package kube

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lambda-eks/lambda-eks/internal/kubefake"
)

func TestWait(t *testing.T) {
	t.Parallel()
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
	web := func() *unstructured.Unstructured {
		return unstructuredObj("apps/v1", "Deployment", "team", "web", map[string]any{"spec": map[string]any{"replicas": int64(2)}, "status": progressing})
	}

	t.Run("returns when the rollout completes", func(t *testing.T) {
		t.Parallel()
		srv := newFakeCluster(t, web())
		var gets atomic.Int32
		srv.React(func(r kubefake.Request) error {
			if r.Verb != "get" || r.Resource != deployments {
				return nil
			}
			if gets.Add(1) == 3 { // the controller catches up
				return srv.Edit(deployments, "team", "web", func(u *unstructured.Unstructured) { u.Object["status"] = done })
			}
			return nil
		})
		start := srv.clock.Now()
		got, err := srv.client(t).Wait(context.Background(), objs, 5*time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Result != Configured || got[0].Readiness == nil || got[0].Readiness.Ready != 2 || got[1].Readiness != nil {
			t.Errorf("results %+v %+v, want the Deployment configured and ready, the ConfigMap not read", got[0], got[1])
		}
		if n := gets.Load(); n != 3 {
			t.Errorf("%d reads, want 3: the wait polls until the rollout completed, then stops", n)
		}
		if waited := srv.clock.Now().Sub(start); waited != 2*waitInterval {
			t.Errorf("waited %s, want two intervals (reads at 0, 1 and 2 intervals)", waited)
		}
	})

	t.Run("past its bound a Timeout with the readiness seen", func(t *testing.T) {
		t.Parallel()
		srv := newFakeCluster(t, web())
		_, err := srv.client(t).Wait(context.Background(), objs, 2500*time.Millisecond, log)
		var te *WaitTimeoutError
		if !errors.As(err, &te) {
			t.Fatalf("err = %v, want a *WaitTimeoutError", err)
		}
		if te.Waited != 2500*time.Millisecond {
			t.Errorf("waited %s, want the bound", te.Waited)
		}
		if !strings.Contains(te.Error(), "Deployment team/web progressing (InProgress; desired 2, updated 2, ready 1") {
			t.Errorf("message %q does not carry the readiness seen", te.Error())
		}
		if reads := len(srv.verbs()); reads != 3 {
			t.Errorf("%d reads in 2.5 intervals, want 3 (at 0, 1 and 2)", reads)
		}
	})

	t.Run("the invocation's end ends it with ctx's error", func(t *testing.T) {
		t.Parallel()
		srv := newFakeCluster(t, web())
		ctx, cancel := context.WithCancel(context.Background())
		srv.React(func(r kubefake.Request) error {
			if r.Verb == "get" && r.Resource == deployments {
				cancel() // after this read, the sleep sees the end
			}
			return nil
		})
		_, err := srv.client(t).Wait(ctx, objs, time.Minute, log)
		var te *WaitTimeoutError
		if !errors.Is(err, context.Canceled) || errors.As(err, &te) {
			t.Errorf("err = %v, want context.Canceled, not a Timeout", err)
		}
	})
}
