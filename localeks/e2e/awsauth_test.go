package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// TestAWSAuthMerge runs the aws-auth merge that deploy.sh runs
// (go run ./cmd/awsauth) against the replica's real aws-auth: the new role is
// added, the existing mapping is kept, a second run changes nothing, and the
// function keeps working throughout.
func TestAWSAuthMerge(t *testing.T) {
	hh := mustHarness(t)
	ctx := context.Background()
	cms := hh.admin.CoreV1().ConfigMaps("kube-system")
	before, err := cms.Get(ctx, "aws-auth", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cur, err := cms.Get(context.Background(), "aws-auth", metav1.GetOptions{})
		if err != nil {
			t.Errorf("restore aws-auth: %v", err)
			return
		}
		cur.Data = before.Data
		if _, err := cms.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Errorf("restore aws-auth: %v", err)
		}
	})

	merge := func(dryRun bool) string {
		t.Helper()
		args := []string{"run", "./cmd/awsauth", "-kubeconfig", hh.stack.Paths.AdminKubeconfig(),
			"-role-arn", "arn:aws:iam::" + stack.Account + ":role/team/path/deployer"}
		if dryRun {
			args = append(args, "-dry-run")
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = hh.root
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("awsauth: %v\n%s", err, out)
		}
		return string(out)
	}
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

	if out := merge(true); !strings.Contains(out, "would map") {
		t.Errorf("dry run said: %s", out)
	}
	if diff := cmp.Diff(original, mapRoles()); diff != "" {
		t.Fatalf("a dry run changed aws-auth (-before +after):\n%s", diff)
	}

	if out := merge(false); !strings.Contains(out, "keeping the other entries") {
		t.Errorf("merge said: %s", out)
	}
	want := append(append([]map[string]any{}, original...), map[string]any{
		"rolearn":  "arn:aws:iam::" + stack.Account + ":role/deployer", // path stripped
		"username": "lambda:{{SessionName}}",
		"groups":   []any{"lambda-eks"},
	})
	if diff := cmp.Diff(want, mapRoles()); diff != "" {
		t.Errorf("aws-auth after the merge (-want +got):\n%s", diff)
	}
	if out := merge(false); !strings.Contains(out, "already mapped") {
		t.Errorf("second merge said: %s", out)
	}

	// The function's own mapping survived: it still authenticates.
	fn := hh.startFunction(t, fnOptions{})
	mustSucceed(t, fn, `{"action":"ensure-nginx"}`)
}
