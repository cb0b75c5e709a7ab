package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// The drain follows `kubectl drain --ignore-daemonsets --force
// --delete-emptydir-data` (k8s.io/kubectl/pkg/drain): cordon, evict
// through the Eviction API so that PodDisruptionBudgets hold (a 429 is
// tried again on the next poll; nothing is ever deleted around a budget),
// leave DaemonSet and mirror pods, give each pod its own grace period, and
// wait until the evicted pods are gone. It is its own code on those
// semantics because kubectl's package links the whole typed clientset,
// cli-runtime and kubectl's command utilities, and runs a drain as one
// blocking call, where this one spans invocations (record.go).

// Node states a NodeResult reports.
const (
	StateDrained          = "drained"
	StateCordoned         = "cordoned"
	StateContinuing       = "continuing"
	StateTimedOut         = "timed-out"
	StateInProgress       = "in-progress-elsewhere"
	StateAlreadyCompleted = "already-completed"
	StateSkipped          = "skipped"
	StateNoNode           = "no-node"
	StateReady            = "ready"
)

// NodeResult is what an invocation did about one instance.
type NodeResult struct {
	Instance string `json:"instance"`
	Node     string `json:"node,omitempty"`
	State    string `json:"state"`
	// Evicted counts the evictions this drain had accepted, Remaining the
	// pods still to go when the invocation ended.
	Evicted   int `json:"evicted,omitempty"`
	Remaining int `json:"remaining,omitempty"`
	// Blocked is the last eviction refusal (a PodDisruptionBudget's).
	Blocked string `json:"blocked,omitempty"`
	// LifecycleAction is the answer given to the event's lifecycle action
	// (CONTINUE, ABANDON), or why none was given.
	LifecycleAction string `json:"lifecycleAction,omitempty"`
	Heartbeats      int    `json:"heartbeats,omitempty"`
	Reason          string `json:"reason,omitempty"`
}

// evictable says whether a drain evicts p, and why not.
func evictable(p *corev1.Pod, evictEmptyDir bool) (bool, string) {
	if _, ok := p.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return false, "mirror pod"
	}
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller && o.Kind == "DaemonSet" {
			return false, "DaemonSet pod"
		}
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return true, ""
	}
	if !evictEmptyDir {
		for _, v := range p.Spec.Volumes {
			if v.EmptyDir != nil {
				return false, "emptyDir data kept (EMPTYDIR_DATA=keep)"
			}
		}
	}
	return true, ""
}

// gracePeriod is the grace period to evict p with when the drain must be
// over by deadline: the pod's own (nil) unless it would outlast it.
func gracePeriod(p *corev1.Pod, now, deadline time.Time) *int64 {
	left := int64(deadline.Sub(now) / time.Second)
	if left < 1 {
		left = 1
	}
	if p.Spec.TerminationGracePeriodSeconds != nil && *p.Spec.TerminationGracePeriodSeconds > left {
		return &left
	}
	return nil
}

// evictRetry is how long a pod whose eviction a budget refused (429) waits
// before it is tried again: kubectl drain's 5 s.
const evictRetry = 5 * time.Second

// handoff is kept at the end of an invocation to hand a drain to the next
// one: a heartbeat, the record and the asynchronous invoke.
const handoff = 10 * time.Second

