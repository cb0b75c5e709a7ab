package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// RestartedAtAnnotation is the pod-template annotation `kubectl rollout
// restart` sets: changing it rolls every pod.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// RestartRequest names the workload to restart.
type RestartRequest struct {
	Namespace string
	Kind      string // Deployment (default), StatefulSet or DaemonSet
	Name      string
	DryRun    bool
}

// restartPatch is the strategic merge patch kubectl sends.
func restartPatch(at time.Time) ([]byte, error) {
	return json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{RestartedAtAnnotation: at.UTC().Format(time.RFC3339)}},
	}}})
}

// Restart rolls a workload's pods the way `kubectl rollout restart` does: a
// new value of the restartedAt pod-template annotation.
func (c *Client) Restart(ctx context.Context, r RestartRequest) (ObjectResult, error) {
	kind := r.Kind
	if kind == "" {
		kind = KindDeployment
	}
	res := ObjectResult{APIVersion: "apps/v1", Kind: kind, Namespace: r.Namespace, Name: r.Name}
	body, err := restartPatch(c.now())
	if err != nil {
		return res, err
	}
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	if r.DryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	apps := c.cs.AppsV1()
	var patch func(ctx context.Context) error
	var resource string
	switch kind {
	case KindDeployment:
		resource = "deployments.apps"
		patch = func(ctx context.Context) error {
			_, err := apps.Deployments(r.Namespace).Patch(ctx, r.Name, types.StrategicMergePatchType, body, opts)
			return err
		}
	case KindStatefulSet:
		resource = "statefulsets.apps"
		patch = func(ctx context.Context) error {
			_, err := apps.StatefulSets(r.Namespace).Patch(ctx, r.Name, types.StrategicMergePatchType, body, opts)
			return err
		}
	case KindDaemonSet:
		resource = "daemonsets.apps"
		patch = func(ctx context.Context) error {
			_, err := apps.DaemonSets(r.Namespace).Patch(ctx, r.Name, types.StrategicMergePatchType, body, opts)
			return err
		}
	default:
		return res, fmt.Errorf("cannot restart kind %q: want Deployment, StatefulSet or DaemonSet", kind)
	}
	if err := do(ctx, OpError{Verb: "patch", Resource: resource, Namespace: r.Namespace, Name: r.Name}, patch); err != nil {
		return res, err
	}
	c.forget(objectKey{resource: resource, namespace: r.Namespace, name: r.Name})
	res.Result = Restarted
	return res, nil
}
