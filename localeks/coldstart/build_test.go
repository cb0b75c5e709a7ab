package coldstart

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// bootstraps builds each bootstrap once per test binary, as the functions
// are built (build-handler.sh: static, -tags lambda.norpc, -s -w).
var bootstraps = struct {
	sync.Mutex
	dir   string
	paths map[string]string
}{paths: map[string]string{}}

// bootstrap returns the path of the named bootstrap: "main", "helm" or
// "bare", building it first.
func bootstrap(tb testing.TB, name string) string {
	tb.Helper()
	bootstraps.Lock()
	defer bootstraps.Unlock()
	if p, ok := bootstraps.paths[name]; ok {
		return p
	}
	// A given bootstrap instead of the checkout's (to measure another
	// build): COLDSTART_MAIN, COLDSTART_HELM, COLDSTART_LIFECYCLE, COLDSTART_BARE.
	if p := os.Getenv("COLDSTART_" + strings.ToUpper(name)); p != "" {
		bootstraps.paths[name] = p
		return p
	}
	if bootstraps.dir == "" {
		dir, err := os.MkdirTemp("", "lambda-eks-coldstart-")
		if err != nil {
			tb.Fatal(err)
		}
		bootstraps.dir = dir
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(bootstraps.dir, name)
	var cmd *exec.Cmd
	switch name {
	case "main":
		cmd = exec.Command(filepath.Join(root, "build-handler.sh"), out, ".") //nolint:gosec // G204: the checkout's build script
	case "helm":
		cmd = exec.Command(filepath.Join(root, "build-handler.sh"), out, "./cmd/helm") //nolint:gosec // G204: the checkout's build script
	case "lifecycle":
		cmd = exec.Command(filepath.Join(root, "build-handler.sh"), out, "./cmd/lifecycle") //nolint:gosec // G204: the checkout's build script
	case "bare":
		cmd = exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/bare") //nolint:gosec // G204: a temporary path
		cmd.Dir = filepath.Join(root, "localeks")
	default:
		tb.Fatalf("no bootstrap %q", name)
	}
	if cmd.Dir == "" {
		cmd.Dir = root
	}
	cmd.Env = append(os.Environ(), "GOARCH="+runtime.GOARCH, "GOOS=linux", "CGO_ENABLED=0", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("build %s: %v\n%s", name, err, stderr.Bytes())
	}
	bootstraps.paths[name] = out
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bootstraps.dir != "" {
		_ = os.RemoveAll(bootstraps.dir)
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "coldstart: failed")
	}
	os.Exit(code)
}
