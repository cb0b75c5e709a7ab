// Package lifecycle is the node lifecycle function of lambda-eks: it drains
// the nodes of self-managed node groups when their instances go away (Auto
// Scaling terminate lifecycle actions, Spot interruption warnings, EC2
// rebalance recommendations, AWS Health scheduled changes), and answers a
// launch lifecycle action once the instance's Node is Ready; nothing runs
// in the cluster. It is a peer of the main and Helm functions on the same
// framework (internal/invoke) and shares auth and kube with them; it lives
// in a function of its own so that its Auto Scaling, EC2 and Lambda
// permissions, and its RBAC (nodes, pods, evictions), belong to it alone.
//
// A drain longer than one invocation records a lifecycle heartbeat and
// continues in a new invocation of the function (an asynchronous Invoke of
// itself with the event). Progress lives on the Node (record.go), so that a
// duplicated or retried event neither drains twice nor answers twice.
package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	corev1 "k8s.io/api/core/v1"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Group is the Kubernetes group the lifecycle function's role is mapped to;
// permissions.yml's ClusterRole lambda-eks-lifecycle is bound to it.
const Group = "lambda-eks-lifecycle"

var access = invoke.Access{Group: Group, AccessEntry: "LifecycleFunction=true with AccessMode=access-entry"}

// Result is an invocation's answer.
type Result struct {
	Event   Kind         `json:"event"`
	Cluster string       `json:"cluster,omitempty"`
	Nodes   []NodeResult `json:"nodes,omitempty"`
	// Continued says that the work goes on in another invocation
	// (Attempt numbers it).
	Continued bool   `json:"continued,omitempty"`
	Attempt   int    `json:"attempt,omitempty"`
	Message   string `json:"message,omitempty"`
}

func (r *Result) logAttrs() []any {
	attrs := []any{"event", string(r.Event)}
	for _, n := range r.Nodes {
		g := []any{"node", n.Node, "state", n.State, "evicted", n.Evicted, "remaining", n.Remaining, "lifecycle_action", n.LifecycleAction}
		if n.Reason != "" {
			g = append(g, "reason", n.Reason) // why it was skipped, left, or timed out
		}
		attrs = append(attrs, slog.Group("node_"+n.Instance, g...))
	}
	if r.Continued {
		attrs = append(attrs, "continued", true, "attempt", r.Attempt)
	}
	return attrs
}

// CountResults counts the nodes by state, and the pods evicted, for the
// invocation's Objects.<result> metrics (internal/invoke).
func (r *Result) CountResults() map[string]int {
	out := map[string]int{}
	for _, n := range r.Nodes {
		out[n.State]++
		if n.Evicted > 0 {
			out["evicted"] += n.Evicted
		}
	}
	return out
}

// Handler serves the lifecycle function's invocations. Build it once per
// process.
type Handler struct {
	cfg   Config
	aws   AWS
	conns *invoke.Conns[*cluster]
	log   *slog.Logger
	now   func() time.Time
}

// New returns a Handler that reaches clusters, and AWS, with awsCfg's
// credentials; function is its own name (AWS_LAMBDA_FUNCTION_NAME).
func New(cfg Config, awsCfg aws.Config, function string, log *slog.Logger) *Handler {
	return &Handler{cfg: cfg, aws: NewAWS(awsCfg, function), conns: invoke.NewConns(invoke.NewOpener(awsCfg, newCluster), log),
		log: log, now: time.Now}
}

// Invoke is the Lambda handler: the raw event in, the Result as JSON out,
// or an error whose errorType is the invoke.Error code.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	start := time.Now()
	res, err := h.invoke(ctx, payload)
	return invoke.Finish(ctx, h.log, start, res, err, (*Result).logAttrs)
}

// work is one invocation's handling of one event.
type work struct {
	h         *Handler
	ev        *Event
	cluster   *cluster
	me        string    // the request id: the lease holder's name
	deadline  time.Time // this invocation's, less the margin
	hookTimes hookTimes
	dns       map[string]string // private DNS names asked of EC2
}

