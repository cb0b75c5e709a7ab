package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	helmkube "helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	rspb "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
)

// DeadlineLabel is set on every release revision this function writes: the
// Unix time (seconds) of the invocation's deadline, after which Lambda has
// certainly ended it. A revision still pending after that was left by an
// invocation that was killed, and is recovered (see recoverPending).
const DeadlineLabel = "lambda-eks.io/deadline"

// OwnerLabel names, on the revisions a Custom::HelmRelease writes, the
// resource (the hash that ends its PhysicalResourceId). Its Delete
// uninstalls a release only while the newest revision carries its own.
const OwnerLabel = "lambda-eks.io/owner"

// Timing of Helm's own timeouts within the invocation.
const (
	// helmMargin is kept between the end of Helm's timeout and the
	// handler's deadline: time to record the revision as failed and answer.
	helmMargin = 2 * time.Second
	// minBudget is the least time worth starting a write with.
	minBudget = time.Second
	// foreignPending is how long a pending revision without DeadlineLabel
	// (written by the helm CLI or another tool) is presumed alive: no
	// Lambda invocation lasts longer.
	foreignPending = 15 * time.Minute
	// maxHistory bounds the revisions (Secrets) kept per release.
	maxHistory = 10
	// maxManifestBytes bounds the manifest a dry run returns.
	maxManifestBytes = 4 << 20
)

// Result is a successful invocation's response.
type Result struct {
	Cluster      string `json:"cluster"`
	Action       string `json:"action"`
	Release      string `json:"release"`
	Namespace    string `json:"namespace"`
	Revision     int    `json:"revision,omitempty"`
	Status       string `json:"status"`
	Chart        string `json:"chart,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	AppVersion   string `json:"appVersion,omitempty"`
	Description  string `json:"description,omitempty"`
	Updated      string `json:"updated,omitempty"`
	DryRun       bool   `json:"dryRun,omitempty"`
	// Manifest is the rendered manifest of a dry run.
	Manifest string `json:"manifest,omitempty"`
	Notes    string `json:"notes,omitempty"`
	// Recovered says which pending revision, left by an invocation that was
	// killed, was marked failed before the action.
	Recovered string `json:"recovered,omitempty"`
	// History is the release's revisions, newest first (helm-status).
	History []Revision `json:"history,omitempty"`
}

// Revision is one entry of a release's history.
type Revision struct {
	Revision     int    `json:"revision"`
	Status       string `json:"status"`
	ChartVersion string `json:"chartVersion,omitempty"`
	Updated      string `json:"updated,omitempty"`
	Description  string `json:"description,omitempty"`
}

// ReleaseError is an action that wrote a revision and failed: the revision
// is recorded failed (or rolled back, or uninstalled with atomic), never
// left pending.
type ReleaseError struct {
	Release   string
	Namespace string
	Revision  int
	Status    string // of the revision after the failure
	// Then says what happened after the failure (atomic).
	Then string
	Err  error
}

func (e *ReleaseError) Error() string {
	s := fmt.Sprintf("release %s in namespace %s", e.Release, e.Namespace)
	if e.Revision > 0 {
		s += fmt.Sprintf(" revision %d", e.Revision)
	}
	if e.Status != "" {
		s += " is " + e.Status
	}
	s += ": " + e.Err.Error()
	if e.Then != "" {
		s += "; " + e.Then
	}
	return s
}

func (e *ReleaseError) Unwrap() error { return e.Err }

// PendingError is a release that another invocation is working on now.
type PendingError struct {
	Release, Namespace string
	Revision           int
	Status             string
	Until              time.Time
}

func (e *PendingError) Error() string {
	return fmt.Sprintf("release %s in namespace %s revision %d is %s by an invocation that may run until %s",
		e.Release, e.Namespace, e.Revision, e.Status, e.Until.UTC().Format(time.RFC3339))
}

// ReleaseNotFoundError is a release that does not exist (rollback, status).
type ReleaseNotFoundError struct{ Release, Namespace string }

func (e *ReleaseNotFoundError) Error() string {
	return fmt.Sprintf("release %s not found in namespace %s", e.Release, e.Namespace)
}

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

// budget is how long Helm may take, waits included: until the handler's
// deadline less helmMargin, and at most the event's wait.
func (o *op) budget(ctx context.Context) (time.Duration, error) {
	b := 15 * time.Minute
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
func (o *op) recoverPending(hist []*rspb.Release) (string, error) {
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
	o.log.Warn("recovered pending release", "release", last.Name, "namespace", last.Namespace, "revision", last.Version,
		"was", string(was))
	return msg, nil
}

// begin readies an action on a release whose history is hist: a pending
// revision that an ended invocation left is marked failed (not in a dry
// run), and the action's time is budgeted.
func (o *op) begin(ctx context.Context, hist []*rspb.Release) (recovered string, budget time.Duration, err error) {
	if !o.req.DryRun {
		if recovered, err = o.recoverPending(hist); err != nil {
			return "", 0, err
		}
	}
	budget, err = o.budget(ctx)
	return recovered, budget, err
}

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

// renderProblem reports whether err is Helm refusing the chart and values
// before writing anything: a values schema, a template, or a manifest the
// cluster's kinds cannot take. It is matched on Helm's words: Helm returns
// these as plain errors.
func renderProblem(err error) bool {
	msg := err.Error()
	for _, s := range []string{
		"values don't meet the specifications of the schema",
		"execution error at",
		"template: ",
		"parse error",
		"unable to build kubernetes objects from new release manifest",
		"error converting YAML to JSON",
		"YAML parse error",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// ownershipProblem reports whether err is Helm refusing to adopt objects
// another release or tool owns.
func ownershipProblem(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "invalid ownership metadata") || strings.Contains(msg, "that already exists")
}

// busyProblem reports Helm refusing a release another operation holds: a
// pending revision (a dry run does not recover it) or a name taken by an
// install that raced this one.
func busyProblem(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "another operation (install/upgrade/rollback) is in progress") ||
		strings.Contains(msg, "cannot re-use a name that is still in use")
}