// drain drains instance's node for w's event, within this invocation, and
// says whether the work continues in another.
func (w *work) drain(ctx context.Context, instance string) (NodeResult, bool, error) {
	res := NodeResult{Instance: instance}
	node, err := w.findNode(ctx, instance)
	if err != nil {
		return res, false, err
	}
	hook := w.ev.Hook
	if node == nil {
		res.State, res.Reason = StateNoNode, "no Node has this instance's providerID or private DNS name (never joined, or gone)"
		if hook != nil {
			res.LifecycleAction, err = w.answer(ctx, hook, resultContinue)
		}
		return res, false, err
	}
	res.Node = node.Name
	if o := owner(node); o != "" && !w.h.cfg.ManagedNodes {
		res.State, res.Reason = StateSkipped, "left to its owner, "+o+", which drains its own nodes (MANAGED_NODES=drain drains them here)"
		return res, false, nil
	}
	if hook != nil && hook.Destination == "WarmPool" {
		res.Reason = "the instance goes to the Auto Scaling group's warm pool (stopped, kept); its pods are drained all the same"
	}

	rec, node, state, err := w.claim(ctx, node)
	if err != nil || state != "" {
		res.State = state
		if hook != nil && rec != nil {
			if a := rec.action(hook.Token); a != nil {
				res.LifecycleAction = a.Result
			}
		}
		if state == StateInProgress {
			res.Reason = "invocation " + rec.Holder + " is draining this node; it answers this event's lifecycle action too"
		}
		return res, false, err
	}
	w.h.log.InfoContext(ctx, "draining", "node", node.Name, "instance", instance, "reason", string(w.ev.Kind),
		"deadline", rec.Deadline.UTC().Format(time.RFC3339))
	if w.ev.Kind == Rebalance && !w.h.cfg.RebalanceDrain {
		res.State = StateCordoned
		return res, false, w.release(ctx, node.Name, rec, &res, "")
	}

	// The pods, every Poll, until none is left to evict, the drain's
	// deadline passes, or this invocation must hand over.
	stopBy := w.deadline.Add(-min(handoff, w.deadline.Sub(w.h.now())/4))
	beat := w.h.now()
	var outcome string
	evicted := map[string]bool{}
	refusedUntil := map[string]time.Time{} // a pod a budget refused, tried again after evictRetry
	// A pod the Eviction API says does not exist though the list has it (an
	// object its deleted namespace left behind) cannot be evicted nor waited
	// for: it is not counted.
	unreachable, notFound := map[string]bool{}, map[string]int{}
	var waiting []string
	lastLog := w.h.now()
	// The polls' requests end by the hand-off too: a slow one must not eat
	// the time the hand-off needs.
	polls, cancel := context.WithDeadline(ctx, stopBy.Add(w.deadline.Sub(stopBy)/2))
	defer cancel()
	err = wait.PollUntilContextCancel(polls, w.h.cfg.Poll, true, func(ctx context.Context) (bool, error) {
		now := w.h.now()
		pods, err := w.cluster.pods(ctx, node.Name)
		if err != nil {
			return false, fmt.Errorf("list pods of node %s: %w", node.Name, err)
		}
		res.Remaining, waiting = 0, waiting[:0]
		for i := range pods {
			p := &pods[i]
			if ok, _ := evictable(p, w.h.cfg.EvictEmptyDir); !ok || unreachable[string(p.UID)] {
				continue
			}
			res.Remaining++
			if len(waiting) < 5 {
				waiting = append(waiting, p.Namespace+"/"+p.Name)
			}
			if p.DeletionTimestamp != nil || now.Before(refusedUntil[string(p.UID)]) {
				continue // evicted, its grace period running; or refused a moment ago
			}
			err := w.cluster.evict(ctx, p, gracePeriod(p, now, rec.Deadline))
			switch {
			case err == nil:
				if !evicted[string(p.UID)] {
					evicted[string(p.UID)] = true
					res.Evicted++
				}
			case apierrors.IsTooManyRequests(err):
				res.Blocked = fmt.Sprintf("pod %s/%s: %s", p.Namespace, p.Name, apiStatusMessage(err))
				refusedUntil[string(p.UID)] = now.Add(evictRetry)
			case apierrors.IsNotFound(err):
				// Gone; or, if the next list still has it, unreachable.
				if notFound[string(p.UID)]++; notFound[string(p.UID)] == 2 {
					unreachable[string(p.UID)] = true
					w.h.log.WarnContext(ctx, "pod not counted: the Eviction API says it does not exist", "pod", p.Namespace+"/"+p.Name, "error", err.Error())
				}
			case apierrors.IsConflict(err):
				// Replaced by a pod of the same name: not this one.
			default:
				return false, fmt.Errorf("evict pod %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
		switch {
		case res.Remaining == 0:
			outcome = StateDrained
			return true, nil
		case !now.Before(rec.Deadline):
			outcome = StateTimedOut
			return true, nil
		case !now.Before(stopBy):
			outcome = StateContinuing
			return true, nil
		}
		if now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			w.h.log.InfoContext(ctx, "drain progress", "node", node.Name, "remaining", res.Remaining, "evicted", res.Evicted, "blocked", res.Blocked,
				"waiting_for", waiting)
		}
		if due := w.heartbeatDue(rec, beat, now); due {
			beat = now
			w.refresh(ctx, node.Name, rec)
			n, err := w.heartbeat(ctx, rec)
			res.Heartbeats += n
			return false, err
		}
		return false, nil
	})
	if err != nil && ctx.Err() == nil && polls.Err() != nil {
		outcome, err = StateContinuing, nil // a request outlasted the hand-off time
	}
	if err != nil {
		// The record keeps the lease until it lapses: the next event or
		// retry takes over.
		return res, false, err
	}
	res.State = outcome
	switch outcome {
	case StateDrained:
		res.Blocked = ""
		return res, false, w.release(ctx, node.Name, rec, &res, resultContinue)
	case StateTimedOut:
		res.Reason = fmt.Sprintf("the drain's deadline %s passed with %d pods left", rec.Deadline.UTC().Format(time.RFC3339), res.Remaining)
		return res, false, w.release(ctx, node.Name, rec, &res, w.h.cfg.TerminateTimeoutResult)
	default:
		w.refresh(ctx, node.Name, rec)
		n, err := w.heartbeat(ctx, rec)
		res.Heartbeats += n
		if err != nil {
			return res, false, err
		}
		return res, true, w.release(ctx, node.Name, rec, &res, "")
	}
}

// claim takes the drain of node for this invocation: it records the event
// on the node (its lifecycle action, its reason), cordons and taints it,
// and takes the lease. state is set, and nothing drained, when another
// invocation holds the node (StateInProgress: the holder answers this
// event's action too) or this event's action was answered already.
func (w *work) claim(ctx context.Context, node *corev1.Node) (*record, *corev1.Node, string, error) {
	var rec *record
	var state string
	name := node.Name
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rec, state = nil, ""
		if node == nil {
			var err error
			if node, err = w.cluster.node(ctx, name); err != nil {
				return err
			}
		}
		n := node
		node = nil // read again on a conflict
		r, err := readRecord(n)
		if err != nil {
			return err
		}
		now := w.h.now()
		deadline := w.drainDeadline(now)
		if r == nil {
			r = &record{Started: now, Deadline: deadline}
		} else if deadline.Before(r.Deadline) {
			r.Deadline = deadline // a Spot warning hurries a slower drain
		}
		changed := r.addReason(w.ev.Kind)
		if h := w.ev.Hook; h != nil {
			switch a := r.action(h.Token); {
			case a != nil && a.Result != "":
				rec, state = r, StateAlreadyCompleted
				return nil
			case a == nil:
				r.Actions = append(r.Actions, action{ASG: h.ASG, Hook: h.Name, Token: h.Token, Instance: h.Instance,
					HeartbeatSeconds: int(w.hookTimes.Heartbeat / time.Second)})
				changed = true
			}
		}
		if r.heldBy(w.me, now) {
			rec, state = r, StateInProgress
			if !changed {
				return nil
			}
		} else {
			r.Holder, r.Until = w.me, w.deadline.Add(leaseSlack)
		}
		// Held elsewhere or not, the node says this event's reason too.
		patch, err := nodePatch(n, r, w.ev.Kind, true, now)
		if err != nil {
			return err
		}
		node, err = w.cluster.patchNode(ctx, n.Name, patch)
		rec = r
		return err
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("record the drain on node %s: %w", name, err)
	}
	return rec, node, state, nil
}

// drainDeadline is when a drain for w's event, starting at now, must end.
func (w *work) drainDeadline(now time.Time) time.Time {
	switch w.ev.Kind {
	case Spot:
		// Two minutes from the warning; a warning from another time (a
		// replayed sample, a skewed clock) counts from now.
		t := w.ev.Time
		if t.IsZero() || t.After(now) || now.Sub(t) > spotWindow {
			t = now
		}
		return t.Add(spotWindow - spotMargin)
	case Terminate:
		d := w.hookTimes.Global - hookMargin
		if w.h.cfg.DrainTimeout > 0 {
			d = min(d, w.h.cfg.DrainTimeout)
		}
		return now.Add(d)
	default:
		d := w.h.cfg.DrainTimeout
		if d == 0 {
			d = DefaultDrainTimeout
		}
		return now.Add(d)
	}
}

const (
	// spotWindow is the notice a Spot interruption warning gives.
	spotWindow = 2 * time.Minute
	// spotMargin ends a Spot drain before the instance goes.
	spotMargin = 10 * time.Second
	// hookMargin ends a drain before its hook's global timeout, so that
	// the answer is this function's, not the hook's default.
	hookMargin = time.Minute
)

// heartbeatDue says whether rec's actions need a heartbeat at now, the last
// one (or the invocation's start) at last: at half the shortest heartbeat
// timeout.
func (w *work) heartbeatDue(rec *record, last, now time.Time) bool {
	shortest := time.Duration(0)
	for _, a := range rec.pending() {
		if d := time.Duration(a.HeartbeatSeconds) * time.Second; d > 0 && (shortest == 0 || d < shortest) {
			shortest = d
		}
	}
	return shortest > 0 && now.Sub(last) >= shortest/2
}

// refresh reads the node's record again into rec: the actions other
// invocations recorded on it since the claim (they are this holder's to
// heartbeat and answer), and an earlier deadline one of them set (a Spot
// warning). A failed read keeps rec as it is: the next one will do.
func (w *work) refresh(ctx context.Context, name string, rec *record) {
	n, err := w.cluster.node(ctx, name)
	if err != nil {
		return
	}
	if cur, err := readRecord(n); err == nil && cur != nil {
		rec.Actions = cur.Actions
		if cur.Deadline.Before(rec.Deadline) {
			rec.Deadline = cur.Deadline
		}
	}
}

// heartbeat records a heartbeat for each of rec's pending actions.
func (w *work) heartbeat(ctx context.Context, rec *record) (int, error) {
	n := 0
	for _, a := range rec.pending() {
		gone, err := w.h.aws.heartbeat(ctx, a.hook())
		if err != nil {
			return n, err
		}
		if !gone {
			n++
		}
	}
	return n, nil
}

// release ends this invocation's hold on the node: the actions pending on
// it answered with result (none when ""), the record written back, the
// lease let go. A record someone removed meanwhile is written again from
// held, this invocation's copy, so that no action goes unanswered.
func (w *work) release(ctx context.Context, nodeName string, held *record, res *NodeResult, result string) error {
	answered := map[string]string{}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := w.cluster.node(ctx, nodeName)
		if err != nil {
			return err
		}
		r, err := readRecord(n)
		if err != nil {
			return err
		}
		if r == nil {
			cp := *held
			cp.Actions = append([]action(nil), held.Actions...)
			r = &cp
		}
		for _, a := range r.pending() {
			if result == "" {
				break
			}
			if _, done := answered[a.Token]; !done {
				answered[a.Token], err = w.answer(ctx, a.hook(), result)
				if err != nil {
					return err
				}
			}
			a.Result = answered[a.Token]
		}
		if h := w.ev.Hook; h != nil {
			if a := r.action(h.Token); a != nil && a.Result != "" {
				res.LifecycleAction = a.Result
			}
		}
		r.Evicted += res.Evicted
		r.Drained = res.State == StateDrained
		if r.Holder == w.me {
			r.Holder, r.Until = "", time.Time{}
		}
		patch, err := nodePatch(n, r, w.ev.Kind, false, w.h.now())
		if err != nil {
			return err
		}
		_, err = w.cluster.patchNode(ctx, nodeName, patch)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the drain's end on node %s: %w", nodeName, err)
	}
	return nil
}

// answer completes h with result; it returns what to report of it.
func (w *work) answer(ctx context.Context, h *Hook, result string) (string, error) {
	done, why, err := w.h.aws.complete(ctx, h, result)
	if err != nil {
		return "", err
	}
	if !done {
		w.h.log.InfoContext(ctx, "lifecycle action not answered", "instance", h.Instance, "hook", h.Name, "why", why)
		return why, nil
	}
	w.h.log.InfoContext(ctx, "lifecycle action completed", "instance", h.Instance, "asg", h.ASG, "hook", h.Name, "result", result)
	return result, nil
}

// apiStatusMessage is the API server's message in err.
func apiStatusMessage(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Message
	}
	return err.Error()
}
