package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// ReplicasAnnotation remembers, on a workload scaled to 0 by lambda-eks, how
// many replicas it had, so that a restore can put them back.
const ReplicasAnnotation = "lambda-eks.io/replicas-before-scale-down"

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

// Scalable kinds.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
)

// workload is what scale and restart need of a Deployment or StatefulSet,
// through the typed clients: read it, patch its metadata, set its scale.
type workload struct {
	kind, resource string // resource with group, for RBAC messages
	get            func(ctx context.Context, name string) (metav1.ObjectMeta, *int32, error)
	list           func(ctx context.Context, selector string) ([]metav1.ObjectMeta, error)
	patch          func(ctx context.Context, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) (metav1.ObjectMeta, error)
	updateScale    func(ctx context.Context, name string, s *autoscalingv1.Scale, opts metav1.UpdateOptions) error
}

func (c *Client) workload(ns, kind string) (workload, error) {
	switch kind {
	case KindDeployment, "":
		d := c.cs.AppsV1().Deployments(ns)
		return workload{
			kind: KindDeployment, resource: "deployments.apps",
			get: func(ctx context.Context, name string) (metav1.ObjectMeta, *int32, error) {
				o, err := d.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return metav1.ObjectMeta{}, nil, err
				}
				return o.ObjectMeta, o.Spec.Replicas, nil
			},
			list: func(ctx context.Context, sel string) ([]metav1.ObjectMeta, error) {
				l, err := d.List(ctx, metav1.ListOptions{LabelSelector: sel})
				if err != nil {
					return nil, err
				}
				return metas(l.Items, func(o appsv1.Deployment) metav1.ObjectMeta { return o.ObjectMeta }), nil
			},
			patch: func(ctx context.Context, name string, pt types.PatchType, b []byte, opts metav1.PatchOptions) (metav1.ObjectMeta, error) {
				o, err := d.Patch(ctx, name, pt, b, opts)
				if err != nil {
					return metav1.ObjectMeta{}, err
				}
				return o.ObjectMeta, nil
			},
			updateScale: func(ctx context.Context, name string, s *autoscalingv1.Scale, opts metav1.UpdateOptions) error {
				_, err := d.UpdateScale(ctx, name, s, opts)
				return err
			},
		}, nil
	case KindStatefulSet:
		s := c.cs.AppsV1().StatefulSets(ns)
		return workload{
			kind: KindStatefulSet, resource: "statefulsets.apps",
			get: func(ctx context.Context, name string) (metav1.ObjectMeta, *int32, error) {
				o, err := s.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return metav1.ObjectMeta{}, nil, err
				}
				return o.ObjectMeta, o.Spec.Replicas, nil
			},
			list: func(ctx context.Context, sel string) ([]metav1.ObjectMeta, error) {
				l, err := s.List(ctx, metav1.ListOptions{LabelSelector: sel})
				if err != nil {
					return nil, err
				}
				return metas(l.Items, func(o appsv1.StatefulSet) metav1.ObjectMeta { return o.ObjectMeta }), nil
			},
			patch: func(ctx context.Context, name string, pt types.PatchType, b []byte, opts metav1.PatchOptions) (metav1.ObjectMeta, error) {
				o, err := s.Patch(ctx, name, pt, b, opts)
				if err != nil {
					return metav1.ObjectMeta{}, err
				}
				return o.ObjectMeta, nil
			},
			updateScale: func(ctx context.Context, name string, sc *autoscalingv1.Scale, opts metav1.UpdateOptions) error {
				_, err := s.UpdateScale(ctx, name, sc, opts)
				return err
			},
		}, nil
	}
	return workload{}, fmt.Errorf("cannot scale kind %q: want Deployment or StatefulSet", kind)
}

func metas[T any](items []T, meta func(T) metav1.ObjectMeta) []metav1.ObjectMeta {
	out := make([]metav1.ObjectMeta, len(items))
	for i, it := range items {
		out[i] = meta(it)
	}
	return out
}

func (w workload) op(verb, ns, name string) OpError {
	return OpError{Verb: verb, Resource: w.resource, Namespace: ns, Name: name}
}

