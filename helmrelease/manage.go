package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	rspb "helm.sh/helm/v4/pkg/release/v1"
)

// rollback rolls the release back to req.Revision, or to the revision
// before the current one.
func (o *op) rollback(ctx context.Context) (*Result, error) {
	hist, err := o.history()
	if err != nil {
		return nil, err
	}
	if len(hist) == 0 {
		return nil, &ReleaseNotFoundError{Release: o.req.Release, Namespace: o.req.Namespace}
	}
	recovered, budget, err := o.begin(ctx, hist)
	if err != nil {
		return nil, err
	}
	target := o.req.Revision
	if target == 0 {
		target = o.lastDeployedBefore(hist[len(hist)-1].Version)
		if target == 0 {
			return nil, fmt.Errorf("release %s has no deployed revision before revision %d to roll back to: %w",
				o.req.Release, hist[len(hist)-1].Version, errNoTarget)
		}
	} else if !slices.ContainsFunc(hist, func(r *rspb.Release) bool { return r.Version == target }) {
		return nil, fmt.Errorf("release %s has no revision %d (revisions %d to %d are kept): %w",
			o.req.Release, target, hist[0].Version, hist[len(hist)-1].Version, errNoTarget)
	}
	rb := action.NewRollback(o.cfg)
	rb.Version = target
	rb.WaitStrategy = o.waitStrategy()
	rb.WaitForJobs = o.req.Wait != nil && o.req.Wait.On
	rb.Timeout = budget
	rb.MaxHistory = maxHistory
	rb.DryRunStrategy = o.dryRun()
	rb.ServerSideApply = "auto"
	rerr := rb.Run(o.req.Release)
	after, herr := o.history()
	if herr != nil || len(after) == 0 {
		if rerr != nil {
			return nil, rerr
		}
		return nil, herr
	}
	last := after[len(after)-1]
	if rerr != nil {
		if o.req.DryRun || last.Version == hist[len(hist)-1].Version {
			return nil, rerr
		}
		return nil, &ReleaseError{Release: last.Name, Namespace: last.Namespace, Revision: last.Version,
			Status: last.Info.Status.String(), Err: rerr}
	}
	r := o.result(last)
	if o.req.DryRun {
		r = o.result(hist[len(hist)-1])
		r.Description = fmt.Sprintf("dry run: would roll back to revision %d", target)
	}
	r.Recovered = recovered
	return r, nil
}

// purgedMeanwhile reports Helm's uninstall failing only because a record
// of the release it was purging was gone: Helm joins the purge's errors
// into text, so the words are all there is to check.
func purgedMeanwhile(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Failed to purge the release") && strings.Contains(msg, "not found") &&
		strings.Count(msg, "error(s)") == 1 && strings.Contains(msg, "completed with 1 error(s)")
}

// errNoTarget marks a rollback without its target revision (NotFound).
var errNoTarget = errors.New("no such revision")

// uninstall removes the release and its history; an absent release is
// success ("absent").
func (o *op) uninstall(ctx context.Context) (*Result, error) {
	hist, err := o.history()
	if err != nil {
		return nil, err
	}
	absent := &Result{Release: o.req.Release, Namespace: o.req.Namespace, Status: "absent", DryRun: o.req.DryRun}
	if len(hist) == 0 {
		return absent, nil
	}
	if o.owner != "" {
		if got := hist[len(hist)-1].Labels[OwnerLabel]; got != o.owner {
			kept := o.result(hist[len(hist)-1])
			kept.Status = "kept"
			kept.Description = fmt.Sprintf("not uninstalled: the newest revision is not this resource's (label %s=%q)", OwnerLabel, got)
			return kept, nil
		}
	}
	recovered, budget, err := o.begin(ctx, hist)
	if err != nil {
		return nil, err
	}
	un := action.NewUninstall(o.cfg)
	un.WaitStrategy = o.waitStrategy()
	un.Timeout = budget
	un.IgnoreNotFound = true
	un.DryRun = o.req.DryRun
	resp, err := un.Run(o.req.Release)
	if err != nil {
		if purgedMeanwhile(err) {
			// Another invocation (a duplicate delivery) removed the
			// release's records while this one uninstalled it too.
			absent.Description = "uninstalled meanwhile by another invocation"
			return absent, nil
		}
		last := hist[len(hist)-1]
		return nil, &ReleaseError{Release: last.Name, Namespace: last.Namespace, Revision: last.Version, Status: "uninstalling", Err: err}
	}
	r := o.result(hist[len(hist)-1])
	r.Status = "uninstalled"
	if o.req.DryRun {
		r.Status = r.Status + " (dry run)"
	}
	if resp != nil && resp.Info != "" {
		r.Description = resp.Info
	} else {
		r.Description = "Uninstallation complete"
	}
	r.Recovered = recovered
	return r, nil
}

// status reports the release's current revision and its history.
func (o *op) status() (*Result, error) {
	hist, err := o.history()
	if err != nil {
		return nil, err
	}
	if len(hist) == 0 {
		return nil, &ReleaseNotFoundError{Release: o.req.Release, Namespace: o.req.Namespace}
	}
	r := o.result(hist[len(hist)-1])
	for i := len(hist) - 1; i >= 0 && len(r.History) < maxHistory; i-- {
		h := hist[i]
		rev := Revision{Revision: h.Version, Status: h.Info.Status.String(), Description: h.Info.Description, Updated: stamp(h.Info.LastDeployed)}
		if h.Chart != nil && h.Chart.Metadata != nil {
			rev.ChartVersion = h.Chart.Metadata.Version
		}
		r.History = append(r.History, rev)
	}
	return r, nil
}
