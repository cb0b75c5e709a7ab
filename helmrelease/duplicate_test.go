package helmrelease

import (
	"errors"
	"fmt"
	"testing"

	"helm.sh/helm/v4/pkg/storage/driver"
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