// Scale sets the replicas of one workload, or of every Deployment and
// StatefulSet of the namespace that the selector matches, through the scale
// subresource. Scaling to 0 first records the replicas in
// ReplicasAnnotation; a restore scales back to them and drops the
// annotation. Results are scaled or unchanged, with From and To.
func (c *Client) Scale(ctx context.Context, r ScaleRequest) ([]ObjectResult, error) {
	if r.Selector == "" {
		w, err := c.workload(r.Namespace, r.Kind)
		if err != nil {
			return nil, err
		}
		res, err := c.scaleOne(ctx, w, r, r.Name)
		if err != nil {
			return nil, err
		}
		return []ObjectResult{res}, nil
	}
	kinds := []string{KindDeployment, KindStatefulSet}
	if r.Kind != "" {
		kinds = []string{r.Kind}
	}
	var results []ObjectResult
	for _, kind := range kinds {
		w, err := c.workload(r.Namespace, kind)
		if err != nil {
			return nil, err
		}
		var items []metav1.ObjectMeta
		err = do(ctx, w.op("list", r.Namespace, ""), func(ctx context.Context) error {
			var err error
			items, err = w.list(ctx, r.Selector)
			return err
		})
		if err != nil {
			return nil, err
		}
		part := make([]ObjectResult, len(items))
		idx := make([]int, len(items))
		for i := range idx {
			idx[i] = i
		}
		err = each(ctx, idx, func(ctx context.Context, i int) error {
			var err error
			part[i], err = c.scaleOne(ctx, w, r, items[i].Name)
			return err
		})
		if err != nil {
			return nil, err
		}
		results = append(results, part...)
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
}

// planScale decides a scale from the workload's replicas and annotations.
// It is pure, so its rules are tested without a server.
func planScale(replicas *int32, annotations map[string]string, target int32, restore bool) (scalePlan, error) {
	from := int32(1) // the API's default for an unset spec.replicas
	if replicas != nil {
		from = *replicas
	}
	p := scalePlan{from: from, to: target}
	remembered, has := annotations[ReplicasAnnotation]
	if restore {
		if !has {
			// Nothing remembered: leave it as it is.
			p.to = from
			return p, nil
		}
		n, err := strconv.ParseInt(remembered, 10, 32)
		if err != nil || n < 0 {
			return p, fmt.Errorf("annotation %s=%q is not a replica count", ReplicasAnnotation, remembered)
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

func (c *Client) scaleOne(ctx context.Context, w workload, r ScaleRequest, name string) (ObjectResult, error) {
	res := ObjectResult{APIVersion: "apps/v1", Kind: w.kind, Namespace: r.Namespace, Name: name}
	dryRun := []string(nil)
	if r.DryRun {
		dryRun = []string{metav1.DryRunAll}
	}
	// Read, decide, write, preconditioned on the resourceVersion read: a
	// concurrent change makes the writes conflict, and the loop reads again.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var meta metav1.ObjectMeta
		var replicas *int32
		err := do(ctx, w.op("get", r.Namespace, name), func(ctx context.Context) error {
			var err error
			meta, replicas, err = w.get(ctx, name)
			return err
		})
		if err != nil {
			return err
		}
		p, err := planScale(replicas, meta.Annotations, r.Replicas, r.Restore)
		if err != nil {
			return err
		}
		res.From, res.To, res.Result = &p.from, &p.to, Unchanged
		rv := meta.ResourceVersion
		if p.annotate != "" {
			if rv, err = c.annotate(ctx, w, r.Namespace, name, rv, &p.annotate, dryRun); err != nil {
				return err
			}
			if r.DryRun {
				rv = meta.ResourceVersion
			}
		}
		if p.to != p.from {
			scale := &autoscalingv1.Scale{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace, ResourceVersion: rv},
				Spec:       autoscalingv1.ScaleSpec{Replicas: p.to},
			}
			op := w.op("update", r.Namespace, name)
			op.Resource = w.resource + "/scale"
			err := do(ctx, op, func(ctx context.Context) error {
				return w.updateScale(ctx, name, scale, metav1.UpdateOptions{FieldManager: FieldManager, DryRun: dryRun})
			})
			if err != nil {
				return err
			}
			res.Result = Scaled
			rv = "" // the scale changed it; the annotation drop needs no precondition
		}
		if p.unannotate {
			if _, err := c.annotate(ctx, w, r.Namespace, name, rv, nil, dryRun); err != nil {
				return err
			}
		}
		if !r.DryRun && (p.annotate != "" || p.unannotate || p.to != p.from) {
			c.forget(objectKey{resource: w.resource, namespace: r.Namespace, name: name})
		}
		return nil
	})
	return res, err
}

// annotate sets (value non-nil) or drops ReplicasAnnotation with a merge
// patch, preconditioned on rv when set, and returns the new resourceVersion.
func (c *Client) annotate(ctx context.Context, w workload, ns, name, rv string, value *string, dryRun []string) (string, error) {
	md := map[string]any{"annotations": map[string]any{ReplicasAnnotation: value}}
	if rv != "" {
		md["resourceVersion"] = rv
	}
	body, err := json.Marshal(map[string]any{"metadata": md})
	if err != nil {
		return "", err
	}
	var out metav1.ObjectMeta
	err = do(ctx, w.op("patch", ns, name), func(ctx context.Context) error {
		var err error
		out, err = w.patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRun})
		return err
	})
	return out.ResourceVersion, err
}
