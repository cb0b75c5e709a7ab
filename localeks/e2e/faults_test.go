package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// faultTimeout is the function's timeout in these tests: the template's
// default.
const faultTimeout = 30 * time.Second

// fault is one broken part of the replica, in force while during runs fn.
type fault struct {
	component string // as the error should name it
	mode      string
	during    func(t *testing.T, fn func())
	// names is what an Unavailable message must contain: the endpoint.
	names string
	// within bounds the invocation's time, generously: README says a
	// silent part is Unavailable after about 10 s, a stopped one after
	// under 0.2 s.
	within time.Duration
}

const (
	frozenWithin  = 15 * time.Second
	stoppedWithin = 2 * time.Second
)

// TestFaults freezes and stops STS, EKS and the API server on a cold and a
// warm invocation of a function that reaches its cluster by role chaining
// (so a cold start calls STS AssumeRole, then EKS DescribeCluster, then the
// API server). Each invocation must end before its deadline, either
// successfully (a warm invocation needs no AWS) or as Unavailable naming the
// endpoint that failed, or as Timeout only when the deadline truly came
// first. The error type, the message and the time taken are logged as a
// table at the end (go test -v).
func TestFaults(t *testing.T) {
	h := mustHarness(t)
	target := stack.TargetRoleARN(stack.TargetRole)
	h.mustTargetAccount(t)
	h.mapRole(t, target, targetUser+"{{SessionName}}")
	name := "nginx-faults-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })
	ensure := `{"action":"ensure-nginx","name":"` + name + `"}`

	shimFault := func(f shim.Faults) func(*testing.T, func()) {
		return func(t *testing.T, fn func()) {
			h.setFaults(t, f)
			fn()
			if err := h.stack.SetShimFaults(context.Background(), shim.Faults{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sts, eks := "https://sts."+stack.Region+".amazonaws.com", "https://eks."+stack.Region+".amazonaws.com"
	apiserver := h.stack.APIServerURL()
	var (
		stsFrozen   = fault{"STS", "frozen", shimFault(shim.Faults{STS: shim.Freeze}), sts, frozenWithin}
		stsUnreach  = fault{"STS", "CONNECT frozen", shimFault(shim.Faults{STS: shim.FreezeConnect}), sts, frozenWithin}
		stsStopped  = fault{"STS", "stopped", shimFault(shim.Faults{STS: shim.Close}), sts, stoppedWithin}
		eksFrozen   = fault{"EKS", "frozen", shimFault(shim.Faults{EKS: shim.Freeze}), eks, frozenWithin}
		eksUnreach  = fault{"EKS", "CONNECT frozen", shimFault(shim.Faults{EKS: shim.FreezeConnect}), eks, frozenWithin}
		eksStopped  = fault{"EKS", "stopped", shimFault(shim.Faults{EKS: shim.Close}), eks, stoppedWithin}
		apiFrozen   = fault{"API server", "frozen (SIGSTOP)", h.apiServerFrozen, apiserver, frozenWithin}
		apiStopped  = fault{"API server", "stopped", h.apiServerStopped, apiserver, stoppedWithin}
		unavailable = []string{"Unavailable"}
	)
	tests := []struct {
		fault
		warm bool
		want []string // error types allowed; nil: success
	}{
		{stsFrozen, false, unavailable},
		{stsUnreach, false, unavailable},
		{stsStopped, false, unavailable},
		{eksFrozen, false, unavailable},
		{eksUnreach, false, unavailable},
		{eksStopped, false, unavailable},
		{apiFrozen, false, unavailable},
		{apiStopped, false, unavailable},
		// Warm: the session, the cluster's endpoint and the token are at
		// hand, so AWS is not asked at all.
		{stsFrozen, true, nil},
		{stsStopped, true, nil},
		{eksFrozen, true, nil},
		{eksStopped, true, nil},
		{apiFrozen, true, unavailable},
		{apiStopped, true, unavailable},
	}

	var (
		mu    sync.Mutex
		table []string
	)
	t.Cleanup(func() {
		t.Logf("faults, function timeout %s:\n%-11s %-17s %-5s %-12s %9s  %s", faultTimeout,
			"component", "fault", "start", "result", "took", "message")
		for _, row := range table {
			t.Log(row)
		}
	})
	for _, tt := range tests {
		start := "cold"
		if tt.warm {
			start = "warm"
		}
		t.Run(fmt.Sprintf("%s %s %s", tt.component, tt.mode, start), func(t *testing.T) {
			fn := h.startFunction(t, fnOptions{role: stack.UnmappedRole, timeout: faultTimeout,
				env: []string{"ROLE_ARN=" + target, "ROLE_SESSION_NAME=faults-" + runID()}})
			if tt.warm {
				mustSucceed(t, fn, ensure)
			}
			var (
				took   time.Duration
				result = "success"
				msg    string
			)
			tt.during(t, func() {
				begin := time.Now()
				_, fnErr, err := fn.Invoke(context.Background(), []byte(ensure))
				took = time.Since(begin)
				if err != nil {
					t.Fatalf("invoke: %v", err)
				}
				if fnErr != nil {
					result, msg = fnErr.Type, fnErr.Message
				}
			})
			mu.Lock()
			table = append(table, fmt.Sprintf("%-11s %-17s %-5s %-12s %9s  %.160s", tt.component, tt.mode, start, result,
				took.Round(10*time.Millisecond), msg))
			mu.Unlock()

			if took >= faultTimeout {
				t.Errorf("the invocation took %s, not less than its %s timeout", took, faultTimeout)
			}
			if took >= tt.within {
				t.Errorf("the invocation took %s with %s %s, want under %s", took, tt.component, tt.mode, tt.within)
			}
			switch {
			case tt.want == nil && result != "success":
				t.Errorf("%s: %s, want success", result, msg)
			case tt.want != nil && !slices.Contains(tt.want, result):
				t.Errorf("%s after %s: %s, want one of %v", result, took, msg, tt.want)
			case result == "Unavailable" && !strings.Contains(msg, strings.TrimPrefix(tt.names, "https://")):
				t.Errorf("Unavailable message %q does not name %s", msg, tt.names)
			case result == "Timeout" && took < faultTimeout-2*time.Second:
				t.Errorf("Timeout after %s, long before the %s deadline", took, faultTimeout)
			}
		})
	}
}

// apiServerFrozen runs fn with the kube-apiserver stopped by SIGSTOP: it
// keeps its port and accepts connections (the kernel does), and answers
// nothing.
func (h *harness) apiServerFrozen(t *testing.T, fn func()) {
	b, err := os.ReadFile(h.stack.Paths.PID("kube-apiserver"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b, &pr); err != nil || pr.PID <= 0 {
		t.Fatalf("kube-apiserver pidfile %s: %v", b, err)
	}
	if err := syscall.Kill(pr.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Kill(pr.PID, syscall.SIGCONT); err != nil {
			t.Errorf("resume kube-apiserver: %v", err)
		}
	}()
	fn()
}

// apiServerStopped runs fn with the kube-apiserver process gone: its port
// refuses connections. It is restarted afterwards.
func (h *harness) apiServerStopped(t *testing.T, fn func()) {
	err := h.stack.WithAPIServerStopped(context.Background(), func() error {
		fn()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
