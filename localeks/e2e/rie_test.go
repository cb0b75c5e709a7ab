package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// `./local.sh serve PORT` (localeks serve) keeps one warm function behind the
// Lambda Invoke API, and the AWS CLI invokes it as it would invoke Lambda:
// a response, a function error marked as Lambda marks it, both from the same
// process.
func TestServeAWSCLI(t *testing.T) {
	h := mustHarness(t)
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatalf("the AWS CLI is not on PATH (pip: awscli): %v", err)
	}
	port := freePort(t)
	serve := exec.Command(filepath.Join(h.root, "local.sh"), "serve", strconv.Itoa(port)) //nolint:gosec // G204: our script
	serve.Dir = h.root
	var logs lambdart.LockedBuffer
	serve.Stdout, serve.Stderr = &logs, &logs
	serve.Env = append(os.Environ(), "LOCALEKS_DIR="+h.stack.Paths.Dir, "IMAGE=nginx:1.27", "REPLICAS=2")
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		_ = serve.Process.Kill()
		if t.Failed() {
			t.Logf("localeks serve output:\n%s", logs.Bytes())
		}
	})
	waitListening(t, port, exited)

	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)
	name := "nginx-serve-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })
	for _, tc := range []struct {
		name, payload     string
		tail              bool
		wantFunctionError string
		check             func(t *testing.T, out []byte)
	}{
		{"response", `{"action":"ensure-nginx","name":"` + name + `"}`, false, "", func(t *testing.T, out []byte) {
			var r Response
			if err := json.Unmarshal(out, &r); err != nil || len(r.Objects) != 1 || r.Objects[0].Name != name {
				t.Errorf("payload %s (%v), want the ensure-nginx response for %s", out, err, name)
			}
		}},
		{"warm, with the log tail", `{"action":"status","name":"` + name + `"}`, true, "", func(t *testing.T, out []byte) {
			if !bytes.Contains(out, []byte(`"action":"status"`)) {
				t.Errorf("payload %s, want the status response", out)
			}
		}},
		{"function error", `{"action":"nope"}`, false, "Unhandled", func(t *testing.T, out []byte) {
			var fe lambdart.FunctionError
			if err := json.Unmarshal(out, &fe); err != nil || fe.Type != "InvalidEvent" {
				t.Errorf("payload %s (%v), want an InvalidEvent error payload", out, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outFile := filepath.Join(t.TempDir(), "out.json")
			args := []string{"lambda", "invoke", "--endpoint-url", endpoint, "--function-name", "function", "--payload", tc.payload}
			if tc.tail {
				args = append(args, "--log-type", "Tail")
			}
			cmd := exec.Command("aws", append(args, outFile)...) //nolint:gosec // G204: fixed program
			cmd.Env = awsCLIEnv()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.Output()
			if err != nil {
				t.Fatalf("aws lambda invoke: %v\n%s", err, stderr.Bytes())
			}
			type result struct {
				StatusCode      int
				FunctionError   string
				ExecutedVersion string
			}
			var meta struct {
				result
				LogResult string
			}
			if err := json.Unmarshal(stdout, &meta); err != nil {
				t.Fatalf("aws lambda invoke printed %s: %v", stdout, err)
			}
			if diff := cmp.Diff(result{200, tc.wantFunctionError, "$LATEST"}, meta.result); diff != "" {
				t.Errorf("invoke result (-want +got):\n%s", diff)
			}
			if logs, err := base64.StdEncoding.DecodeString(meta.LogResult); tc.tail && (err != nil || !bytes.Contains(logs, []byte(`"action":"status"`))) {
				t.Errorf("log tail %q (%v), want this invocation's log", logs, err)
			}
			out, err := os.ReadFile(outFile) //nolint:gosec // G304: our temp file
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, out)
		})
	}
	// The emulator reports an init duration for the cold start only: every
	// invocation above reached one warm process.
	if n := bytes.Count(logs.Bytes(), []byte("Init Duration")); n != 1 {
		t.Errorf("%d cold starts for 3 invocations, want 1", n)
	}
	if err := serve.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("localeks serve after Ctrl-C: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("localeks serve still runs 30 s after Ctrl-C")
	}
}

