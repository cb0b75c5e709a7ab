package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// deploy.sh --helm in aws-auth mode deploys both functions and merges each
// role into the replica's real aws-auth (the main role to lambda-eks, the
// Helm role to lambda-eks-helm), keeping every other entry; its dry run
// changes nothing; both print an `aws lambda invoke` of the deployed
// function that AWS CLI v1 and v2 accept. sam and the CloudFormation
// outputs are stand-ins (no AWS here); kubectl and the merge are real.
func TestDeployHelmAWSAuth(t *testing.T) {
	h := mustHarness(t)
	original := awsAuthRoles(t, h)

	id := runID()
	fnRole := stack.RoleARN("lambda-eks-LambdaEksRole-" + id)
	helmRole := stack.RoleARN("lambda-eks-LambdaEksHelmRole-" + id)
	fnARN := "arn:aws:lambda:" + stack.Region + ":" + stack.Account + ":function:lambda-eks-lambda-eks"
	helmARN := fnARN + "-helm"
	// Only this test's entries go: other tests may map roles meanwhile.
	t.Cleanup(func() { unmapRoles(t, h, fnRole, helmRole) })
	d := newDeployScript(t, h, "FunctionArn", fnARN, "FunctionRoleArn", fnRole, "HelmFunctionArn", helmARN, "HelmFunctionRoleArn", helmRole)
	common := []string{"--access-mode", "aws-auth", "--helm"}
	wantInvokes := func(t *testing.T, stdout, fn, helm string) {
		t.Helper()
		want := invokeLine(fn, "ensure-nginx.json") + invokeLine(helm, "helm-status.json")
		if diff := cmp.Diff(want, stdout); diff != "" {
			t.Errorf("printed invokes (-want +got):\n%s", diff)
		}
	}

	t.Run("dry run", func(t *testing.T) {
		stdout, stderr := d.mustRun(t, nil, append(common, "--dry-run")...)
		for _, want := range []string{"HelmFunction='true'", "go run ./cmd/awsauth -role-arn <FunctionRoleArn output of stack lambda-eks> -group lambda-eks\n",
			"go run ./cmd/awsauth -role-arn <HelmFunctionRoleArn output of stack lambda-eks> -group lambda-eks-helm\n"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("the plan does not show %q:\n%s", want, stderr)
			}
		}
		if ran := d.ran(t); ran != "" {
			t.Errorf("a dry run ran %s", ran)
		}
		if mine := entriesOf(awsAuthRoles(t, h), fnRole, helmRole); len(mine) != 0 {
			t.Errorf("a dry run mapped %v", mine)
		}
		wantInvokes(t, stdout, "<FunctionArn output of stack lambda-eks>", "<HelmFunctionArn output of stack lambda-eks>")
	})

	t.Run("deploy", func(t *testing.T) {
		stdout, _ := d.mustRun(t, nil, common...)
		if ran := d.ran(t); !strings.Contains(ran, "sam deploy ") || !strings.Contains(ran, "HelmFunction='true'") {
			t.Errorf("sam deploy with HelmFunction=true not run: %s", ran)
		}
		got := awsAuthRoles(t, h)
		wantKept(t, original, got)
		want := []map[string]any{
			{"rolearn": fnRole, "username": "lambda:{{SessionName}}", "groups": []any{"lambda-eks"}},
			{"rolearn": helmRole, "username": "lambda:{{SessionName}}", "groups": []any{"lambda-eks-helm"}},
		}
		if diff := cmp.Diff(want, entriesOf(got, fnRole, helmRole)); diff != "" {
			t.Errorf("the functions' entries in aws-auth after deploy.sh (-want +got):\n%s", diff)
		}
		wantInvokes(t, stdout, fnARN, helmARN)
	})
}

