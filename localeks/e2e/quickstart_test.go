package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
)

// quickstartStep is one `$ command` of the README's Quickstart: what it
// prints, as the README shows it.
type quickstartStep struct {
	command string
	// output holds the lines the README prints under the command, if any:
	// stdout must be exactly these (JSON compared as JSON).
	output []string
	// want are the "key":value pairs of the command's comment: stdout (one
	// or more JSON documents) must hold each, at any depth.
	want []keyValue
	// eventually is a comment's "once ...": the result comes in time, so
	// the command is repeated until it shows it.
	eventually bool
}

type keyValue struct {
	key   string
	value any
}

func (kv keyValue) String() string {
	b, _ := json.Marshal(kv.value)
	return fmt.Sprintf("%q:%s", kv.key, b)
}

// quickstartFragment is a "key":value pair written in a comment.
var quickstartFragment = regexp.MustCompile(`"([A-Za-z]+)":("[^"]*"|-?[0-9]+|true|false)`)

// parseQuickstart returns the steps of every console block of the README's
// Quickstart section (up to its next heading), in order. A line ending in
// \ continues on the next.
func parseQuickstart(readme string) ([]quickstartStep, error) {
	start := strings.Index(readme, "\n## Quickstart\n")
	if start < 0 {
		return nil, errors.New("no ## Quickstart section")
	}
	section := readme[start+1:]
	if end := regexp.MustCompile(`\n#{2,3} `).FindStringIndex(section[3:]); end != nil {
		section = section[:end[0]+3]
	}
	var steps []quickstartStep
	for _, block := range regexp.MustCompile("(?s)```console\n(.*?)```").FindAllStringSubmatch(section, -1) {
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(block[1], "\n"), "\n") {
			if n := len(lines); n > 0 && strings.HasSuffix(lines[n-1], `\`) {
				lines[n-1] = strings.TrimSuffix(lines[n-1], `\`) + " " + strings.TrimSpace(l)
				continue
			}
			lines = append(lines, l)
		}
		for _, l := range lines {
			cmd, ok := strings.CutPrefix(l, "$ ")
			if !ok {
				if len(steps) == 0 {
					return nil, fmt.Errorf("output %q before any command", l)
				}
				steps[len(steps)-1].output = append(steps[len(steps)-1].output, l)
				continue
			}
			cmd, comment := splitComment(cmd)
			st := quickstartStep{command: strings.Join(strings.Fields(cmd), " "), eventually: strings.Contains(comment, " once ")}
			for _, m := range quickstartFragment.FindAllStringSubmatch(comment, -1) {
				var v any
				if err := json.Unmarshal([]byte(m[2]), &v); err != nil {
					return nil, fmt.Errorf("%q: %w", m[0], err)
				}
				st.want = append(st.want, keyValue{m[1], v})
			}
			steps = append(steps, st)
		}
	}
	if len(steps) == 0 {
		return nil, errors.New("no console commands in the Quickstart")
	}
	return steps, nil
}

// splitComment cuts a shell line at its comment: a # after white space,
// outside quotes.
func splitComment(line string) (cmd, comment string) {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && i > 0 && (line[i-1] == ' ' || line[i-1] == '\t'):
			return strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
		}
	}
	return strings.TrimSpace(line), ""
}

// The parser finds what the README shows; under -short too, so that a
// README edit that breaks the format fails fast.
func TestParseQuickstart(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := parseQuickstart(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps[0].output) != 1 || !strings.HasPrefix(steps[0].output[0], "{") {
		t.Errorf("the first step %+v, want ./local.sh with its JSON response", steps[0])
	}
	var helm, serve, eventually int
	for _, st := range steps {
		if strings.Contains(st.command, "helm-") {
			helm++
		}
		if strings.HasPrefix(st.command, "./local.sh serve") {
			serve++
		}
		if st.eventually {
			eventually++
		}
	}
	if helm < 5 || serve != 1 || eventually != 1 {
		t.Errorf("%d Helm steps, %d serve, %d eventually; want the Helm samples, one serve, one status", helm, serve, eventually)
	}

	// The format itself.
	got, err := parseQuickstart("x\n## Quickstart\n```console\n$ a 'b # c' # \"result\":\"ok\",\"n\":2 once rolled\nout\n$ d \\\n    e   # f\n```\n### Next\n```console\n$ never\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []quickstartStep{
		{command: "a 'b # c'", output: []string{"out"}, want: []keyValue{{"result", "ok"}, {"n", float64(2)}}, eventually: true},
		{command: "d e"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(quickstartStep{}, keyValue{})); diff != "" {
		t.Errorf("parse (-want +got):\n%s", diff)
	}
}

// The README's Quickstart runs as written, in order, through ./local.sh on
// the replica (and the AWS CLI against ./local.sh serve), and each command
// prints what the README shows. The replica first loses what an earlier
// run of the Quickstart left: the nginx Deployment, the demo releases.
func TestQuickstart(t *testing.T) {
	h := mustHarness(t)
	readme, err := os.ReadFile(filepath.Join(h.root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := parseQuickstart(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	h.mustDeleteDeployment(t, "default", "nginx")
	for _, rel := range []string{"demo", "demo-cfn"} {
		u := action.NewUninstall(h.sdk(t, "default"))
		u.WaitStrategy, u.IgnoreNotFound = kube.HookOnlyStrategy, true
		if _, err := u.Run(rel); err != nil {
			t.Fatalf("helm uninstall %s: %v", rel, err)
		}
	}
	// The serve example writes out.json where it runs: the checkout.
	if _, err := os.Stat(filepath.Join(h.root, "out.json")); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { _ = os.Remove(filepath.Join(h.root, "out.json")) })
	}

	env := quickstartEnv(h)
	parent := t
	for i, st := range steps {
		if !t.Run(fmt.Sprintf("%02d %s", i+1, st.command), func(t *testing.T) {
			if args, ok := strings.CutPrefix(st.command, "./local.sh serve"); ok {
				startServe(t, parent, h, env, strings.Fields(args))
				return
			}
			deadline := time.Now().Add(90 * time.Second)
			for {
				out, stderr, err := runShell(h.root, env, st.command)
				if err != nil {
					t.Fatalf("%s: %v\nstdout: %s\nstderr:\n%s", st.command, err, out, stderr)
				}
				problem := checkQuickstart(st, out)
				if problem == "" {
					return
				}
				if !st.eventually || time.Now().After(deadline) {
					t.Fatalf("%s printed what the README does not show: %s\nstdout: %s\nstderr:\n%s", st.command, problem, out, stderr)
				}
				time.Sleep(time.Second)
			}
		}) {
			break // the next steps build on this one
		}
	}
}

// checkQuickstart says how out differs from what the README shows for st;
// "" when it does not.
func checkQuickstart(st quickstartStep, out []byte) string {
	if st.output != nil {
		got := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if len(got) != len(st.output) {
			return fmt.Sprintf("%d lines, the README shows %d", len(got), len(st.output))
		}
		for i, want := range st.output {
			var w, g any
			if json.Unmarshal([]byte(want), &w) == nil && json.Unmarshal([]byte(got[i]), &g) == nil {
				if diff := cmp.Diff(w, g); diff != "" {
					return fmt.Sprintf("line %d (-README +printed):\n%s", i+1, diff)
				}
			} else if want != got[i] {
				return fmt.Sprintf("line %d is %q, the README shows %q", i+1, got[i], want)
			}
		}
	}
	if len(st.want) == 0 {
		return ""
	}
	var docs []any
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Sprintf("not JSON (%v), the README shows %v", err, st.want)
		}
		docs = append(docs, v)
	}
	for _, kv := range st.want {
		if !holds(docs, kv) {
			return fmt.Sprintf("no %s", kv)
		}
	}
	return ""
}

// holds says whether v has kv's key with kv's value, at any depth.
func holds(v any, kv keyValue) bool {
	switch v := v.(type) {
	case map[string]any:
		if got, ok := v[kv.key]; ok && cmp.Equal(got, kv.value) {
			return true
		}
		for _, e := range v {
			if holds(e, kv) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if holds(e, kv) {
				return true
			}
		}
	}
	return false
}

// quickstartEnv is a newcomer's shell on this machine: the replica of the
// tests, no AWS credentials nor profile (the AWS CLI examples must work
// without them), no instance metadata.
func quickstartEnv(h *harness) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "LOCALEKS_DIR", "AWS_PAGER":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LOCALEKS_DIR="+h.stack.Paths.Dir, "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1",
		"AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull, "AWS_PAGER=")
}

