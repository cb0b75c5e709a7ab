package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
		if out, code := run(t, "status"); code != 0 {
			t.Errorf("exit %d, want 0 for a healthy stack:\n%s", code, out)
		}
	})
}
