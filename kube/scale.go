package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// ReplicasAnnotation remembers, on a workload scaled to 0 by lambda-eks, how
// many replicas it had, so that a restore can put them back.
const ReplicasAnnotation = "lambda-eks.io/replicas-before-scale-down"

// RestartedAtAnnotation is the pod-template annotation `kubectl rollout
// restart` sets: changing it rolls every pod.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// ScaleRequest says what to scale and to what.
type ScaleRequest struct {
	Namespace string
	// Kind is Deployment or StatefulSet. With a Selector, empty means both.
	Kind string
	// Name, or Selector (a label selector) for every matching workload.
	Name     string
	Selector string
	// Replicas is the target, unless Restore asks for the replicas
	// remembered in ReplicasAnnotation.
	Replicas int32
	Restore  bool
	DryRun   bool
}

// RestartRequest names the workload to restart.
type RestartRequest struct {
	Namespace string
	Kind      string // Deployment (default), StatefulSet or DaemonSet
	Name      string
	DryRun    bool
}

func dryRunOf(dryRun bool) []string {
	if dryRun {
		return []string{metav1.DryRunAll}
	}
	return nil
}

// Scale sets the replicas of one workload, or of every Deployment and
// StatefulSet of the namespace that the selector matches, through the scale
// subresource. Scaling to 0 first records the replicas in
// ReplicasAnnotation; a restore scales back to them and drops the
// annotation. Results are scaled or unchanged, with From and To.
func (c *Client) Scale(ctx context.Context, r ScaleRequest) ([]ObjectResult, error) {
	kinds := []string{KindDeployment, KindStatefulSet}
	if r.Kind != "" {
		kinds = []string{r.Kind}
	}
	var ts []target
	for _, kind := range kinds {
		if w, ok := workloads[kind]; !ok || !w.scalable {
			return nil, fmt.Errorf("cannot scale kind %q: want Deployment or StatefulSet", kind)
		}
		t, _ := workloadTarget(kind, r.Namespace, r.Name)
		if r.Selector == "" {
			ts = append(ts, t)
			continue
		}
		var list *unstructured.UnstructuredList
		err := do(ctx, t.op("list"), func(ctx context.Context) error {
			var err error
			list, err = c.resource(t).List(ctx, metav1.ListOptions{LabelSelector: r.Selector})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, item := range list.Items {
			t.name = item.GetName()
			ts = append(ts, t)
		}
	}
	results := make([]ObjectResult, len(ts))
	err := each(ctx, indexes(len(ts)), func(ctx context.Context, i int) error {
		var err error
		results[i], err = c.scaleOne(ctx, ts[i], r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// scalePlan is what scaling one workload takes, decided from its state.
type scalePlan struct {
	from, to int32
	// annotate is the ReplicasAnnotation to set before scaling ("" none).
	annotate string
	// unannotate drops ReplicasAnnotation after scaling.
	unannotate bool
	note       string
}

// planScale decides a scale from the workload's replicas and annotations.
// It is pure, so its rules are tested without a server. A restore acts only
// on a workload still at 0: one scaled up since keeps its replicas, and the
// stale annotation goes.
func planScale(replicas *int32, annotations map[string]string, target int32, restore bool) (scalePlan, error) {
	from := int32(1) // the API's default for an unset spec.replicas
	if replicas != nil {
		from = *replicas
	}
	p := scalePlan{from: from, to: target}
	remembered, has := annotations[ReplicasAnnotation]
	if restore {
		p.to = from
		switch {
		case !has:
			p.note = "nothing to restore: not scaled down by lambda-eks"
			return p, nil
		case from > 0:
			p.note = fmt.Sprintf("scaled to %d since the scale-down: left as it is, %s removed", from, ReplicasAnnotation)
			p.unannotate = true
			return p, nil
		}
		n, err := strconv.ParseInt(remembered, 10, 32)
		if err != nil || n < 0 {
			return p, &ReplicasAnnotationError{Value: remembered, Err: err}
		}
		p.to = int32(n)
	}
	switch {
	case p.to == 0 && from > 0:
		p.annotate = strconv.Itoa(int(from))
	case p.to > 0 && has:
		p.unannotate = true
	}
	return p, nil
}

// ReplicasAnnotationError is a restore of a workload whose
// ReplicasAnnotation someone set to what is not a replica count: nothing
// was changed.
type ReplicasAnnotationError struct {
	Kind, Namespace, Name, Value string
	// Err is strconv's error for a value that is not a number, or nil (a
	// negative one); Error does not read it, Unwrap returns it.
	Err error
}

func (e *ReplicasAnnotationError) Error() string {
	return fmt.Sprintf("%s %s: annotation %s=%q is not a replica count", e.Kind, qualified(e.Namespace, e.Name), ReplicasAnnotation, e.Value)
}

func (e *ReplicasAnnotationError) Unwrap() error { return e.Err }

func (c *Client) scaleOne(ctx context.Context, t target, r ScaleRequest) (ObjectResult, error) {
	res := t.result("")
	dryRun := dryRunOf(r.DryRun)
	ri := c.resource(t)
	// Read, decide, write, preconditioned on the resourceVersion read: a
	// concurrent change makes the writes conflict, and the loop reads again.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.get(ctx, t)
		if err != nil {
			return err
		}
		var replicas *int32
		if n, found, _ := unstructured.NestedInt64(cur.Object, "spec", "replicas"); found {
			replicas = new(int32Of(n))
		}
		p, err := planScale(replicas, cur.GetAnnotations(), r.Replicas, r.Restore)
		var bad *ReplicasAnnotationError
		if errors.As(err, &bad) {
			bad.Kind, bad.Namespace, bad.Name = t.mapping.GroupVersionKind.Kind, t.namespace, t.name
		}
		if err != nil {
			return err
		}
		res.From, res.To, res.Result, res.Note = &p.from, &p.to, Unchanged, p.note
		rv := cur.GetResourceVersion()
		if p.annotate != "" {
			if rv, err = c.annotate(ctx, t, rv, &p.annotate, dryRun); err != nil {
				return err
			}
			if r.DryRun {
				rv = cur.GetResourceVersion()
			}
		}
		if p.to != p.from {
			scale := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "autoscaling/v1", "kind": "Scale",
				"metadata": map[string]any{"name": t.name, "namespace": t.namespace, "resourceVersion": rv},
				"spec":     map[string]any{"replicas": int64(p.to)},
			}}
			op := t.op("update")
			op.Resource += "/scale"
			err := do(ctx, op, func(ctx context.Context) error {
				_, err := ri.Update(ctx, scale, metav1.UpdateOptions{FieldManager: FieldManager, DryRun: dryRun}, "scale")
				return err
			})
			if err != nil {
				return err
			}
			res.Result = Scaled
			rv = "" // the scale changed it; the annotation drop needs no precondition
		}
		if p.unannotate {
			if _, err := c.annotate(ctx, t, rv, nil, dryRun); err != nil {
				return err
			}
		}
		if !r.DryRun && (p.annotate != "" || p.unannotate || p.to != p.from) {
			c.seen.forget(t.key())
		}
		return nil
	})
	return res, err
}

// annotate sets (value non-nil) or drops ReplicasAnnotation with a merge
// patch, preconditioned on rv when set, and returns the new resourceVersion.
func (c *Client) annotate(ctx context.Context, t target, rv string, value *string, dryRun []string) (string, error) {
	md := map[string]any{"annotations": map[string]any{ReplicasAnnotation: value}}
	if rv != "" {
		md["resourceVersion"] = rv
	}
	body, err := json.Marshal(map[string]any{"metadata": md})
	if err != nil {
		return "", err
	}
	var out *unstructured.Unstructured
	err = do(ctx, t.op("patch"), func(ctx context.Context) error {
		var err error
		out, err = c.resource(t).Patch(ctx, t.name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRun})
		return err
	})
	if err != nil {
		return "", err
	}
	return out.GetResourceVersion(), nil
}

// restartPatch is the strategic merge patch `kubectl rollout restart` sends.
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
	t, err := workloadTarget(kind, r.Namespace, r.Name)
	if err != nil {
		return ObjectResult{APIVersion: "apps/v1", Kind: kind, Namespace: r.Namespace, Name: r.Name}, fmt.Errorf("cannot restart: %w", err)
	}
	res := t.result("")
	body, err := restartPatch(c.now())
	if err != nil {
		return res, err
	}
	opts := metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRunOf(r.DryRun)}
	err = do(ctx, t.op("patch"), func(ctx context.Context) error {
		_, err := c.resource(t).Patch(ctx, t.name, types.StrategicMergePatchType, body, opts)
		return err
	})
	if err != nil {
		return res, err
	}
	c.seen.forget(t.key())
	res.Result = Restarted
	return res, nil
}
