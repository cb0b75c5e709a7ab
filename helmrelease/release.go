package helmrelease

import (
	"fmt"
	"time"
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

// logAttrs are what the log of a finished invocation says of r.
func (r *Result) logAttrs() []any {
	return []any{"action", r.Action, "release", r.Release, "namespace", r.Namespace, "revision", r.Revision, "status", r.Status}
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
