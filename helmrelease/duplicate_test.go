package helmrelease

import (
	"errors"
	"fmt"
	"testing"

	"helm.sh/helm/v4/pkg/storage/driver"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// TestDuplicateDeliveryErrors: what a concurrent duplicate of an action
// meets is told apart from real failures.
func TestDuplicateDeliveryErrors(t *testing.T) {
	t.Parallel()
	purge := errors.New(`uninstallation completed with 1 error(s): uninstall: Failed to purge the release: secrets "sh.helm.release.v1.demo.v1" not found`)
	for _, tc := range []struct {
		err          error
		busy, purged bool
	}{
		{fmt.Errorf("create: %w", driver.ErrReleaseExists), true, false},
		{errors.New("another operation (install/upgrade/rollback) is in progress"), true, false},
		{purge, false, true},
		{errors.New(`uninstallation completed with 2 error(s): uninstall: Failed to purge the release: secrets "x" not found; deployments "y" is forbidden`), false, false},
		{errors.New("uninstallation completed with 1 error(s): uninstall: Failed to purge the release: connection refused"), false, false},
		{errors.New("release: not found"), false, false},
	} {
		if got := busyProblem(tc.err); got != tc.busy {
			t.Errorf("busyProblem(%v) = %v, want %v", tc.err, got, tc.busy)
		}
		if got := purgedMeanwhile(tc.err); got != tc.purged {
			t.Errorf("purgedMeanwhile(%v) = %v, want %v", tc.err, got, tc.purged)
		}
	}
}

// TestWrittenMeanwhile: the Conflicts a Custom::HelmRelease waits out (a
// duplicate delivery writing the release) and the ones it answers.
func TestWrittenMeanwhile(t *testing.T) {
	t.Parallel()
	conflict := func(err error) error { return &invoke.Error{Code: invoke.Conflict, Err: err, Message: err.Error()} }
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{conflict(&ReleaseError{Release: "r", Err: fmt.Errorf("create: %w", driver.ErrReleaseExists)}), true},
		{conflict(&PendingError{Release: "r", Revision: 2, Status: "pending-upgrade"}), true},
		{conflict(errors.New("another operation (install/upgrade/rollback) is in progress")), true},
		{conflict(errors.New("Service web exists and cannot be imported into the current release")), false},
		{&invoke.Error{Code: invoke.Internal, Err: driver.ErrReleaseExists, Message: "x"}, false},
		{errors.New("release: already exists"), false},
	} {
		if got := writtenMeanwhile(tc.err); got != tc.want {
			t.Errorf("writtenMeanwhile(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
