package helmrelease

import (
	"context"
	"fmt"

	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	helmkube "helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
)

// upgrade installs the chart, or upgrades the release to it.
func (o *op) upgrade(ctx context.Context, ch *chartv2.Chart) (*Result, error) {
	hist, err := o.history()
	if err != nil {
		return nil, err
	}
	recovered, budget, err := o.begin(ctx, hist)
	if err != nil {
		return nil, err
	}
	install := len(hist) == 0 || hist[len(hist)-1].Info.Status == rcommon.StatusUninstalled
	if o.req.Atomic {
		// Keep half for undoing a failure.
		budget /= 2
	}
	var (
		res  any
		rerr error
	)
	if install {
		in := action.NewInstall(o.cfg)
		in.ReleaseName = o.req.Release
		in.Namespace = o.req.Namespace
		in.CreateNamespace = o.req.CreateNamespace
		in.DryRunStrategy = o.dryRun()
		in.WaitStrategy = o.waitStrategy()
		in.WaitForJobs = o.req.Wait != nil && o.req.Wait.On
		in.Timeout = budget
		in.Labels = o.labels()
		in.Replace = len(hist) > 0 // the name of an uninstalled release kept in history
		in.ServerSideApply = true
		res, rerr = in.RunWithContext(ctx, ch, o.req.Vals)
	} else {
		up := action.NewUpgrade(o.cfg)
		up.Namespace = o.req.Namespace
		up.DryRunStrategy = o.dryRun()
		up.WaitStrategy = o.waitStrategy()
		up.WaitForJobs = o.req.Wait != nil && o.req.Wait.On
		up.Timeout = budget
		up.Labels = o.labels()
		up.MaxHistory = maxHistory
		// The event's values are the release's values, as a template's
		// properties are a resource's: nothing is carried over.
		up.ResetValues = true
		up.ServerSideApply = "auto"
		res, rerr = up.RunWithContext(ctx, o.req.Release, ch, o.req.Vals)
	}
	if rerr != nil {
		return nil, o.failed(ctx, res, rerr, install, recovered)
	}
	rel, err := v1(res)
	if err != nil {
		return nil, err
	}
	r := o.result(rel)
	r.Recovered = recovered
	if o.req.DryRun {
		r.Manifest = rel.Manifest
		if len(r.Manifest) > maxManifestBytes {
			r.Manifest = r.Manifest[:maxManifestBytes] + "\n# [trimmed]"
		}
	}
	return r, nil
}

// failed words an install or upgrade failure. A render or validation
// failure wrote nothing and is returned as it is; a failure after the
// revision was written is a ReleaseError naming the revision's final
// status, after undoing it when the event is atomic.
func (o *op) failed(ctx context.Context, res any, err error, install bool, recovered string) error {
	rel, _ := v1(res)
	if rel == nil || rel.Info == nil || o.req.DryRun {
		return err
	}
	stored, gerr := o.cfg.Releases.Get(rel.Name, rel.Version)
	if gerr != nil {
		// Not written: the failure came before the revision.
		return err
	}
	if s, serr := v1(stored); serr == nil {
		rel = s
	}
	re := &ReleaseError{Release: rel.Name, Namespace: rel.Namespace, Revision: rel.Version, Status: rel.Info.Status.String(), Err: err}
	if recovered != "" {
		re.Then = "before it, " + recovered
	}
	if !o.req.Atomic {
		return re
	}
	budget, berr := o.budget(ctx)
	if berr != nil {
		re.Then = "atomic: no time left to undo it; the next helm-upgrade or helm-rollback starts from it"
		return re
	}
	if install {
		un := action.NewUninstall(o.cfg)
		un.WaitStrategy = helmkube.HookOnlyStrategy
		un.Timeout = budget
		un.IgnoreNotFound = true
		if _, uerr := un.Run(rel.Name); uerr != nil {
			re.Then = "atomic: uninstalling it failed too: " + uerr.Error()
			return re
		}
		re.Status, re.Then = "uninstalled", "atomic: uninstalled"
		return re
	}
	rb := action.NewRollback(o.cfg)
	rb.Version = 0
	if prev := o.lastDeployedBefore(rel.Version); prev > 0 {
		rb.Version = prev
	}
	rb.WaitStrategy = o.waitStrategy()
	rb.WaitForJobs = o.req.Wait != nil && o.req.Wait.On
	rb.Timeout = budget
	rb.MaxHistory = maxHistory
	rb.ServerSideApply = "auto"
	if rerr := rb.Run(rel.Name); rerr != nil {
		re.Then = "atomic: rolling back failed too: " + rerr.Error()
		return re
	}
	re.Then = fmt.Sprintf("atomic: rolled back to revision %d", rb.Version)
	return re
}

// lastDeployedBefore is the newest revision before rev that was deployed
// (deployed or superseded), or 0.
func (o *op) lastDeployedBefore(rev int) int {
	hist, err := o.history()
	if err != nil {
		return 0
	}
	for i := len(hist) - 1; i >= 0; i-- {
		h := hist[i]
		if h.Version < rev && (h.Info.Status == rcommon.StatusDeployed || h.Info.Status == rcommon.StatusSuperseded) {
			return h.Version
		}
	}
	return 0
}
