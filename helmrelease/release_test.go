package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	rspb "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func awsConfig(region string) aws.Config { return aws.Config{Region: region} }

func memoryOp(t *testing.T, now time.Time, revs ...*rspb.Release) *op {
	t.Helper()
	cfg := action.NewConfiguration()
	cfg.Releases = storage.Init(driver.NewMemory())
	for _, r := range revs {
		if err := cfg.Releases.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	return &op{req: Request{Event: Event{Release: "web", Namespace: "default"}}, cfg: cfg,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: func() time.Time { return now }}
}

func rev(v int, status rcommon.Status, deployed time.Time, labels map[string]string) *rspb.Release {
	return &rspb.Release{Name: "web", Namespace: "default", Version: v, Labels: labels,
		Info:  &rspb.Info{Status: status, LastDeployed: deployed},
		Chart: &chartv2.Chart{Metadata: &chartv2.Metadata{Name: "demo", Version: "0.1.0"}}}
}

func TestRecoverPending(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	deadline := func(d time.Duration) map[string]string {
		return map[string]string{DeadlineLabel: strconv64(now.Add(d).Unix())}
	}
	for _, tc := range []struct {
		name      string
		last      *rspb.Release
		recovered bool
		conflict  bool
	}{
		{"deployed is left alone", rev(2, rcommon.StatusDeployed, now, nil), false, false},
		{"failed is left alone", rev(2, rcommon.StatusFailed, now, nil), false, false},
		{"pending-upgrade past its deadline", rev(2, rcommon.StatusPendingUpgrade, now.Add(-time.Minute), deadline(-time.Second)), true, false},
		{"pending-install past its deadline", rev(2, rcommon.StatusPendingInstall, now.Add(-time.Minute), deadline(-time.Second)), true, false},
		{"pending-rollback past its deadline", rev(2, rcommon.StatusPendingRollback, now.Add(-time.Minute), deadline(-time.Second)), true, false},
		{"uninstalling past its deadline", rev(2, rcommon.StatusUninstalling, now.Add(-time.Minute), deadline(-time.Second)), true, false},
		{"pending-upgrade before its deadline", rev(2, rcommon.StatusPendingUpgrade, now.Add(-time.Minute), deadline(time.Second)), false, true},
		{"foreign pending, recent", rev(2, rcommon.StatusPendingUpgrade, now.Add(-time.Minute), nil), false, true},
		{"foreign pending, older than any invocation", rev(2, rcommon.StatusPendingUpgrade, now.Add(-16*time.Minute), nil), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := memoryOp(t, now, rev(1, rcommon.StatusSuperseded, now.Add(-time.Hour), nil), tc.last)
			hist, err := o.history()
			if err != nil {
				t.Fatal(err)
			}
			msg, rerr := o.recoverPending(context.Background(), hist)
			var pending *PendingError
			if got := errors.As(rerr, &pending); got != tc.conflict {
				t.Fatalf("conflict %v (%v), want %v", got, rerr, tc.conflict)
			}
			if (msg != "") != tc.recovered {
				t.Fatalf("recovered %q, want %v", msg, tc.recovered)
			}
			stored, err := o.cfg.Releases.Get("web", 2)
			if err != nil {
				t.Fatal(err)
			}
			got := stored.(*rspb.Release).Info.Status
			want := tc.last.Info.Status
			if tc.recovered {
				want = rcommon.StatusFailed
			}
			if got != want {
				t.Errorf("status %s, want %s", got, want)
			}
			if tc.conflict {
				if e := classify(context.Background(), rerr, invoke.Diagnosis{Access: access}); e.Code != invoke.Conflict {
					t.Errorf("code %s, want Conflict", e.Code)
				}
			}
		})
	}
}

