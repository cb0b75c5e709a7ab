package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// classify maps err to an *invoke.Error: the Helm function's own errors
// first, then the framework's mapping (auth, Kubernetes, transport), worded
// for d.
func classify(ctx context.Context, err error, d invoke.Diagnosis) *invoke.Error {
	var (
		e        *invoke.Error
		notFound *ChartNotFoundError
		repoErr  *RepositoryError
		pending  *PendingError
		relErr   *ReleaseError
		noRel    *ReleaseNotFoundError
		su       *SupersededError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &notFound):
		return &invoke.Error{Code: invoke.NotFound, Err: err, Message: notFound.Error() + "; check chart, version and repository; nothing was changed"}
	case errors.As(err, &su):
		return &invoke.Error{Code: invoke.Conflict, Err: err, Message: su.Error() + "; the job waits on its own revision only"}
	case errors.As(err, &noRel):
		return &invoke.Error{Code: invoke.NotFound, Err: err, Message: noRel.Error()}
	case errors.Is(err, errNoTarget):
		return &invoke.Error{Code: invoke.NotFound, Err: err, Message: err.Error() + "; see helm-status for the history"}
	case errors.As(err, &pending):
		return &invoke.Error{Code: invoke.Conflict, Err: err, Message: pending.Error() + "; try again after that time (a revision still pending then is recovered)"}
	case errors.As(err, &repoErr) && (repoErr.Status == http.StatusUnauthorized || repoErr.Status == http.StatusForbidden):
		return &invoke.Error{Code: invoke.Forbidden, Err: err, Message: repoErr.Error() +
			"; the repository refused the function's credentials: set them in REGISTRY_CREDENTIALS (host: user:password), or for ECR grant ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the repository (template.yml, HelmEcrRepositoryArns)"}
	case errors.As(err, &repoErr) && repoErr.Status >= 500:
		return &invoke.Error{Code: invoke.Unavailable, Err: err, Message: repoErr.Error() + "; try again later"}
	case errors.As(err, &repoErr):
		return &invoke.Error{Code: invoke.InvalidEvent, Err: err, Message: repoErr.Error() + "; nothing was changed"}
	case errors.As(err, &relErr):
		// The revision's failure: a wait that ran out is Timeout, anything
		// else is coded as the framework codes it.
		code := invoke.Timeout
		if !timedOut(relErr.Err) {
			code = classify(ctx, relErr.Err, d).Code
		}
		what := "; the next helm-upgrade starts from it"
		if relErr.Then != "" {
			what = ""
		}
		return &invoke.Error{Code: code, Err: err, Message: invoke.Redact(relErr.Error()) + what}
	case isRBACRefusal(err):
		return &invoke.Error{Code: invoke.Forbidden, Err: err, Message: fmt.Sprintf(
			"%s: RBAC refused it (403); grant it to the Kubernetes group %s: permissions.yml's Role %s in the release's namespace (add the kinds the chart holds), "+
				"or a ClusterRole for cluster-scoped kinds and createNamespace (see permissions-cluster.yml)", invoke.Redact(err.Error()), Group, Group)}
	case renderProblem(err):
		return &invoke.Error{Code: invoke.InvalidEvent, Err: err, Message: invoke.Redact(err.Error()) + "; fix the values or the chart version; nothing was changed"}
	case busyProblem(err):
		return &invoke.Error{Code: invoke.Conflict, Err: err, Message: invoke.Redact(err.Error()) +
			"; another invocation or helm is working on the release: try again when it is done (helm-status shows it)"}
	case ownershipProblem(err):
		return &invoke.Error{Code: invoke.Conflict, Err: err, Message: invoke.Redact(err.Error()) +
			"; an object of the chart belongs to another release or was made without Helm; nothing was changed"}
	}
	return invoke.Classify(ctx, err, d)
}

// isRBACRefusal reports a 403 of RBAC, not of an admission policy.
func isRBACRefusal(err error) bool {
	_, ok := invoke.RBACVerb(err)
	return ok
}

// timedOut reports a wait that ran out of time: the context's error, or
// the apimachinery poll's, in the chain; else Helm's words, for the waits
// whose error Helm returns as text.
func timedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || wait.Interrupted(err) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"context deadline exceeded", "timed out waiting", "timeout waiting"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// Helm returns the refusals below as plain errors of its own words (its
// error values, such as action's errPending, are unexported), so they are
// matched on those words.

// renderProblem reports whether err is Helm refusing the chart and values
// before writing anything: a values schema, a template, or a manifest the
// cluster's kinds cannot take.
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
// install that raced this one (Helm v4 says "reuse", v3 said "re-use").
func busyProblem(err error) bool {
	msg := err.Error()
	// ErrReleaseExists: another invocation (a duplicate delivery) stored the
	// revision this one was about to write.
	return errors.Is(err, driver.ErrReleaseExists) ||
		strings.Contains(msg, "another operation (install/upgrade/rollback) is in progress") ||
		strings.Contains(msg, "cannot reuse a name that is still in use") ||
		strings.Contains(msg, "cannot re-use a name that is still in use")
}
