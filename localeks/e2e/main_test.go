// Package e2e proves the function's claims end to end: the real bootstrap,
// built by ../../build-handler.sh for this machine, runs under AWS's Lambda
// Runtime Interface Emulator (aws-lambda-rie) against the local EKS replica
// (kube-apiserver with RBAC, aws-iam-authenticator, moto behind the shim).
//
// TestMain builds what is missing and starts the stack, or reuses a healthy
// one. A stack that cannot start fails the run; only -short skips it.
// LOCALEKS_BOOTSTRAP=path tests a given linux bootstrap for this machine's
// architecture instead of building the checkout's.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// h is the harness shared by all tests; nil under -short.
var h *harness

type harness struct {
	root      string // repository root
	parts     string // the parts directory (localeks/parts/build.sh)
	self      string // the localeks CLI
	stack     *stack.Stack
	bootstrap string
	admin     kubernetes.Interface
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself, visibly
	}
	// This process talks to moto and the apiserver: guard it like the stack.
	for k, v := range map[string]string{
		"AWS_EC2_METADATA_SERVICE_ENDPOINT": stack.IMDSGuard,
		"AWS_REGION":                        stack.Region,
		"AWS_CONFIG_FILE":                   os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE":       os.DevNull,
	} {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			os.Exit(1)
		}
	}
	var err error
	h, err = setup(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot set up the local EKS replica: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(filepath.Dir(h.bootstrap))
	os.Exit(code)
}

func setup(ctx context.Context) (*harness, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) }
	cache := os.Getenv("LAMBDA_EKS_CACHE")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, err
		}
		cache = filepath.Join(base, "lambda-eks")
	}

	start := time.Now()
	parts, err := output(root, nil, filepath.Join(root, "localeks", "parts", "build.sh"))
	if err != nil {
		return nil, fmt.Errorf("build parts: %w", err)
	}
	logf("parts in %s (%s)", parts, time.Since(start).Round(time.Millisecond))
	// Every function of these tests runs under the parts' aws-lambda-rie.
	if err := os.Setenv(lambdart.RIEVar, filepath.Join(parts, "aws-lambda-rie")); err != nil {
		return nil, err
	}

	start = time.Now()
	self := filepath.Join(cache, "bin", "localeks")
	if err := os.MkdirAll(filepath.Dir(self), 0o755); err != nil {
		return nil, err
	}
	// Build next to it under a name of its own and rename: the running shim
	// may execute the old one, and other test runs may build at the same time.
	tmp, err := os.CreateTemp(filepath.Dir(self), ".localeks-*")
	if err != nil {
		return nil, err
	}
	_ = tmp.Close()
	if _, err := output(filepath.Join(root, "localeks"), []string{"GOWORK=off", "CGO_ENABLED=0"},
		"go", "build", "-trimpath", "-o", tmp.Name(), "./cmd/localeks"); err != nil {
		_ = os.Remove(tmp.Name())
		return nil, fmt.Errorf("build localeks: %w", err)
	}
	if err := os.Rename(tmp.Name(), self); err != nil {
		return nil, err
	}
	logf("built localeks (%s)", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	// Our own copy, not ./bootstrap: ./local.sh may rebuild that meanwhile.
	dir, err := os.MkdirTemp("", "lambda-eks-e2e-")
	if err != nil {
		return nil, err
	}
	bootstrap := filepath.Join(dir, "bootstrap")
	if prebuilt := os.Getenv("LOCALEKS_BOOTSTRAP"); prebuilt != "" {
		// A given artifact instead of the checkout's code.
		b, err := os.ReadFile(prebuilt) //nolint:gosec // G304: the caller's choice
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(bootstrap, b, 0o700); err != nil { //nolint:gosec // G306: it must be executable
			return nil, err
		}
	} else if _, err := output(root, []string{"GOARCH=" + runtime.GOARCH}, filepath.Join(root, "build-handler.sh"), bootstrap); err != nil {
		return nil, fmt.Errorf("build the function with build-handler.sh: %w", err)
	}
	logf("built bootstrap for %s (%s)", runtime.GOARCH, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	s, err := stack.Up(ctx, stack.Config{
		Parts:       parts,
		Self:        self,
		Permissions: filepath.Join(root, "permissions.yml"),
		Log:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return nil, err
	}
	logf("stack up (%s)", time.Since(start).Round(time.Millisecond))
	admin, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return nil, err
	}
	return &harness{root: root, parts: parts, self: self, stack: s, bootstrap: bootstrap, admin: admin}, nil
}

// output runs a command, passing its stderr through, and returns its stdout.
func output(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out.String()), nil
}

// mustHarness returns the shared harness, or skips the test under -short.
func mustHarness(tb testing.TB) *harness {
	tb.Helper()
	if testing.Short() {
		tb.Skip("end-to-end test: skipped with -short")
	}
	if h == nil {
		tb.Fatal("no harness: TestMain did not set up the stack")
	}
	return h
}