// The artifact users deploy: the arm64 bootstrap, built exactly as `sam
// build` builds it, answers under the official emulator through QEMU.
func TestArm64Artifact(t *testing.T) {
	h := mustHarness(t)
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not on PATH (make qemu installs Debian's qemu-user-static): %v", err)
	}
	artifacts := t.TempDir()
	build := exec.Command("make", "build-LambdaEksFunction", "ARTIFACTS_DIR="+artifacts) //nolint:gosec // G204: fixed program
	build.Dir = h.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build-LambdaEksFunction: %v\n%s", err, out)
	}
	bin := filepath.Join(artifacts, "bootstrap")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	machine := f.Machine
	_ = f.Close()
	if machine != elf.EM_AARCH64 {
		t.Fatalf("the artifact is for %s, want arm64", machine)
	}
	// The emulator starts "bootstrap"; this one hands the artifact to QEMU.
	wrapper := filepath.Join(t.TempDir(), "bootstrap")
	script := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", shellQuote(qemu), shellQuote(bin))
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil { //nolint:gosec // G306: it must be executable
		t.Fatal(err)
	}
	ctx := context.Background()
	creds, err := h.stack.AssumeRole(ctx, stack.ExecRole, "e2e-arm64-"+runID())
	if err != nil {
		t.Fatal(err)
	}
	fn, err := lambdart.Start(ctx, wrapper, append(h.stack.FunctionEnv(creds), "IMAGE=nginx:1.27"), 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fn.Stop()
		if t.Failed() {
			t.Logf("logs:\n%s", fn.Logs())
		}
	})
	name := "nginx-arm64-" + runID()
	r := mustManage(t, fn, `{"action":"status","name":"`+name+`"}`)
	if diff := cmp.Diff([]string{"Deployment/" + name + "=absent"}, results(r)); diff != "" {
		t.Errorf("status through the arm64 bootstrap (-want +got):\n%s", diff)
	}
	_ = mustFail(t, fn, `{"action":"nope"}`, "InvalidEvent")
	if got := processExe(fn.PID()); !strings.Contains(got, "qemu-aarch64") {
		t.Errorf("the function process runs %q, want qemu-aarch64-static", got)
	}
}

// Soak: 1,000 warm invocations of one process under the official emulator,
// mixing successes and errors, leave its memory, file descriptors and threads
// flat. The bounds are generous: a leak of one object, connection or
// goroutine per invocation would cross them.
func TestSoak(t *testing.T) {
	h := mustHarness(t)
	fn := h.startFunction(t, fnOptions{})
	name := "nginx-soak-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })
	events := []struct {
		event, errorType string
	}{
		{`{"action":"ensure-nginx","name":"` + name + `"}`, ""},
		{`{"action":"status","name":"` + name + `"}`, ""},
		{`{"action":"nope"}`, "InvalidEvent"},
		{`{"action":"status","name":"absent-` + name + `"}`, ""},
		{`{"action":"delete","kind":"ResourceQuota","name":"q"}`, "Forbidden"},
	}
	run := func(n int) {
		for i := range n {
			ev := events[i%len(events)]
			if ev.errorType == "" {
				mustManage(t, fn, ev.event)
			} else {
				_ = mustFailManage(t, fn, ev.event, ev.errorType)
			}
		}
	}
	run(50) // warm: clients, caches and the connection pool exist
	pid := fn.PID()
	start := sample(t, pid)
	began := time.Now()
	run(1000)
	took := time.Since(began)
	end := sample(t, pid)
	if fn.PID() != pid {
		t.Fatalf("the function process changed (%d -> %d): not warm", pid, fn.PID())
	}
	t.Logf("soak: 1000 warm invocations in %s; RSS %d -> %d KiB, fds %d -> %d, threads %d -> %d",
		took.Round(time.Millisecond), start.rssKiB, end.rssKiB, start.fds, end.fds, start.threads, end.threads)
	if end.rssKiB > 2*start.rssKiB {
		t.Errorf("RSS grew from %d to %d KiB", start.rssKiB, end.rssKiB)
	}
	if end.fds > start.fds+10 {
		t.Errorf("open file descriptors grew from %d to %d", start.fds, end.fds)
	}
	if end.threads > start.threads+10 {
		t.Errorf("threads grew from %d to %d", start.threads, end.threads)
	}
}

type procSample struct{ rssKiB, fds, threads int }

func sample(tb testing.TB, pid int) procSample {
	tb.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	var s procSample
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.rssKiB, _ = strconv.Atoi(f[0])
		case "Threads":
			s.threads, _ = strconv.Atoi(f[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s.fds = len(fds)
	return s
}

func processExe(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err.Error()
	}
	return exe
}

func awsCLIEnv() []string {
	env := []string{"AWS_ACCESS_KEY_ID=AKIDLOCALEKS", "AWS_SECRET_ACCESS_KEY=localeks", "AWS_REGION=" + stack.Region,
		"AWS_DEFAULT_REGION=" + stack.Region, "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + stack.IMDSGuard,
		"AWS_CONFIG_FILE=" + os.DevNull, "AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull, "AWS_PAGER="}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "PATH" || k == "HOME" || k == "LANG" {
			env = append(env, kv)
		}
	}
	return env
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening waits until a process listens on a loopback port, failing
// when it exits first.
func waitListening(tb testing.TB, port int, exited <-chan error) {
	tb.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			_ = c.Close()
			return
		}
		select {
		case err := <-exited:
			tb.Fatalf("exited before listening on %d: %v", port, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	tb.Fatalf("nothing listens on %d after 2 min", port)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
