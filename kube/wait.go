package kube

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// WaitTimeoutError is a wait that ended before every object was ready. It
// carries the readiness seen last.
type WaitTimeoutError struct {
	Waited  time.Duration
	Objects []ObjectResult
}

func (e *WaitTimeoutError) Error() string {
	var pending []string
	for _, o := range e.Objects {
		if o.Result != Ready {
			pending = append(pending, o.summary())
		}
	}
	return fmt.Sprintf("not ready after %s: %s", e.Waited.Round(time.Millisecond), strings.Join(pending, "; "))
}

// summary is what a wait says of o: kind, name, result, and its readiness.
func (o ObjectResult) summary() string {
	s := fmt.Sprintf("%s %s %s", o.Kind, qualified(o.Namespace, o.Name), o.Result)
	r := o.Readiness
	if r == nil {
		return s
	}
	s += " (" + r.Status
	if r.Desired > 0 {
		s += fmt.Sprintf("; desired %d, updated %d, ready %d, available %d", r.Desired, r.Updated, r.Ready, r.Available)
	}
	if r.Message != "" {
		s += ": " + r.Message
	}
	return s + ")"
}

// waitInterval is how often a wait reads the objects' status.
const waitInterval = time.Second

// static holds kinds that have no status to wait for: a wait does not read
// them.
var static = map[schema.GroupKind]bool{
	{Kind: "ConfigMap"}: true, {Kind: "Secret"}: true, {Kind: "ServiceAccount"}: true,
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}: true, {Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}: true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}: true, {Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}: true,
}

// Wait polls the objects among objs (results of apply, scale or restart)
// until every one is ready or one has failed, for at most bound, and returns
// objs with their readiness. Objects of kinds without status, and deleted or
// absent ones, are not read. Past bound it returns a *WaitTimeoutError with
// the readiness seen last. Progress is logged to log whenever it changes.
func (c *Client) Wait(ctx context.Context, objs []ObjectResult, bound time.Duration, log *slog.Logger) ([]ObjectResult, error) {
	out := make([]ObjectResult, len(objs))
	copy(out, objs)
	var refs []Ref
	var idx []int
	for i, o := range objs {
		gv, err := schema.ParseGroupVersion(o.APIVersion)
		if err != nil || static[gv.WithKind(o.Kind).GroupKind()] || o.Result == Absent || o.Result == Deleted || o.Result == Kept {
			continue
		}
		refs = append(refs, Ref{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
		idx = append(idx, i)
	}
	if len(refs) == 0 {
		return out, nil
	}
	ts, err := c.resolveRefs(ctx, refs, "")
	if err != nil {
		return nil, err
	}
	start := c.now()
	last := ""
	var seen []ObjectResult // the readiness of the last poll
	// The reads run under ctx, not under the wait's bound: a read begun
	// just before the bound must not fail as if the server were down.
	poll := func(ctx context.Context) (bool, error) {
		rs, err := c.statusTargets(ctx, ts)
		if err != nil {
			return false, err
		}
		seen = rs
		var pending []string
		for k, r := range rs {
			i := idx[k]
			out[i].Readiness = r.Readiness
			switch r.Result {
			case Failed:
				// It will not get better by waiting: report it.
				out[i].Result = Failed
				log.WarnContext(ctx, "rollout failed", "kind", r.Kind, "namespace", r.Namespace, "name", r.Name,
					"message", r.Readiness.Message)
				return true, nil
			case Ready:
			default:
				pending = append(pending, r.summary())
			}
		}
		if s := strings.Join(pending, "; "); s != last && s != "" {
			last = s
			log.InfoContext(ctx, "waiting for rollout", "pending", s, "waited_ms", c.now().Sub(start).Milliseconds())
		}
		return len(pending) == 0, nil
	}
	// Polls run every waitInterval from start (a poll that runs long skips
	// the ticks it missed) until the bound, which ends the wait.
	end := start.Add(bound)
	for tick := 1; ; tick++ {
		done, err := poll(ctx)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		now := c.now()
		next := start.Add(time.Duration(tick) * waitInterval)
		for !next.After(now) {
			tick++
			next = start.Add(time.Duration(tick) * waitInterval)
		}
		if !next.Before(end) {
			if now.Before(end) {
				if err := c.sleep(ctx, end.Sub(now)); err != nil {
					return nil, err
				}
			}
			return nil, &WaitTimeoutError{Waited: c.now().Sub(start), Objects: seen}
		}
		if err := c.sleep(ctx, next.Sub(now)); err != nil {
			return nil, err
		}
	}
	log.InfoContext(ctx, "rollout complete", "objects", len(ts), "waited_ms", c.now().Sub(start).Milliseconds())
	return out, nil
}
