package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"helm.sh/helm/v4/pkg/action"
	helmkube "helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	rspb "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
)

// op is one invocation's action on one release.
type op struct {
	req  Request
	cfg  *action.Configuration
	log  *slog.Logger
	now  func() time.Time
	lamb time.Time // Lambda's deadline (the label's value)
	// owner is the custom resource whose revisions these are (OwnerLabel).
	owner string
}

// budget is how long Helm may take, waits included: until the invocation's
// deadline less helmMargin, and at most the event's wait.
func (o *op) budget(ctx context.Context) (time.Duration, error) {
	b := invoke.MaxWait
	if d, ok := ctx.Deadline(); ok {
		b = time.Until(d) - helmMargin
	}
	if o.req.Wait != nil && o.req.Wait.Max > 0 {
		b = min(b, o.req.Wait.Max)
	}
	if b < minBudget {
		return 0, fmt.Errorf("only %s left before the invocation's deadline: %w", b.Round(time.Millisecond), context.DeadlineExceeded)
	}
	return b, nil
}

func (o *op) waitStrategy() helmkube.WaitStrategy {
	if o.req.Wait != nil && o.req.Wait.On {
		return helmkube.StatusWatcherStrategy
	}
	return helmkube.HookOnlyStrategy
}

func (o *op) labels() map[string]string {
	// Rounded up: the label never says the invocation ended before it did.
	l := map[string]string{DeadlineLabel: strconv.FormatInt(o.lamb.Add(time.Second-1).Unix(), 10)}
	if o.owner != "" {
		l[OwnerLabel] = o.owner
	}
	return l
}

func (o *op) dryRun() action.DryRunStrategy {
	if o.req.DryRun {
		return action.DryRunServer
	}
	return action.DryRunNone
}

// history is the release's revisions, oldest first; nil when it has none.
func (o *op) history() ([]*rspb.Release, error) {
	hs, err := o.cfg.Releases.History(o.req.Release)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("history of release %s: %w", o.req.Release, err)
	}
	rels := make([]*rspb.Release, 0, len(hs))
	for _, h := range hs {
		r, err := v1(h)
		if err != nil {
			return nil, err
		}
		rels = append(rels, r)
	}
	slices.SortFunc(rels, func(a, b *rspb.Release) int { return a.Version - b.Version })
	return rels, nil
}

func v1(r any) (*rspb.Release, error) {
	switch r := r.(type) {
	case *rspb.Release:
		return r, nil
	case rspb.Release:
		return &r, nil
	}
	return nil, fmt.Errorf("unsupported release type %T", r)
}

// recoverPending marks the newest revision failed when it is pending
// (pending-install, pending-upgrade, pending-rollback) or uninstalling
// and the invocation that wrote it has certainly ended: its DeadlineLabel
// is past, or, without the label, it was last written more than
// foreignPending ago. Helm refuses any action on a pending release
// ("another operation is in progress"); a failed revision is where helm
// upgrade and helm rollback start from, so the action then proceeds as it
// would after any failed revision. A revision that may still be worked on
// is a PendingError (Conflict), never taken over.
func (o *op) recoverPending(ctx context.Context, hist []*rspb.Release) (string, error) {
	if len(hist) == 0 {
		return "", nil
	}
	last := hist[len(hist)-1]
	if !last.Info.Status.IsPending() && last.Info.Status != rcommon.StatusUninstalling {
		return "", nil
	}
	now := o.now()
	until := last.Info.LastDeployed.Add(foreignPending)
	if v, ok := last.Labels[DeadlineLabel]; ok {
		if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
			until = time.Unix(sec, 0)
		}
	}
	if now.Before(until) {
		return "", &PendingError{Release: last.Name, Namespace: last.Namespace, Revision: last.Version,
			Status: last.Info.Status.String(), Until: until}
	}
	was := last.Info.Status
	last.Info.Status = rcommon.StatusFailed
	last.Info.Description = fmt.Sprintf("lambda-eks: marked failed: was %s, left by an invocation that ended before it finished (deadline %s)",
		was, until.UTC().Format(time.RFC3339))
	if err := o.cfg.Releases.Update(last); err != nil {
		return "", fmt.Errorf("mark revision %d of release %s failed: %w", last.Version, last.Name, err)
	}
	msg := fmt.Sprintf("revision %d was %s, left by an invocation that ended at %s; marked failed", last.Version, was,
		until.UTC().Format(time.RFC3339))
	o.log.WarnContext(ctx, "recovered pending release", "release", last.Name, "namespace", last.Namespace, "revision", last.Version,
		"was", string(was))
	return msg, nil
}

// begin readies an action on a release whose history is hist: a pending
// revision that an ended invocation left is marked failed (not in a dry
// run), and the action's time is budgeted.
func (o *op) begin(ctx context.Context, hist []*rspb.Release) (recovered string, budget time.Duration, err error) {
	if !o.req.DryRun {
		if recovered, err = o.recoverPending(ctx, hist); err != nil {
			return "", 0, err
		}
	}
	budget, err = o.budget(ctx)
	return recovered, budget, err
}

func (o *op) result(rel *rspb.Release) *Result {
	r := &Result{Release: rel.Name, Namespace: rel.Namespace, Revision: rel.Version, DryRun: o.req.DryRun}
	if rel.Info != nil {
		r.Status = rel.Info.Status.String()
		r.Description = rel.Info.Description
		r.Updated = stamp(rel.Info.LastDeployed)
		if o.req.DryRun {
			r.Notes = rel.Info.Notes
		}
	}
	if rel.Chart != nil && rel.Chart.Metadata != nil {
		r.Chart = rel.Chart.Metadata.Name
		r.ChartVersion = rel.Chart.Metadata.Version
		r.AppVersion = rel.Chart.Metadata.AppVersion
	}
	return r
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
