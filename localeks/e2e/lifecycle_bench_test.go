package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubectlVersion is the Kubernetes release of the replica's parts
// (localeks/parts/kube/go.mod), whose kubectl drain the benchmark runs.
const kubectlVersion = "v1.36.3"

var kubectlBin struct {
	once sync.Once
	path string
	err  error
}

// kubectlOfReplica returns a kubectl of the replica's Kubernetes version:
// LOCALEKS_KUBECTL, or k8s.io/kubernetes/cmd/kubectl built once from the
// parts module (with copies of its go.mod and go.sum, which stay as they
// are) into the cache, outside the checkout.
func (h *harness) kubectlOfReplica(tb testing.TB) string {
	tb.Helper()
	kubectlBin.once.Do(func() {
		if p := os.Getenv("LOCALEKS_KUBECTL"); p != "" {
			kubectlBin.path = p
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			kubectlBin.err = err
			return
		}
		kubectlBin.path = filepath.Join(cache, "lambda-eks", "tools", "kubectl-"+kubectlVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH, "kubectl")
		if _, err := os.Stat(kubectlBin.path); err == nil {
			return
		}
		mod := filepath.Join(h.root, "localeks", "parts", "kube")
		tmp, err := os.MkdirTemp("", "kubectl-mod-")
		if err != nil {
			kubectlBin.err = err
			return
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		for _, f := range []string{"go.mod", "go.sum"} {
			b, err := os.ReadFile(filepath.Join(mod, f)) //nolint:gosec // G304: the repository's own module
			if err == nil {
				err = os.WriteFile(filepath.Join(tmp, f), b, 0o600)
			}
			if err != nil {
				kubectlBin.err = err
				return
			}
		}
		fmt.Fprintf(os.Stderr, "e2e: building kubectl %s for the drain benchmark (once, a few minutes)\n", kubectlVersion)
		start := time.Now()
		_, kubectlBin.err = output(mod, []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"}, "go", "build", "-trimpath",
			"-modfile="+filepath.Join(tmp, "go.mod"), "-o", kubectlBin.path, "k8s.io/kubernetes/cmd/kubectl")
		fmt.Fprintf(os.Stderr, "e2e: built kubectl (%s)\n", time.Since(start).Round(time.Second))
	})
	if kubectlBin.err != nil {
		tb.Fatalf("kubectl %s: %v", kubectlVersion, kubectlBin.err)
	}
	return kubectlBin.path
}

// BenchmarkDrain30Pods drains a node of 30 pods (a Deployment's, 1 s grace
// periods; the pods reschedule on a second node) with the lifecycle
// function, on a terminate lifecycle action through to its CONTINUE, and
// with `kubectl drain --ignore-daemonsets --delete-emptydir-data --force`
// of the replica's Kubernetes version, on the same replica in the same
// run; the function polls at its default, 1 s, as kubectl drain's wait
// does. Each iteration's setup (nodes, pods Ready) is outside the timer;
// the drain to its end is inside. Report the two as a ratio:
//
//	go test -run '^$' -bench BenchmarkDrain30Pods -benchtime 3x ./e2e/
func BenchmarkDrain30Pods(b *testing.B) {
	h := mustHarness(b)
	const pods = 30
	setup := func(b *testing.B, test string) (node, instance string) {
		b.Helper()
		ns := h.lifecycleNamespace(b, test)
		nodes, insts := h.testNodes(b, test, 2)
		h.cordon(b, nodes[1], true)
		h.testWorkload(b, ns, test, pods, -1)
		h.cordon(b, nodes[1], false)
		return nodes[0], insts[0]
	}
	b.Run("lambda-eks", func(b *testing.B) {
		fn := h.startLifecycle(b, 120*time.Second, "POLL_INTERVAL=1s") // the default, as deployed
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			node, inst := setup(b, fmt.Sprintf("bl%d", i))
			ev, _ := terminateEvent(b, h, inst)
			b.StartTimer()
			r := lifecycleOK(b, fn, ev)
			b.StopTimer()
			if r.Nodes[0].State != "drained" || r.Nodes[0].Evicted != pods || r.Nodes[0].Node != node {
				b.Fatalf("drain: %+v", r)
			}
			b.StartTimer()
		}
	})
	b.Run("kubectl-drain", func(b *testing.B) {
		kubectl := h.kubectlOfReplica(b)
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			node, _ := setup(b, fmt.Sprintf("bk%d", i))
			cmd := exec.Command(kubectl, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force", //nolint:gosec // G204: the built kubectl
				"--kubeconfig", h.stack.Paths.AdminKubeconfig(), "--timeout", "120s")
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			b.StartTimer()
			err := cmd.Run()
			b.StopTimer()
			if err != nil {
				b.Fatalf("kubectl drain: %v\n%s", err, out.String())
			}
			left, err := h.admin.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
			if err != nil || len(left.Items) != 0 {
				b.Fatalf("kubectl drain left %d pods: %v", len(left.Items), err)
			}
			b.StartTimer()
		}
	})
}
