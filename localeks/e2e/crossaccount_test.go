package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// targetUser is the username aws-auth gives sessions of the target role.
const targetUser = "lambda-target:"

// TestCrossAccountRoleChaining: a function whose own role is mapped to
// nothing reaches the cluster "demo" of the second account by assuming a
// role there (ROLE_ARN, or roleArn in the event) that aws-auth maps. The API
// server sees the target role's session; the role is assumed once per cold
// start and a warm invocation makes no request to AWS and mints no token. An
// unmapped target role is Unauthorized naming it; a refused AssumeRole (the
// shim enforces an ExternalId condition, which moto does not) is Forbidden
// naming both roles.
func TestCrossAccountRoleChaining(t *testing.T) {
	h := mustHarness(t)
	target := stack.TargetRoleARN(stack.TargetRole)
	h.mustTargetAccount(t)
	h.mapRole(t, target, targetUser+"{{SessionName}}")
	name := "nginx-xacct-" + runID()
	t.Cleanup(func() { h.mustDeleteDeployment(t, "default", name) })
	ensure := `{"action":"ensure-nginx","name":"` + name + `"}`
	status := `{"action":"status","kind":"Deployment","name":"` + name + `"}`

	t.Run("ROLE_ARN", func(t *testing.T) {
		session := "xacct-" + runID()
		fn, id := h.startFunctionAs(t, fnOptions{role: stack.UnmappedRole,
			env: []string{"ROLE_ARN=" + target, "ROLE_SESSION_NAME=" + session}})

		before := h.shimCounts(t)
		mark := h.auditMark(t)
		if got := mustSucceed(t, fn, ensure).Objects[0].Result; got != "created" {
			t.Errorf("cold invocation: %s, want created", got)
		}
		cold := countsSince(before, h.shimCounts(t))
		targetKey := otherSigner(cold, "eks", id.AccessKeyID)
		t.Logf("cold start, AWS requests by signer: %v", cold)
		if n := cold["sts@"+id.AccessKeyID]; n != 1 {
			t.Errorf("the cold start made %d STS requests with the execution role, want 1 (AssumeRole)", n)
		}
		if n := cold["eks@"+targetKey]; targetKey == "" || n != 1 || cold["eks@"+id.AccessKeyID] != 0 {
			t.Errorf("DescribeCluster: %d by the target session %q, %d by the execution role; want 1 and 0", n, targetKey, cold["eks@"+id.AccessKeyID])
		}
		if events := h.auditSince(t, mark, targetUser+session); len(events) == 0 {
			t.Errorf("the API server saw no request of %s%s (the target role's session)", targetUser, session)
		}

		before = h.shimCounts(t)
		for range 5 {
			mustAnswer(t, fn, status)
		}
		warm := countsSince(before, h.shimCounts(t))
		for _, key := range []string{id.AccessKeyID, targetKey} {
			for _, service := range []string{"sts", "eks"} {
				if n := warm[service+"@"+key]; n != 0 {
					t.Errorf("5 warm invocations made %d %s requests signed by %s, want 0", n, service, key)
				}
			}
		}
		// The cold start's token is reused: the API server's cached webhook
		// answer covers it, so the authenticator replays nothing.
		if n := warm["sts:presigned@"+targetKey]; n != 0 {
			t.Errorf("5 warm invocations made the authenticator verify %d new tokens, want 0 (the token reused)", n)
		}
	})

	t.Run("roleArn in the event", func(t *testing.T) {
		session := "xacct-" + runID()
		fn := h.startFunction(t, fnOptions{role: stack.UnmappedRole, env: []string{"ROLE_SESSION_NAME=" + session}})
		mark := h.auditMark(t)
		mustAnswer(t, fn, event(t, map[string]any{"action": "status", "kind": "Deployment", "name": name, "roleArn": target}))
		if events := h.auditSince(t, mark, targetUser+session); len(events) == 0 {
			t.Errorf("the API server saw no request of %s%s", targetUser, session)
		}
		// "down" exists only in the execution role's account: the cluster
		// is described in the target's.
		fnErr := mustFail(t, fn, event(t, map[string]any{"action": "ensure-nginx", "cluster": stack.DownCluster, "roleArn": target}), "ClusterNotFound")
		t.Logf("ClusterNotFound: %s", fnErr.Message)
	})

	t.Run("unmapped target role", func(t *testing.T) {
		unmapped := stack.TargetRoleARN(stack.TargetUnmappedRole)
		for _, o := range []struct{ name, env, event string }{
			{"ROLE_ARN", "ROLE_ARN=" + unmapped, ensure},
			{"roleArn", "", event(t, map[string]any{"action": "ensure-nginx", "name": name, "roleArn": unmapped})},
		} {
			t.Run(o.name, func(t *testing.T) {
				fn := h.startFunction(t, fnOptions{role: stack.UnmappedRole, env: slices.DeleteFunc([]string{o.env}, isEmpty)})
				fnErr := mustFail(t, fn, o.event, "Unauthorized")
				t.Logf("Unauthorized: %s", fnErr.Message)
				if !strings.Contains(fnErr.Message, unmapped) {
					t.Errorf("message %q does not name the target role %s", fnErr.Message, unmapped)
				}
				if strings.Contains(fnErr.Message, stack.RoleARN(stack.UnmappedRole)) {
					t.Errorf("message %q names the execution role; the token is signed by the target role", fnErr.Message)
				}
			})
		}
	})

	t.Run("AccessDenied on AssumeRole", func(t *testing.T) {
		h.setFaults(t, shim.Faults{ExternalIDs: map[string]string{target: "choose-one"}})
		caller := stack.RoleARN(stack.UnmappedRole)
		for _, o := range []struct {
			name, event string
			env         []string
			want        string
		}{
			{"EXTERNAL_ID wrong", ensure, []string{"ROLE_ARN=" + target, "EXTERNAL_ID=guess"}, "Forbidden"},
			{"EXTERNAL_ID missing", ensure, []string{"ROLE_ARN=" + target}, "Forbidden"},
			{"externalId wrong in the event", event(t, map[string]any{"action": "ensure-nginx", "name": name, "roleArn": target, "externalId": "guess"}), nil, "Forbidden"},
			{"externalId right in the event", event(t, map[string]any{"action": "ensure-nginx", "name": name, "roleArn": target, "externalId": "choose-one"}), nil, ""},
		} {
			t.Run(o.name, func(t *testing.T) {
				fn := h.startFunction(t, fnOptions{role: stack.UnmappedRole, env: o.env})
				if o.want == "" {
					mustSucceed(t, fn, o.event)
					return
				}
				fnErr := mustFail(t, fn, o.event, o.want)
				t.Logf("%s: %s", o.want, fnErr.Message)
				for _, arn := range []string{caller, target} {
					if !strings.Contains(fnErr.Message, arn) {
						t.Errorf("message %q does not name %s", fnErr.Message, arn)
					}
				}
			})
		}
	})
}

