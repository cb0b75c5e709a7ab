package kube

import (
	"context"
	"fmt"
	"math"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Readiness is an object's state as its controller reports it, judged by
// kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the rules kpt and
// Flux use: generation observed, Ready / Reconciling / Stalled conditions,
// and built-in rules for Deployments, StatefulSets (partitions, OnDelete),
// DaemonSets, ReplicaSets, Pods, PVCs, Services, PDBs, Jobs and CRDs.
type Readiness struct {
	// Status is kstatus's verdict: Current, InProgress, Failed,
	// Terminating or Unknown.
	Status string `json:"status"`
	// Message says what the object waits for, or why it failed.
	Message            string      `json:"message,omitempty"`
	Generation         int64       `json:"generation,omitempty"`
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Desired            int32       `json:"desired,omitempty"`
	Updated            int32       `json:"updated,omitempty"`
	Ready              int32       `json:"ready,omitempty"`
	Available          int32       `json:"available,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
}

// Condition is one status condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

var jobGK = schema.GroupKind{Group: "batch", Kind: "Job"}

// ReadinessOf judges an object with kstatus and maps the verdict onto a
// result: Current is ready, InProgress (and Unknown) progressing, Failed
// failed, Terminating terminating. Two rules are ours: kstatus calls a Job
// that is running Current, but a wait for a Job means its completion, so a
// Job is ready only once Complete; and a DaemonSet with the OnDelete
// strategy updates a pod only when someone deletes it, so pods not yet
// updated do not keep it from ready (kubectl rollout status refuses to
// wait for one at all).
func ReadinessOf(u *unstructured.Unstructured) (Result, *Readiness, error) {
	st, err := status.Compute(u)
	if err != nil {
		return "", nil, fmt.Errorf("status of %s %s: %w", u.GetKind(), qualified(u.GetNamespace(), u.GetName()), err)
	}
	r := &Readiness{Status: string(st.Status), Message: st.Message, Generation: u.GetGeneration(), Conditions: conditionsOf(u)}
	r.ObservedGeneration, _, _ = unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	r.counts(u)
	switch st.Status {
	case status.CurrentStatus:
		if u.GroupVersionKind().GroupKind() == jobGK && conditionStatus(u, "Complete") != "True" {
			return Progressing, r, nil
		}
		r.Message = ""
		return Ready, r, nil
	case status.InProgressStatus:
		if u.GetKind() == KindDaemonSet && onDelete(u) && r.Updated < r.Desired && r.Ready >= r.Desired && r.Available >= r.Desired {
			r.Message = fmt.Sprintf("OnDelete: %d of %d pods updated; the rest update when deleted", r.Updated, r.Desired)
			return Ready, r, nil
		}
	case status.FailedStatus:
		return Failed, r, nil
	case status.TerminatingStatus:
		return Terminating, r, nil
	}
	return Progressing, r, nil
}

// int32Of is n, a count the API stores as int32, or 0 if it does not fit.
func int32Of(n int64) int32 {
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0
	}
	return int32(n)
}

func onDelete(u *unstructured.Unstructured) bool {
	s, _, _ := unstructured.NestedString(u.Object, "spec", "updateStrategy", "type")
	return s == "OnDelete"
}

// counts fills the replica counts of workloads, as kubectl shows them.
func (r *Readiness) counts(u *unstructured.Unstructured) {
	field := func(path ...string) int32 {
		n, _, _ := unstructured.NestedInt64(u.Object, path...)
		return int32Of(n)
	}
	if u.GetKind() == KindDaemonSet {
		r.Desired, r.Updated = field("status", "desiredNumberScheduled"), field("status", "updatedNumberScheduled")
		r.Ready, r.Available = field("status", "numberReady"), field("status", "numberAvailable")
		return
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "replicas"); found {
		r.Desired = field("spec", "replicas")
	}
	r.Updated, r.Ready, r.Available = field("status", "updatedReplicas"), field("status", "readyReplicas"), field("status", "availableReplicas")
}

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

// conditionStatus returns the status of an object's condition, or "".
func conditionStatus(u *unstructured.Unstructured, condType string) string {
	for _, c := range conditionsOf(u) {
		if c.Type == condType {
			return c.Status
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

func (c *Client) statusTargets(ctx context.Context, ts []target) ([]ObjectResult, error) {
	results := make([]ObjectResult, len(ts))
	err := each(ctx, indexes(len(ts)), func(ctx context.Context, i int) error {
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
	u, err := c.get(ctx, t)
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
