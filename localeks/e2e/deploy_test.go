package e2e

import (
	"bytes"
	"context"
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
	ctx := context.Background()
	cms := h.admin.CoreV1().ConfigMaps("kube-system")
	mapRoles := func() []map[string]any {
		t.Helper()
		cm, err := cms.Get(ctx, "aws-auth", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var entries []map[string]any
		if err := yaml.Unmarshal([]byte(cm.Data["mapRoles"]), &entries); err != nil {
			t.Fatal(err)
		}
		return entries
	}
	original := mapRoles()

	id := runID()
	fnRole := stack.RoleARN("lambda-eks-LambdaEksRole-" + id)
	helmRole := stack.RoleARN("lambda-eks-LambdaEksHelmRole-" + id)
	fnARN := "arn:aws:lambda:" + stack.Region + ":" + stack.Account + ":function:lambda-eks-lambda-eks"
	helmARN := fnARN + "-helm"
	// Only this test's entries go: other tests may map roles meanwhile.
	t.Cleanup(func() { unmapRoles(t, h, fnRole, helmRole) })
	bin := t.TempDir()
	calls := filepath.Join(bin, "calls")
	stub := func(name, body string) {
		t.Helper()
		script := "#!/usr/bin/env bash\nset -euo pipefail\necho \"" + name + " $*\" >>" + calls + "\n" + body
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o700); err != nil { //nolint:gosec // G306: an executable stub
			t.Fatal(err)
		}
	}
	stub("sam", "")
	stub("aws", "printf '%s\\t%s\\n' FunctionArn "+fnARN+" FunctionRoleArn "+fnRole+" HelmFunctionArn "+helmARN+" HelmFunctionRoleArn "+helmRole+"\n")
	deploy := func(args ...string) (stdout, stderr string) {
		t.Helper()
		_ = os.Remove(calls)
		cmd := exec.Command(filepath.Join(h.root, "deploy.sh"), append([]string{"--cluster", stack.ClusterName, "--region", stack.Region,
			"--access-mode", "aws-auth", "--helm"}, args...)...) //nolint:gosec // G204: our script
		cmd.Dir = h.root
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "KUBECONFIG="+h.stack.Paths.AdminKubeconfig(), "GOWORK=off")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("deploy.sh %v: %v\nstdout: %s\nstderr:\n%s", args, err, out.Bytes(), errOut.Bytes())
		}
		return out.String(), errOut.String()
	}
	wantInvokes := func(t *testing.T, stdout, fn, helm string) {
		t.Helper()
		want := "aws lambda invoke --region " + stack.Region + " --function-name " + fn + " --payload fileb://events/ensure-nginx.json out.json && cat out.json\n" +
			"aws lambda invoke --region " + stack.Region + " --function-name " + helm + " --payload fileb://events/helm-status.json out.json && cat out.json\n"
		if diff := cmp.Diff(want, stdout); diff != "" {
			t.Errorf("printed invokes (-want +got):\n%s", diff)
		}
	}

	t.Run("dry run", func(t *testing.T) {
		stdout, stderr := deploy("--dry-run")
		for _, want := range []string{"HelmFunction='true'", "go run ./cmd/awsauth -role-arn <FunctionRoleArn output of stack lambda-eks> -group lambda-eks\n",
			"go run ./cmd/awsauth -role-arn <HelmFunctionRoleArn output of stack lambda-eks> -group lambda-eks-helm\n"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("the plan does not show %q:\n%s", want, stderr)
			}
		}
		if b, err := os.ReadFile(calls); err == nil { //nolint:gosec // G304: the stubs' log
			t.Errorf("a dry run ran %s", b)
		}
		for _, e := range mapRoles() {
			if e["rolearn"] == fnRole || e["rolearn"] == helmRole {
				t.Errorf("a dry run mapped %v", e)
			}
		}
		wantInvokes(t, stdout, "<FunctionArn output of stack lambda-eks>", "<HelmFunctionArn output of stack lambda-eks>")
	})

	t.Run("deploy", func(t *testing.T) {
		stdout, _ := deploy()
		b, err := os.ReadFile(calls) //nolint:gosec // G304: the stubs' log
		if err != nil || !strings.Contains(string(b), "sam deploy ") || !strings.Contains(string(b), "HelmFunction='true'") {
			t.Errorf("sam deploy with HelmFunction=true not run: %s (%v)", b, err)
		}
		got := mapRoles()
		for _, e := range original {
			if !slices.ContainsFunc(got, func(g map[string]any) bool { return cmp.Equal(e, g) }) {
				t.Errorf("deploy.sh dropped the entry %v from aws-auth", e)
			}
		}
		var mine []map[string]any
		for _, g := range got {
			if g["rolearn"] == fnRole || g["rolearn"] == helmRole {
				mine = append(mine, g)
			}
		}
		want := []map[string]any{
			{"rolearn": fnRole, "username": "lambda:{{SessionName}}", "groups": []any{"lambda-eks"}},
			{"rolearn": helmRole, "username": "lambda:{{SessionName}}", "groups": []any{"lambda-eks-helm"}},
		}
		if diff := cmp.Diff(want, mine); diff != "" {
			t.Errorf("the functions' entries in aws-auth after deploy.sh (-want +got):\n%s", diff)
		}
		wantInvokes(t, stdout, fnARN, helmARN)
	})
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