// runShell runs a README command line with bash in dir, as pasted.
func runShell(dir string, env []string, line string) (stdout, stderr []byte, err error) {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", line) //nolint:gosec // G204: the README's commands
	cmd.Dir, cmd.Env = dir, env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.Bytes(), errOut.Bytes(), err
}

// startServe starts `./local.sh serve [PORT]` for the rest of the test
// (stopped at parent's end, as Ctrl-C stops it), and waits until it listens.
func startServe(t, parent *testing.T, h *harness, env []string, args []string) {
	t.Helper()
	port := 9000
	if len(args) > 0 {
		p, err := strconv.Atoi(args[0])
		if err != nil {
			t.Fatalf("serve port %q: %v", args[0], err)
		}
		port = p
	}
	cmd := exec.Command(filepath.Join(h.root, "local.sh"), append([]string{"serve"}, args...)...) //nolint:gosec // G204: our script
	cmd.Dir, cmd.Env = h.root, env
	var logs lambdart.LockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	parent.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil {
				parent.Errorf("./local.sh serve after Ctrl-C: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			parent.Errorf("./local.sh serve still ran 30 s after Ctrl-C (then killed: %v)", <-exited)
		}
		if parent.Failed() {
			parent.Logf("./local.sh serve output:\n%s", logs.Bytes())
		}
	})
	waitListening(t, port, exited)
}
