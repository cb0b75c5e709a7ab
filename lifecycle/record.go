package lifecycle

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RecordAnnotation is the Node annotation that holds a drain's progress:
// why the node is drained, the lifecycle actions waiting on it, and which
// invocation holds it. A duplicate or retried event reads it and does not
// drain twice or complete an action twice; two invocations never drain one
// node at once (the holder's lease, written with the node's resourceVersion).
const RecordAnnotation = "lambda-eks.io/drain"

// record is RecordAnnotation's value.
type record struct {
	Reasons  []Kind    `json:"reasons"`
	Actions  []action  `json:"actions,omitempty"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	// Holder is the request id of the invocation draining the node, until
	// Until (its deadline and a slack: a holder killed by Lambda lets go).
	Holder string    `json:"holder,omitempty"`
	Until  time.Time `json:"until,omitzero"`
	// Drained is set once no pod to evict was left.
	Drained bool `json:"drained,omitempty"`
	// Evicted counts the evictions the API server accepted.
	Evicted int `json:"evicted,omitempty"`
}

// action is a lifecycle action waiting for the drain.
type action struct {
	ASG      string `json:"asg"`
	Hook     string `json:"hook"`
	Token    string `json:"token"`
	Instance string `json:"instance"`
	// Result is CONTINUE or ABANDON once answered, or what Auto Scaling
	// said of an action no longer pending.
	Result string `json:"result,omitempty"`
	// HeartbeatSeconds is the hook's heartbeat timeout.
	HeartbeatSeconds int `json:"heartbeatSeconds,omitempty"`
}

func (a action) hook() *Hook {
	return &Hook{ASG: a.ASG, Name: a.Hook, Token: a.Token, Instance: a.Instance}
}

// leaseSlack is how long past its deadline a holder's lease lasts: the
// time Lambda takes to end an invocation that overran.
const leaseSlack = 30 * time.Second

// readRecord is n's record, nil when it has none. A record that does not
// parse (edited by hand) is an error: nothing is drained on a guess.
func readRecord(n *corev1.Node) (*record, error) {
	v, ok := n.Annotations[RecordAnnotation]
	if !ok {
		return nil, nil
	}
	var r record
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return nil, fmt.Errorf("node %s: annotation %s does not parse (%w); remove it to drain the node again", n.Name, RecordAnnotation, err)
	}
	return &r, nil
}

// action returns the record's action of token, or nil.
func (r *record) action(token string) *action {
	for i := range r.Actions {
		if r.Actions[i].Token == token {
			return &r.Actions[i]
		}
	}
	return nil
}

// pending is the actions not answered yet.
func (r *record) pending() []*action {
	var out []*action
	for i := range r.Actions {
		if r.Actions[i].Result == "" {
			out = append(out, &r.Actions[i])
		}
	}
	return out
}

// heldBy says whether an invocation other than me holds the lease at now.
func (r *record) heldBy(me string, now time.Time) bool {
	return r.Holder != "" && r.Holder != me && now.Before(r.Until)
}

// addReason adds k to the reasons; it says whether it was new.
func (r *record) addReason(k Kind) bool {
	if slices.Contains(r.Reasons, k) {
		return false
	}
	r.Reasons = append(r.Reasons, k)
	return true
}

// nodePatch is the merge patch that writes r to n (read at its
// resourceVersion, so that a concurrent writer makes it a Conflict), with
// n cordoned and tainted for why when cordon is set.
func nodePatch(n *corev1.Node, r *record, why Kind, cordon bool, now time.Time) ([]byte, error) {
	v, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	meta := map[string]any{"resourceVersion": n.ResourceVersion, "annotations": map[string]string{RecordAnnotation: string(v)}}
	patch := map[string]any{"metadata": meta}
	if cordon {
		taints := n.Spec.Taints
		if !slices.ContainsFunc(taints, func(t corev1.Taint) bool { return t.Key == why.taintKey() }) {
			t := metav1.NewTime(now)
			taints = append(slices.Clip(taints), corev1.Taint{Key: why.taintKey(), Value: string(why), Effect: corev1.TaintEffectNoSchedule, TimeAdded: &t})
		}
		patch["spec"] = map[string]any{"unschedulable": true, "taints": taints}
	}
	return json.Marshal(patch)
}
