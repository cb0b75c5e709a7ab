package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// The README's first command: ./local.sh prints the response on stdout and
// exits 0, or prints the error payload and exits non-zero.
func TestLocalSh(t *testing.T) {
	h := mustHarness(t)
	run := func(t *testing.T, args ...string) ([]byte, int) {
		t.Helper()
		cmd := exec.Command(filepath.Join(h.root, "local.sh"), args...)
		cmd.Dir = h.root
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("./local.sh %v stderr:\n%s", args, stderr.Bytes())
			}
		})
		var exit *exec.ExitError
		switch {
		case err == nil:
			return stdout.Bytes(), 0
		case errors.As(err, &exit):
			return stdout.Bytes(), exit.ExitCode()
		default:
			t.Fatalf("./local.sh %v: %v", args, err)
			return nil, 0
		}
	}

	t.Run("default event", func(t *testing.T) {
		out, code := run(t)
		if code != 0 {
			t.Fatalf("exit %d, want 0; stdout %s", code, out)
		}
		var got Response
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("stdout is not the response: %v\n%s", err, out)
		}
		if got.Cluster != stack.ClusterName || got.Action != "ensure-nginx" || len(got.Objects) != 1 || got.Objects[0].Name != "nginx" {
			t.Errorf("response %+v, want ensure-nginx of default/nginx on %s", got, stack.ClusterName)
		}
	})
	t.Run("bad event", func(t *testing.T) {
		out, code := run(t, "events/bad.json")
		if code != 1 {
			t.Fatalf("exit %d, want 1; stdout %s", code, out)
		}
		var got lambdart.FunctionError
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("stdout is not the error payload: %v\n%s", err, out)
		}
		if got.Type != "InvalidEvent" {
			t.Errorf("errorType %q, want InvalidEvent (%s)", got.Type, got.Message)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(h.root, "local.sh"), "-")
		cmd.Dir = h.root
		cmd.Stdin = bytes.NewReader([]byte(`{"action":"ensure-nginx","name":"nginx-stdin"}`))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("./local.sh -: %v", err)
		}
		var got Response
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("stdout is not the response: %v\n%s", err, out)
		}
		if len(got.Objects) != 1 || got.Objects[0].Name != "nginx-stdin" {
			t.Errorf("objects %+v, want nginx-stdin", got.Objects)
		}
	})
	t.Run("kubectl", func(t *testing.T) {
		out, code := run(t, "kubectl", "get", "deployment", "nginx", "-n", "default", "-o", "jsonpath={.metadata.name}")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		if diff := cmp.Diff("nginx", string(out)); diff != "" {
			t.Errorf("kubectl output (-want +got):\n%s", diff)
		}
	})
	t.Run("status", func(t *testing.T) {
		out, code := run(t, "status")
		if code != 0 {
			t.Errorf("exit %d, want 0 for a healthy stack:\n%s", code, out)
		}
		// Every part, each healthy.
		for _, part := range []string{"etcd", "moto", "shim", "aws-iam-authenticator", "kube-apiserver",
			"kube-controller-manager", "kube-scheduler", "kwok"} {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(part) + ` +pid \d+ +healthy$`).Match(out) {
				t.Errorf("status does not list %s as healthy:\n%s", part, out)
			}
		}
	})
}

// Issue 8: concurrent ./local.sh runs all work. Each builds the CLI and the
// function into files of its own before renaming them into place, and they
// share one replica (the stack's lock makes one of them start it).
func TestLocalShConcurrent(t *testing.T) {
	h := mustHarness(t)
	const runs = 8
	type result struct {
		out, stderr []byte
		err         error
	}
	done := make(chan result, runs)
	for range runs {
		go func() {
			cmd := exec.Command(filepath.Join(h.root, "local.sh"), "-")
			cmd.Dir = h.root
			cmd.Env = append(os.Environ(), "LOCALEKS_DIR="+h.stack.Paths.Dir)
			cmd.Stdin = strings.NewReader(`{"action":"status","name":"nginx"}`)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			done <- result{out, stderr.Bytes(), err}
		}()
	}
	failed := 0
	for range runs {
		r := <-done
		var got struct {
			Action string `json:"action"`
		}
		if r.err != nil || json.Unmarshal(r.out, &got) != nil || got.Action != "status" {
			failed++
			t.Errorf("./local.sh: %v, stdout %s\nstderr:\n%s", r.err, r.out, r.stderr)
		}
	}
	t.Logf("%d of %d concurrent runs succeeded", runs-failed, runs)
}
