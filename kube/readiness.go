package kube

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Readiness is a workload's rollout state, as its controller reports it.
type Readiness struct {
	Desired            int32       `json:"desired"`
	Updated            int32       `json:"updated"`
	Ready              int32       `json:"ready"`
	Available          int32       `json:"available"`
	Generation         int64       `json:"generation"`
	ObservedGeneration int64       `json:"observedGeneration"`
	Conditions         []Condition `json:"conditions,omitempty"`
	// Message says what the rollout waits for, when it is not ready.
	Message string `json:"message,omitempty"`
}

// Condition is one status condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

var (
	deploymentGK  = schema.GroupKind{Group: "apps", Kind: "Deployment"}
	statefulSetGK = schema.GroupKind{Group: "apps", Kind: "StatefulSet"}
	daemonSetGK   = schema.GroupKind{Group: "apps", Kind: "DaemonSet"}
	jobGK         = schema.GroupKind{Group: "batch", Kind: "Job"}
)

// hasRollout reports whether objects of gk have a rollout to wait for.
func hasRollout(gk schema.GroupKind) bool {
	return gk == deploymentGK || gk == statefulSetGK || gk == daemonSetGK || gk == jobGK
}

// ReadinessOf computes an object's rollout state. Deployments, StatefulSets
// and DaemonSets are ready when their controller has observed the latest
// generation and updated == ready == available == desired; a Deployment past
// its progress deadline has failed. Jobs are ready when Complete and failed
// when Failed. Any other object is ready when it exists (nil Readiness).
func ReadinessOf(u *unstructured.Unstructured) (Result, *Readiness, error) {
	switch u.GroupVersionKind().GroupKind() {
	case deploymentGK:
		var d appsv1.Deployment
		if err := fromUnstructured(u, &d); err != nil {
			return "", nil, err
		}
		r := &Readiness{Desired: replicasOr1(d.Spec.Replicas), Updated: d.Status.UpdatedReplicas, Ready: d.Status.ReadyReplicas,
			Available: d.Status.AvailableReplicas, Generation: d.Generation, ObservedGeneration: d.Status.ObservedGeneration,
			Conditions: conditionsOf(u)}
		// Conditions describe the generation the controller observed: until
		// it has seen the current spec, an old failure says nothing (as in
		// kubectl rollout status).
		if d.Status.ObservedGeneration < d.Generation {
			return r.result()
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
				r.Message = "progress deadline exceeded: " + c.Message
				return Failed, r, nil
			}
		}
		if d.Status.Replicas > d.Status.UpdatedReplicas && r.rolledOut() == "" {
			r.Message = fmt.Sprintf("%d old replicas are pending termination", d.Status.Replicas-d.Status.UpdatedReplicas)
			return Progressing, r, nil
		}
		return r.result()
	case statefulSetGK:
		var s appsv1.StatefulSet
		if err := fromUnstructured(u, &s); err != nil {
			return "", nil, err
		}
		r := &Readiness{Desired: replicasOr1(s.Spec.Replicas), Updated: s.Status.UpdatedReplicas, Ready: s.Status.ReadyReplicas,
			Available: s.Status.AvailableReplicas, Generation: s.Generation, ObservedGeneration: s.Status.ObservedGeneration,
			Conditions: conditionsOf(u)}
		return r.result()
	case daemonSetGK:
		var d appsv1.DaemonSet
		if err := fromUnstructured(u, &d); err != nil {
			return "", nil, err
		}
		r := &Readiness{Desired: d.Status.DesiredNumberScheduled, Updated: d.Status.UpdatedNumberScheduled, Ready: d.Status.NumberReady,
			Available: d.Status.NumberAvailable, Generation: d.Generation, ObservedGeneration: d.Status.ObservedGeneration,
			Conditions: conditionsOf(u)}
		return r.result()
	case jobGK:
		var j batchv1.Job
		if err := fromUnstructured(u, &j); err != nil {
			return "", nil, err
		}
		r := &Readiness{Desired: replicasOr1(j.Spec.Completions), Ready: derefOr0(j.Status.Ready), Available: j.Status.Succeeded,
			Generation: j.Generation, ObservedGeneration: j.Generation, Conditions: conditionsOf(u)}
		result := Progressing
		r.Message = fmt.Sprintf("%d of %d completions", j.Status.Succeeded, r.Desired)
		for _, c := range j.Status.Conditions {
			switch {
			case c.Type == batchv1.JobComplete && c.Status == "True":
				result, r.Message = Ready, ""
			case c.Type == batchv1.JobFailed && c.Status == "True":
				result, r.Message = Failed, "job failed: "+c.Reason
			}
		}
		return result, r, nil
	}
	return Ready, nil, nil
}