func (h *Handler) invoke(ctx context.Context, raw []byte) (*Result, error) {
	ev, err := DecodeEvent(raw)
	if err != nil {
		return nil, err
	}
	invoke.NoteAction(ctx, string(ev.Kind))
	res := &Result{Event: ev.Kind}
	if ev.Kind == Test {
		res.Message = "Auto Scaling test notification: acknowledged, nothing to do"
		return res, nil
	}
	ctx, cancel := invoke.WithMargin(ctx)
	defer cancel()
	target := h.cfg.Target("", "", "", "")
	if target.Cluster == "" {
		return nil, invoke.Invalid("CLUSTER_NAME is not set: the lifecycle function drains the nodes of the cluster it is deployed for")
	}
	res.Cluster = target.Cluster
	attrs := []any{"event", string(ev.Kind), "cluster", target.Cluster, "instances", ev.Instances, "event_id", ev.ID}
	if ev.Continuation != nil {
		attrs = append(attrs, "attempt", ev.Continuation.Attempt)
	}
	h.log.InfoContext(ctx, "invocation", attrs...)
	diag := invoke.Diagnosis{Cluster: target.Cluster, RoleARN: target.RoleARN, Access: access}

	conn, err := h.conns.Get(ctx, target)
	if err != nil {
		return nil, invoke.Classify(ctx, err, diag)
	}
	diag.CallerARN = conn.CallerARN
	deadline, _ := ctx.Deadline()
	w := &work{h: h, ev: ev, cluster: conn.Client, me: requestID(ctx), deadline: deadline, dns: map[string]string{}}
	if ev.Hook != nil {
		if w.hookTimes, err = h.aws.hookTimes(ctx, ev.Hook); err != nil {
			return nil, invoke.Classify(ctx, err, diag)
		}
	}
	more, err := w.run(ctx, res)
	if err != nil {
		h.conns.Done(ctx, target, conn, err)
		return nil, invoke.Classify(ctx, err, diag)
	}
	if more {
		started := h.now()
		if ev.Continuation != nil {
			started = ev.Continuation.Started
		}
		payload, err := ev.continued(started)
		if err == nil {
			err = h.aws.continueAsync(ctx, payload)
		}
		if err != nil {
			return nil, invoke.Classify(ctx, fmt.Errorf("the work is not done and cannot continue: %w", err), diag)
		}
		res.Continued, res.Attempt = true, 2
		if ev.Continuation != nil {
			res.Attempt = ev.Continuation.Attempt + 1
		}
		h.log.InfoContext(ctx, "continuing in a new invocation", "attempt", res.Attempt)
	}
	return res, nil
}

// run does the event's work on each instance it names; more says that some
// of it continues in another invocation.
func (w *work) run(ctx context.Context, res *Result) (more bool, err error) {
	for _, instance := range w.ev.Instances {
		var n NodeResult
		var again bool
		if w.ev.Kind == Launch {
			n, again, err = w.launch(ctx, instance)
		} else {
			n, again, err = w.drain(ctx, instance)
		}
		if err != nil {
			return false, err
		}
		res.Nodes = append(res.Nodes, n)
		more = more || again
	}
	return more, nil
}

// launch waits for instance's Node to register and be Ready, then answers
// the launch lifecycle action CONTINUE; past the wait's limit it answers
// LAUNCH_TIMEOUT_RESULT.
func (w *work) launch(ctx context.Context, instance string) (NodeResult, bool, error) {
	res := NodeResult{Instance: instance}
	started := w.h.now()
	if c := w.ev.Continuation; c != nil {
		started = c.Started
	}
	limit := w.h.cfg.LaunchTimeout
	if limit == 0 {
		limit = w.hookTimes.Global - hookMargin
	}
	until := started.Add(limit)
	stopBy := w.deadline.Add(-min(handoff, w.deadline.Sub(w.h.now())/4))
	beat := w.h.now()
	rec := &record{Actions: []action{{ASG: w.ev.Hook.ASG, Hook: w.ev.Hook.Name, Token: w.ev.Hook.Token, Instance: instance,
		HeartbeatSeconds: int(w.hookTimes.Heartbeat / time.Second)}}}
	var node *corev1.Node
	for {
		var err error
		if node, err = w.findNode(ctx, instance); err != nil {
			return res, false, err
		}
		now := w.h.now()
		switch {
		case node != nil && ready(node):
			res.Node, res.State = node.Name, StateReady
			res.LifecycleAction, err = w.answer(ctx, w.ev.Hook, resultContinue)
			return res, false, err
		case !now.Before(until):
			res.State = StateTimedOut
			res.Reason = fmt.Sprintf("no Ready Node for the instance %s after its launch", limit)
			if node != nil {
				res.Node, res.Reason = node.Name, fmt.Sprintf("Node %s not Ready %s after its launch", node.Name, limit)
			}
			res.LifecycleAction, err = w.answer(ctx, w.ev.Hook, w.h.cfg.LaunchTimeoutResult)
			return res, false, err
		case !now.Before(stopBy):
			n, err := w.heartbeat(ctx, rec)
			res.Heartbeats += n
			res.State = StateContinuing
			return res, true, err
		case w.heartbeatDue(rec, beat, now):
			beat = now
			n, err := w.heartbeat(ctx, rec)
			res.Heartbeats += n
			if err != nil {
				return res, false, err
			}
		}
		select {
		case <-ctx.Done():
			return res, false, ctx.Err()
		case <-time.After(w.h.cfg.Poll):
		}
	}
}

// findNode is instance's Node, or nil; the instance's private DNS name is
// asked of EC2 once per invocation, and only when no providerID names it.
func (w *work) findNode(ctx context.Context, instance string) (*corev1.Node, error) {
	nodes, err := w.cluster.nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodes {
		if providerIDInstance(nodes[i].Spec.ProviderID) == instance {
			return &nodes[i], nil
		}
	}
	dns, asked := w.dns[instance]
	if !asked {
		if dns, err = w.h.aws.privateDNSName(ctx, instance); err != nil {
			return nil, err
		}
		w.dns[instance] = dns
	}
	for i := range nodes {
		if dns != "" && nodes[i].Name == dns {
			return &nodes[i], nil
		}
	}
	return nil, nil
}

// requestID is the invocation's request id, or a name of this process's
// for a call with none (a test).
func requestID(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	return fmt.Sprintf("local-%d", time.Now().UnixNano())
}