// deploy.sh --lifecycle in aws-auth mode deploys the node lifecycle
// function for the named Auto Scaling groups and merges its role into the
// replica's aws-auth with the group lambda-eks-lifecycle (the main role
// with lambda-eks), keeping every other entry; its dry run (configured
// through the environment this time) changes nothing; both print an invoke
// of it with the harmless test notification. Group lists the template
// cannot take are refused before anything runs.
func TestDeployLifecycleAWSAuth(t *testing.T) {
	h := mustHarness(t)
	original := awsAuthRoles(t, h)

	id := runID()
	fnRole := stack.RoleARN("lambda-eks-LambdaEksRole-" + id)
	lcRole := stack.RoleARN("lambda-eks-LambdaEksLifecycleRole-" + id)
	fnARN := "arn:aws:lambda:" + stack.Region + ":" + stack.Account + ":function:lambda-eks-lambda-eks"
	lcARN := fnARN + "-lifecycle"
	t.Cleanup(func() { unmapRoles(t, h, fnRole, lcRole) })
	d := newDeployScript(t, h, "FunctionArn", fnARN, "FunctionRoleArn", fnRole, "LifecycleFunctionArn", lcARN, "LifecycleFunctionRoleArn", lcRole)
	wantInvokes := func(t *testing.T, stdout, fn, lc string) {
		t.Helper()
		want := invokeLine(fn, "ensure-nginx.json") + invokeLine(lc, "asg-test-notification.json")
		if diff := cmp.Diff(want, stdout); diff != "" {
			t.Errorf("printed invokes (-want +got):\n%s", diff)
		}
	}

	t.Run("dry run", func(t *testing.T) {
		stdout, stderr := d.mustRun(t, []string{"LIFECYCLE_ASGS=ng-a,ng-b", "LIFECYCLE_HOOKS=true"}, "--access-mode", "aws-auth", "--dry-run")
		for _, want := range []string{"LifecycleFunction='true'", "LifecycleAsgNames='ng-a,ng-b'", "LifecycleHooks='true'",
			"go run ./cmd/awsauth -role-arn <FunctionRoleArn output of stack lambda-eks> -group lambda-eks\n",
			"go run ./cmd/awsauth -role-arn <LifecycleFunctionRoleArn output of stack lambda-eks> -group lambda-eks-lifecycle\n"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("the plan does not show %q:\n%s", want, stderr)
			}
		}
		if ran := d.ran(t); ran != "" {
			t.Errorf("a dry run ran %s", ran)
		}
		if mine := entriesOf(awsAuthRoles(t, h), fnRole, lcRole); len(mine) != 0 {
			t.Errorf("a dry run mapped %v", mine)
		}
		wantInvokes(t, stdout, "<FunctionArn output of stack lambda-eks>", "<LifecycleFunctionArn output of stack lambda-eks>")
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"4 groups", []string{"--lifecycle", "ng-a,ng-b,ng-c,ng-d"}, "4 groups, the template takes at most 3"},
			{"a colon", []string{"--lifecycle", "ng-a,ng:b"}, "ng:b is not an Auto Scaling group name"},
			{"a space", []string{"--lifecycle", "ng a"}, "is not an Auto Scaling group name"},
			{"a wildcard", []string{"--lifecycle", "ng-*"}, "refuses * and ?"},
			{"an empty item", []string{"--lifecycle", "ng-a,,ng-b"}, "an empty group name"},
			{"a trailing comma", []string{"--lifecycle", "ng-a,"}, "an empty group name"},
			{"no value", []string{"--lifecycle", ""}, "or - for none"},
			{"hooks without groups", []string{"--lifecycle", "-", "--lifecycle-hooks"}, "--lifecycle-hooks needs groups to hook"},
			{"hooks alone", []string{"--lifecycle-hooks"}, "--lifecycle-hooks needs --lifecycle"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				stdout, stderr, err := d.run(t, nil, append([]string{"--access-mode", "aws-auth"}, tc.args...)...)
				if code := exitCode(err); code != 2 {
					t.Errorf("deploy.sh %q exited %d (%v), want 2\nstderr:\n%s", tc.args, code, err, stderr)
				}
				if !strings.Contains(stderr, tc.want) {
					t.Errorf("deploy.sh %q said %q, want it to say %q", tc.args, stderr, tc.want)
				}
				if stdout != "" {
					t.Errorf("deploy.sh %q printed %q", tc.args, stdout)
				}
				if ran := d.ran(t); ran != "" {
					t.Errorf("deploy.sh %q ran %s", tc.args, ran)
				}
			})
		}
		if mine := entriesOf(awsAuthRoles(t, h), fnRole, lcRole); len(mine) != 0 {
			t.Errorf("a refused deploy mapped %v", mine)
		}
	})

	t.Run("deploy", func(t *testing.T) {
		stdout, stderr := d.mustRun(t, nil, "--access-mode", "aws-auth", "--lifecycle", "ng-a,ng-b")
		ran := d.ran(t)
		for _, want := range []string{"sam deploy ", "LifecycleFunction='true'", "LifecycleAsgNames='ng-a,ng-b'"} {
			if !strings.Contains(ran, want) {
				t.Errorf("sam deploy with %s not run: %s", want, ran)
			}
		}
		if strings.Contains(ran, "LifecycleHooks") {
			t.Errorf("LifecycleHooks passed without --lifecycle-hooks: %s", ran)
		}
		if want := "lifecycle function role: " + lcRole + "\n"; !strings.Contains(stderr, want) {
			t.Errorf("deploy.sh did not log %q:\n%s", want, stderr)
		}
		got := awsAuthRoles(t, h)
		wantKept(t, original, got)
		want := []map[string]any{
			{"rolearn": fnRole, "username": "lambda:{{SessionName}}", "groups": []any{"lambda-eks"}},
			{"rolearn": lcRole, "username": "lambda:{{SessionName}}", "groups": []any{"lambda-eks-lifecycle"}},
		}
		if diff := cmp.Diff(want, entriesOf(got, fnRole, lcRole)); diff != "" {
			t.Errorf("the functions' entries in aws-auth after deploy.sh (-want +got):\n%s", diff)
		}
		wantInvokes(t, stdout, fnARN, lcARN)
	})

	t.Run("cleanup", func(t *testing.T) {
		unmapRoles(t, h, fnRole, lcRole)
		got := awsAuthRoles(t, h)
		if mine := entriesOf(got, fnRole, lcRole); len(mine) != 0 {
			t.Errorf("unmapped, yet still in aws-auth: %v", mine)
		}
		wantKept(t, original, got)
	})
}