func isEmpty(s string) bool { return s == "" }

// mustAnswer invokes and fails the test on a function error; the response
// is not decoded (other tests hold its contract).
func mustAnswer(tb testing.TB, fn *lambdart.Function, event string) {
	tb.Helper()
	_, fnErr, err := fn.Invoke(context.Background(), []byte(event))
	if err != nil {
		tb.Fatalf("invoke %s: %v", event, err)
	}
	if fnErr != nil {
		tb.Fatalf("invoke %s: function error %s: %s", event, fnErr.Type, fnErr.Message)
	}
}

// mustTargetAccount makes sure the second account has its roles and
// cluster: a stack started before they existed gets them now.
func (h *harness) mustTargetAccount(tb testing.TB) {
	tb.Helper()
	if err := h.stack.SetupTargetAccount(context.Background()); err != nil {
		tb.Fatal(err)
	}
}

// mapRole adds a mapRoles entry for arn (group lambda-eks) to aws-auth, waits
// until the authenticator maps a token of that role, and restores aws-auth
// at the end of the test.
func (h *harness) mapRole(tb testing.TB, arn, username string) {
	tb.Helper()
	ctx := context.Background()
	cms := h.admin.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "aws-auth", metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	original := maps.Clone(cm.Data)
	tb.Cleanup(func() {
		cur, err := cms.Get(context.Background(), "aws-auth", metav1.GetOptions{})
		if err != nil {
			tb.Errorf("restore aws-auth: %v", err)
			return
		}
		cur.Data = original
		if _, err := cms.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			tb.Errorf("restore aws-auth: %v", err)
		}
	})
	var entries []map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["mapRoles"]), &entries); err != nil {
		tb.Fatal(err)
	}
	entries = append(entries, map[string]any{"rolearn": arn, "username": username, "groups": []string{stack.Group}})
	b, err := yaml.Marshal(entries)
	if err != nil {
		tb.Fatal(err)
	}
	cm.Data = maps.Clone(cm.Data)
	cm.Data["mapRoles"] = string(b)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}

	if err := h.waitMapped(ctx, arn, stack.Group); err != nil {
		tb.Fatal(err)
	}
}

// waitMapped waits until the authenticator maps a token of a session of arn
// into group: it learns of aws-auth changes through a watch, which may be
// reconnecting (after a test restarted kube-apiserver, say).
func (h *harness) waitMapped(ctx context.Context, arn, group string) error {
	creds, err := h.stack.AssumeRoleARN(ctx, arn, "probe-"+runID())
	if err != nil {
		return err
	}
	cfg, err := auth.LoadConfig(ctx, config.WithRegion(stack.Region),
		config.WithCredentialsProvider(aws.NewCredentialsCache(credentials.StaticCredentialsProvider{Value: creds})))
	if err != nil {
		return err
	}
	ts, err := auth.NewTokenSource(cfg, stack.ClusterName)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		tok, err := ts.Token()
		if err != nil {
			return err
		}
		user, err := selfSubjectReview(ctx, h, tok.AccessToken)
		if err == nil && slices.Contains(user.Groups, group) {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("its groups are %v", user.Groups)
			}
			return fmt.Errorf("%s not mapped to %s 15 s after the aws-auth update: %w", arn, group, err)
		}
	}
}

// setFaults switches the shim's faults and clears them at the end of the
// test.
func (h *harness) setFaults(tb testing.TB, f shim.Faults) {
	tb.Helper()
	if err := h.stack.SetShimFaults(context.Background(), f); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.stack.SetShimFaults(context.Background(), shim.Faults{}); err != nil {
			tb.Errorf("clear shim faults: %v", err)
		}
	})
}

func (h *harness) shimCounts(tb testing.TB) shim.Counts {
	tb.Helper()
	c, err := h.stack.ShimCounts(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// countsSince is what the shim counted between two readings.
func countsSince(before, after shim.Counts) shim.Counts {
	d := shim.Counts{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

// otherSigner returns the access key that signed service requests in c
// other than not, or "".
func otherSigner(c shim.Counts, service, not string) string {
	for k := range c {
		if key, ok := strings.CutPrefix(k, service+"@"); ok && key != not {
			return key
		}
	}
	return ""
}