func TestLastDeployedBefore(t *testing.T) {
	t.Parallel()
	now := time.Now()
	o := memoryOp(t, now, rev(1, rcommon.StatusSuperseded, now, nil), rev(2, rcommon.StatusFailed, now, nil),
		rev(3, rcommon.StatusDeployed, now, nil), rev(4, rcommon.StatusFailed, now, nil))
	for rev, want := range map[int]int{4: 3, 3: 1, 2: 1, 1: 0} {
		if got := o.lastDeployedBefore(rev); got != want {
			t.Errorf("before %d: %d, want %d", rev, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	ref := ChartRef{Repository: "https://x.example", Name: "demo", Version: "9.9.9"}
	for _, tc := range []struct {
		name string
		err  error
		code invoke.Code
		says string
	}{
		{"chart not found", &ChartNotFoundError{Ref: ref, Problem: "no such version"}, invoke.NotFound, "nothing was changed"},
		{"registry refuses", &RepositoryError{Ref: ref, Status: 401, Err: errors.New("unauthorized")}, invoke.Forbidden, "REGISTRY_CREDENTIALS"},
		{"registry fails", &RepositoryError{Ref: ref, Status: 503, Err: errors.New("unavailable")}, invoke.Unavailable, "later"},
		{"not a repository", &RepositoryError{Ref: ref, Err: errors.New("not an index")}, invoke.InvalidEvent, "not an index"},
		{"wait ran out", &ReleaseError{Release: "web", Namespace: "default", Revision: 2, Status: "failed", Err: context.DeadlineExceeded},
			invoke.Timeout, "revision 2 is failed"},
		{"wait ran out, helm's words", &ReleaseError{Release: "web", Namespace: "default", Revision: 2, Status: "failed",
			Err: errors.New("resource Deployment/default/web not ready. status: InProgress: context deadline exceeded")}, invoke.Timeout, "next helm-upgrade"},
		{"schema", errors.New("values don't meet the specifications of the schema(s) in the following chart(s):\ndemo:\n- at '/replicaCount': got string, want integer"),
			invoke.InvalidEvent, "replicaCount"},
		{"template", errors.New(`execution error at (demo/templates/configmap.yaml:6:12): message is required`), invoke.InvalidEvent, "message is required"},
		{"ownership", errors.New(`Unable to continue with install: ConfigMap "x" in namespace "default" exists and cannot be imported into the current release: invalid ownership metadata`),
			invoke.Conflict, "another release"},
		{"pending, seen by a dry run", errors.New("another operation (install/upgrade/rollback) is in progress"), invoke.Conflict, "try again"},
		{"no release", &ReleaseNotFoundError{Release: "web", Namespace: "default"}, invoke.NotFound, "not found"},
		{"no revision", errNoTarget, invoke.NotFound, "helm-status"},
		{"unknown", errors.New("boom"), invoke.Internal, "boom"},
		{"rbac", apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "apps",
			errors.New(`User "lambda:x" cannot create resource "namespaces" in API group "" at the cluster scope`)), invoke.Forbidden, "group lambda-eks-helm"},
		{"401", apierrors.NewUnauthorized("Unauthorized"), invoke.Unauthorized,
			"map the function's role to the Kubernetes group lambda-eks-helm, with an EKS access entry (template.yml, HelmFunction=true with AccessMode=access-entry)"},
		{"401 during a wait", &ReleaseError{Release: "web", Namespace: "default", Revision: 2, Status: "failed", Err: fmt.Errorf("wait: %w", apierrors.NewUnauthorized("Unauthorized"))},
			invoke.Unauthorized, "revision 2 is failed"},
		{"admission policy", apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "x",
			errors.New(`admission webhook "deny.example.com" denied the request`)), invoke.Forbidden, "this is not RBAC"},
		{"install raced", errors.New("cannot reuse a name that is still in use"), invoke.Conflict, "another invocation or helm"},
		{"wait interrupted", &ReleaseError{Release: "web", Namespace: "default", Revision: 2, Status: "failed", Err: fmt.Errorf("poll: %w", wait.ErrorInterrupted(errors.New("timed out")))},
			invoke.Timeout, "revision 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := classify(context.Background(), tc.err, invoke.Diagnosis{Cluster: "demo", Access: access})
			if e.Code != tc.code || !strings.Contains(e.Message, tc.says) {
				t.Errorf("got %s %q, want %s saying %q", e.Code, e.Message, tc.code, tc.says)
			}
		})
	}
}

func strconv64(n int64) string { return strconv.FormatInt(n, 10) }