// permissions.yml and permissions-cluster.yml (which deploy.sh
// --cluster-wide applies instead) grant the lifecycle group the same rules,
// each in a ClusterRole bound to it.
func TestDeployLifecycleRBAC(t *testing.T) {
	h := mustHarness(t)
	type rules = []map[string]any
	granted := func(file string) rules {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join(h.root, file)) //nolint:gosec // G304: the project's file
		if err != nil {
			t.Fatal(err)
		}
		roles := map[string]rules{}
		var bound []string
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var o struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				Rules   rules `json:"rules"`
				RoleRef struct {
					Kind string `json:"kind"`
					Name string `json:"name"`
				} `json:"roleRef"`
				Subjects []struct {
					Kind string `json:"kind"`
					Name string `json:"name"`
				} `json:"subjects"`
			}
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			switch o.Kind {
			case "ClusterRole":
				roles[o.Metadata.Name] = o.Rules
			case "ClusterRoleBinding":
				for _, s := range o.Subjects {
					if s.Kind == "Group" && s.Name == "lambda-eks-lifecycle" && o.RoleRef.Kind == "ClusterRole" {
						bound = append(bound, o.RoleRef.Name)
					}
				}
			}
		}
		if len(bound) != 1 {
			t.Fatalf("%s binds %d ClusterRoles (%v) to the group lambda-eks-lifecycle, want 1", file, len(bound), bound)
		}
		r, ok := roles[bound[0]]
		if !ok {
			t.Fatalf("%s binds the group lambda-eks-lifecycle to a ClusterRole %s it does not hold", file, bound[0])
		}
		return r
	}
	want := rules{
		{"apiGroups": []any{""}, "resources": []any{"nodes"}, "verbs": []any{"get", "list", "patch"}},
		{"apiGroups": []any{""}, "resources": []any{"pods"}, "verbs": []any{"list"}},
		{"apiGroups": []any{""}, "resources": []any{"pods/eviction"}, "verbs": []any{"create"}},
	}
	for _, file := range []string{"permissions.yml", "permissions-cluster.yml"} {
		if diff := cmp.Diff(want, granted(file)); diff != "" {
			t.Errorf("%s's rules for the group lambda-eks-lifecycle (-want +got):\n%s", file, diff)
		}
	}
}

// deployScript runs the project's deploy.sh against the replica with sam
// and aws stubbed on PATH: sam does nothing, aws prints the stack's outputs.
// Both stubs log their arguments; kubectl and go run ./cmd/awsauth are real.
type deployScript struct {
	h     *harness
	bin   string // the stubs
	calls string // their log
}

// newDeployScript writes the stubs; outputs are the stack's outputs, as key,
// value pairs.
func newDeployScript(tb testing.TB, h *harness, outputs ...string) *deployScript {
	tb.Helper()
	if len(outputs)%2 != 0 {
		tb.Fatalf("outputs %q: not key, value pairs", outputs)
	}
	d := &deployScript{h: h, bin: tb.TempDir()}
	d.calls = filepath.Join(d.bin, "calls")
	d.stub(tb, "sam", "")
	d.stub(tb, "aws", "printf '%s\\t%s\\n' "+strings.Join(outputs, " ")+"\n")
	return d
}