// rolledOut says what a rollout still waits for, or "" when it is done.
func (r *Readiness) rolledOut() string {
	switch {
	case r.ObservedGeneration < r.Generation:
		return fmt.Sprintf("generation %d not observed yet (observed %d)", r.Generation, r.ObservedGeneration)
	case r.Updated < r.Desired:
		return fmt.Sprintf("%d of %d replicas updated", r.Updated, r.Desired)
	case r.Ready < r.Desired:
		return fmt.Sprintf("%d of %d replicas ready", r.Ready, r.Desired)
	case r.Available < r.Desired:
		return fmt.Sprintf("%d of %d replicas available", r.Available, r.Desired)
	}
	return ""
}

func (r *Readiness) result() (Result, *Readiness, error) {
	if msg := r.rolledOut(); msg != "" {
		r.Message = msg
		return Progressing, r, nil
	}
	return Ready, r, nil
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("read %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

func replicasOr1(n *int32) int32 {
	if n == nil {
		return 1
	}
	return *n
}

func derefOr0(n *int32) int32 {
	if n == nil {
		return 0
	}
	return *n
}

// conditionStatus returns the status of an unstructured object's condition.
// conditionsOf reads status.conditions, which every kind here spells the same.
func conditionsOf(u *unstructured.Unstructured) []Condition {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []Condition
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		str := func(k string) string { v, _ := m[k].(string); return v }
		out = append(out, Condition{Type: str("type"), Status: str("status"), Reason: str("reason"), Message: str("message")})
	}
	return out
}

func conditionStatus(u *unstructured.Unstructured, condType string) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == condType {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// Status reports the readiness of the objects refs name.
func (c *Client) Status(ctx context.Context, refs []Ref, namespace string) ([]ObjectResult, error) {
	ts, err := c.resolveRefs(ctx, refs, namespace)
	if err != nil {
		return nil, err
	}
	return c.statusTargets(ctx, ts)
}

// StatusManifest reports the readiness of the objects of m.
func (c *Client) StatusManifest(ctx context.Context, m Manifest, namespace string) ([]ObjectResult, error) {
	ts, err := c.resolveManifest(ctx, m, namespace)
	if err != nil {
		return nil, err
	}
	return c.statusTargets(ctx, ts)
}

func (c *Client) resolveRefs(ctx context.Context, refs []Ref, namespace string) ([]target, error) {
	mp := &mapper{c: c}
	ts := make([]target, 0, len(refs))
	for _, r := range refs {
		if r.Namespace == "" {
			r.Namespace = namespace
		}
		t, err := c.resolveRef(ctx, mp, r)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

func (c *Client) statusTargets(ctx context.Context, ts []target) ([]ObjectResult, error) {
	results := make([]ObjectResult, len(ts))
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	err := each(ctx, idx, func(ctx context.Context, i int) error {
		var err error
		results[i], err = c.statusOf(ctx, ts[i])
		return err
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

func (c *Client) statusOf(ctx context.Context, t target) (ObjectResult, error) {
	if t.definedBy != "" {
		return t.result(Absent), nil
	}
	var u *unstructured.Unstructured
	err := do(ctx, t.op("get"), func(ctx context.Context) error {
		var err error
		u, err = c.resource(t).Get(ctx, t.name, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return t.result(Absent), nil
	}
	if err != nil {
		return t.result(""), err
	}
	result, r, err := ReadinessOf(u)
	if err != nil {
		return t.result(""), err
	}
	res := t.result(result)
	res.Readiness = r
	return res, nil
}

// WaitTimeoutError is a wait that ended before every rollout completed. It
// carries the readiness seen last.
type WaitTimeoutError struct {
	Waited  time.Duration
	Objects []ObjectResult
}

func (e *WaitTimeoutError) Error() string {
	var pending []string
	for _, o := range e.Objects {
		if o.Result == Ready {
			continue
		}
		s := fmt.Sprintf("%s %s/%s %s", o.Kind, o.Namespace, o.Name, o.Result)
		if o.Readiness != nil {
			r := o.Readiness
			s += fmt.Sprintf(" (desired %d, updated %d, ready %d, available %d, observed generation %d of %d",
				r.Desired, r.Updated, r.Ready, r.Available, r.ObservedGeneration, r.Generation)
			if r.Message != "" {
				s += ": " + r.Message
			}
			s += ")"
		}
		pending = append(pending, s)
	}
	return fmt.Sprintf("rollout not complete after %s: %s", e.Waited.Round(time.Millisecond), strings.Join(pending, "; "))
}

// waitInterval is how often a wait reads the objects' status (a variable
// for tests).
var waitInterval = time.Second

// Wait polls the workloads among objs (results of apply, scale or restart)
// until every rollout is complete or one has failed, for at most bound, and
// returns objs with their readiness. Objects without a rollout are not
// read. Past bound it returns a *WaitTimeoutError with the readiness seen
// last. Progress is logged to log whenever it changes.
func (c *Client) Wait(ctx context.Context, objs []ObjectResult, bound time.Duration, log *slog.Logger) ([]ObjectResult, error) {
	out := make([]ObjectResult, len(objs))
	copy(out, objs)
	var ts []target
	var idx []int
	mp := &mapper{c: c}
	for i, o := range objs {
		gv, err := schema.ParseGroupVersion(o.APIVersion)
		if err != nil || !hasRollout(gv.WithKind(o.Kind).GroupKind()) || o.Result == Absent || o.Result == Deleted {
			continue
		}
		t, err := c.resolveRef(ctx, mp, Ref{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
		idx = append(idx, i)
	}
	if len(ts) == 0 {
		return out, nil
	}
	start := c.now()
	last := ""
	var seen []ObjectResult // the readiness of the last poll
	// The reads run under ctx, not under the poll's bound: a read begun
	// just before the bound must not fail as if the server were down.
	poll := func(context.Context) (bool, error) {
		rs, err := c.statusTargets(ctx, ts)
		if err != nil {
			return false, err
		}
		seen = rs
		done, progress := true, []string{}
		for k, r := range rs {
			i := idx[k]
			out[i].Readiness = r.Readiness
			if r.Result == Failed {
				// It will not get better by waiting: report it.
				out[i].Result = Failed
				log.WarnContext(ctx, "rollout failed", "kind", r.Kind, "namespace", r.Namespace, "name", r.Name,
					"message", r.Readiness.Message)
				return true, nil
			}
			if r.Result != Ready {
				done = false
				msg := string(r.Result)
				if r.Readiness != nil && r.Readiness.Message != "" {
					msg = r.Readiness.Message
				}
				progress = append(progress, fmt.Sprintf("%s %s/%s: %s", r.Kind, r.Namespace, r.Name, msg))
			}
		}
		if s := strings.Join(progress, "; "); s != last && !done {
			last = s
			log.InfoContext(ctx, "waiting for rollout", "pending", s, "waited_ms", c.now().Sub(start).Milliseconds())
		}
		return done, nil
	}
	err := wait.PollUntilContextTimeout(ctx, waitInterval, bound, true, poll)
	switch {
	case err != nil && ctx.Err() == nil && wait.Interrupted(err):
		return nil, &WaitTimeoutError{Waited: c.now().Sub(start), Objects: seen}
	case err != nil:
		return nil, err
	}
	log.InfoContext(ctx, "rollout complete", "objects", len(ts), "waited_ms", c.now().Sub(start).Milliseconds())
	return out, nil
}
