package helmrelease

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	helmkube "helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	rspb "helm.sh/helm/v4/pkg/release/v1"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// A CodePipeline job's wait may outlast an invocation, and Helm's own
// (--wait) may not: a revision Helm writes stays pending-install or
// pending-upgrade until its wait ends, and an invocation killed meanwhile
// leaves the release locked ("another operation is in progress") until
// recoverPending marks it failed. So the job installs or upgrades without
// Helm's wait (hooks still run and are waited for, within the invocation):
// the revision is stored deployed when the invocation that wrote it
// answers. The readiness of the revision's resources is then checked with
// Helm's own waiter (kstatus, jobs included, as helm --wait
// --wait-for-jobs checks it), read-only and resumable: an invocation that
// ends first answers with a continuationToken holding the revision, and
// the next waits on that revision's resources, read from its record (the
// artifact is not read again, nothing is written again). A rollout that
// fails, or outlasts the job's wait, marks the revision failed, as Helm's
// wait would have (and, with atomic, rolls it back or uninstalls it).

// RolloutFailed is a job whose release's resources reached a failed state
// (kstatus Failed: a Deployment past its progress deadline, a failed Job).
const RolloutFailed invoke.Code = "RolloutFailed"

// readiness is what one wait on a revision saw.
type readiness struct {
	rel   *rspb.Release // the revision waited on
	ready bool
	// notReady is the waiter's account of what is not ready yet (when the
	// bound came first).
	notReady string
}

// SupersededError is a revision the job waits on that another owner's
// revision has replaced.
type SupersededError struct {
	Release, Namespace string
	Revision, By       int
}

func (e *SupersededError) Error() string {
	return fmt.Sprintf("release %s in namespace %s: revision %d, which this job wrote, was superseded by revision %d of another owner",
		e.Release, e.Namespace, e.Revision, e.By)
}

// revisionToWait is the revision rev of the release, or the newest when
// that is the same owner's (a duplicate delivery of the job upgraded
// again).
func (o *op) revisionToWait(rev int) (*rspb.Release, error) {
	hist, err := o.history()
	if err != nil {
		return nil, err
	}
	if len(hist) == 0 {
		return nil, &ReleaseNotFoundError{Release: o.req.Release, Namespace: o.req.Namespace}
	}
	last := hist[len(hist)-1]
	if last.Version > rev {
		if last.Labels[OwnerLabel] != o.owner {
			return nil, &SupersededError{Release: last.Name, Namespace: last.Namespace, Revision: rev, By: last.Version}
		}
		return last, nil
	}
	for _, r := range hist {
		if r.Version == rev {
			return r, nil
		}
	}
	return nil, fmt.Errorf("release %s has no revision %d: %w", o.req.Release, rev, errNoTarget)
}

// waitReady waits up to bound for the resources of revision rev to be
// ready, with Helm's kstatus waiter. An error is a rollout that failed
// (a resource in a terminal failed state) or one that could not be checked.
func (o *op) waitReady(ctx context.Context, rev int, bound time.Duration) (readiness, error) {
	rel, err := o.revisionToWait(rev)
	if err != nil {
		return readiness{}, err
	}
	r := readiness{rel: rel}
	if rel.Info != nil && rel.Info.Status == rcommon.StatusFailed {
		return r, &ReleaseError{Release: rel.Name, Namespace: rel.Namespace, Revision: rel.Version, Status: rel.Info.Status.String(),
			Err: errors.New(invoke.Or(rel.Info.Description, "the revision failed"))}
	}
	resources, err := o.cfg.KubeClient.Build(bytes.NewBufferString(rel.Manifest), false)
	if err != nil {
		return r, fmt.Errorf("the resources of revision %d of release %s: %w", rel.Version, rel.Name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	var waiter helmkube.Waiter
	if kc, ok := o.cfg.KubeClient.(helmkube.InterfaceWaitOptions); ok {
		waiter, err = kc.GetWaiterWithOptions(helmkube.StatusWatcherStrategy, helmkube.WithWaitContext(wctx))
	} else {
		waiter, err = o.cfg.KubeClient.GetWaiter(helmkube.StatusWatcherStrategy)
	}
	if err != nil {
		return r, err
	}
	err = waiter.WaitWithJobs(resources, bound)
	switch {
	case err == nil:
		r.ready = true
		return r, nil
	case wctx.Err() != nil:
		// The bound came first: not ready yet.
		r.notReady = invoke.Redact(err.Error())
		return r, nil
	}
	return r, err
}

// rolloutFailed marks the revision failed (when it is still the newest and
// deployed: Helm's wait would have ended it so), undoes it when the job is
// atomic, and returns the job's error: RolloutFailed, or Timeout when the
// job's wait ran out.
func (o *op) rolloutFailed(ctx context.Context, rel *rspb.Release, cause error, timedOut bool) error {
	why := "the resources did not become ready: " + invoke.Redact(cause.Error())
	if timedOut {
		why = "the resources were not ready when the job's wait ran out: " + invoke.Redact(cause.Error())
	}
	if hist, err := o.history(); err == nil && len(hist) > 0 {
		last := hist[len(hist)-1]
		if last.Version == rel.Version && last.Info != nil && last.Info.Status == rcommon.StatusDeployed {
			last.Info.Status = rcommon.StatusFailed
			last.Info.Description = "lambda-eks: " + truncate(why, 1000)
			if err := o.cfg.Releases.Update(last); err != nil {
				o.log.WarnContext(ctx, "mark revision failed", "release", last.Name, "revision", last.Version, "error", err.Error())
			}
		}
	}
	install := o.lastDeployedBefore(rel.Version) == 0
	err := o.failed(ctx, rel, errors.New(why), install, "")
	code := RolloutFailed
	if timedOut {
		code = invoke.Timeout
	}
	msg := invoke.Redact(err.Error())
	var re *ReleaseError
	if errors.As(err, &re) && re.Then == "" {
		msg += "; the next job (or helm-upgrade) starts from it"
	}
	return &invoke.Error{Code: code, Err: err, Message: msg}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + " ..."
	}
	return s
}