func (d *deployScript) stub(tb testing.TB, name, body string) {
	tb.Helper()
	script := "#!/usr/bin/env bash\nset -euo pipefail\necho \"" + name + " $*\" >>" + d.calls + "\n" + body
	if err := os.WriteFile(filepath.Join(d.bin, name), []byte(script), 0o700); err != nil { //nolint:gosec // G306: an executable stub
		tb.Fatal(err)
	}
}

// run runs deploy.sh for the replica's cluster and region with args, env
// added to the environment, after clearing the stubs' log.
func (d *deployScript) run(tb testing.TB, env []string, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	if err := os.Remove(d.calls); err != nil && !errors.Is(err, os.ErrNotExist) {
		tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(d.h.root, "deploy.sh"), append([]string{"--cluster", stack.ClusterName, "--region", stack.Region}, args...)...) //nolint:gosec // G204: our script
	cmd.Dir = d.h.root
	cmd.Env = append(os.Environ(), "PATH="+d.bin+":"+os.Getenv("PATH"), "KUBECONFIG="+d.h.stack.Paths.AdminKubeconfig(), "GOWORK=off",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1", "AWS_REGION="+stack.Region)
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// mustRun is run that fails the test unless deploy.sh succeeds.
func (d *deployScript) mustRun(tb testing.TB, env []string, args ...string) (stdout, stderr string) {
	tb.Helper()
	stdout, stderr, err := d.run(tb, env, args...)
	if err != nil {
		tb.Fatalf("deploy.sh %v: %v\nstdout: %s\nstderr:\n%s", args, err, stdout, stderr)
	}
	return stdout, stderr
}

// ran is what the stubs were called with since the last run, "" if nothing.
func (d *deployScript) ran(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(d.calls)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// invokeLine is the invoke command deploy.sh prints for a function and a
// file of events/.
func invokeLine(fn, event string) string {
	return "aws lambda invoke --region " + stack.Region + " --function-name " + fn + " --payload fileb://events/" + event + " out.json && cat out.json\n"
}

// exitCode is a command's exit status, -1 if it did not exit.
func exitCode(err error) int {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		return -1
	}
}

// awsAuthRoles is kube-system/aws-auth's mapRoles.
func awsAuthRoles(tb testing.TB, h *harness) []map[string]any {
	tb.Helper()
	cm, err := h.admin.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "aws-auth", metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	var entries []map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["mapRoles"]), &entries); err != nil {
		tb.Fatal(err)
	}
	return entries
}

// entriesOf is the entries of roles, in order.
func entriesOf(entries []map[string]any, roles ...string) []map[string]any {
	var mine []map[string]any
	for _, e := range entries {
		if slices.Contains(roles, fmt.Sprint(e["rolearn"])) {
			mine = append(mine, e)
		}
	}
	return mine
}

// wantKept fails the test if an entry of original is missing from got.
func wantKept(tb testing.TB, original, got []map[string]any) {
	tb.Helper()
	for _, e := range original {
		if !slices.ContainsFunc(got, func(g map[string]any) bool { return cmp.Equal(e, g) }) {
			tb.Errorf("the entry %v is gone from aws-auth", e)
		}
	}
}

// unmapRoles removes the entries of roles from aws-auth, keeping the rest,
// retrying on a concurrent edit.
func unmapRoles(tb testing.TB, h *harness, roles ...string) {
	tb.Helper()
	cms := h.admin.CoreV1().ConfigMaps("kube-system")
	for try := 0; ; try++ {
		cm, err := cms.Get(context.Background(), "aws-auth", metav1.GetOptions{})
		if err != nil {
			tb.Errorf("unmap %v: %v", roles, err)
			return
		}
		var entries []map[string]any
		if err := yaml.Unmarshal([]byte(cm.Data["mapRoles"]), &entries); err != nil {
			tb.Errorf("unmap %v: %v", roles, err)
			return
		}
		kept := slices.DeleteFunc(entries, func(e map[string]any) bool { return slices.Contains(roles, fmt.Sprint(e["rolearn"])) })
		out, err := yaml.Marshal(kept)
		if err != nil {
			tb.Errorf("unmap %v: %v", roles, err)
			return
		}
		cm.Data["mapRoles"] = string(out)
		_, err = cms.Update(context.Background(), cm, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) || try > 5 {
			tb.Errorf("unmap %v: %v", roles, err)
			return
		}
	}
}
