package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// sampleDetail reads the detail of an events/ sample.
func sampleDetail(tb testing.TB, h *harness, name string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, "events", name))
	if err != nil {
		tb.Fatal(err)
	}
	var ev struct {
		Detail map[string]any `json:"detail"`
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		tb.Fatal(err)
	}
	return ev.Detail
}

// TestNodeGroupProviderIDs: the replica's nodes are the instances of its
// Auto Scaling group in moto: each base node's spec.providerID names one
// (its name is not the instance's private DNS name, as with custom node
// names), the samples name them and asg-launch.json an instance of the
// group that is no node yet; a node added later for an instance is matched
// too.
func TestNodeGroupProviderIDs(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	insts, err := h.stack.NodeInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) < stack.NodeCount+1 {
		t.Fatalf("%d instances in %s, want at least %d: %+v", len(insts), stack.NodeASG, stack.NodeCount+1, insts)
	}
	for i := range stack.NodeCount {
		in := insts[i]
		if in.Node != stack.NodeName(i) {
			t.Errorf("instance %d: %+v, want node %s", i, in, stack.NodeName(i))
		}
		node, err := h.admin.CoreV1().Nodes().Get(ctx, stack.NodeName(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Spec.ProviderID != stack.ProviderID(in.ID) || !strings.HasPrefix(node.Spec.ProviderID, "aws:///"+stack.NodeZone+"/i-") {
			t.Errorf("node %s providerID %q, want %q", node.Name, node.Spec.ProviderID, stack.ProviderID(in.ID))
		}
		if !strings.HasSuffix(in.PrivateDNSName, ".ec2.internal") || in.PrivateDNSName == node.Name {
			t.Errorf("instance %s private DNS name %q", in.ID, in.PrivateDNSName)
		}
	}
	if got := sampleDetail(t, h, "asg-terminate.json")["EC2InstanceId"]; got != insts[2].ID {
		t.Errorf("events/asg-terminate.json names %v, want kwok-node-2's instance %s", got, insts[2].ID)
	}
	// The sample's launching instance is in the group and no node; other
	// tests may have launched more.
	sample, _ := sampleDetail(t, h, "asg-launch.json")["EC2InstanceId"].(string)
	if i := slices.IndexFunc(insts, func(in stack.Instance) bool { return in.ID == sample }); i < 0 || insts[i].Node != "" {
		t.Errorf("events/asg-launch.json names %s, want an instance of %s that is no node: %+v", sample, stack.NodeASG, insts)
	}

	// An instance that is no node yet becomes one (kwok makes it Ready),
	// named after its private DNS name as EKS names nodes.
	var launching stack.Instance
	for _, in := range insts {
		// (Other tests leave instances whose nodes they removed; one with no
		// private DNS name, terminated by a scale-in, cannot name a node.)
		if in.Node == "" && in.ID != sample && in.PrivateDNSName != "" {
			launching = in
		}
	}
	if launching.ID == "" {
		added, err := h.stack.ScaleNodeGroup(ctx, len(insts)+1)
		if err != nil || len(added) != 1 {
			t.Fatalf("scale out: %v %v", added, err)
		}
		all, err := h.stack.NodeInstances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		launching = all[slices.IndexFunc(all, func(in stack.Instance) bool { return in.ID == added[0] })]
	}
	name := strings.TrimSuffix(launching.PrivateDNSName, ".ec2.internal") + ".e2e"
	t.Cleanup(func() { _ = h.admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if err := h.stack.AddNode(ctx, name, stack.ProviderID(launching.ID), map[string]string{"lambda-eks.io/e2e": "nodegroup"}); err != nil {
		t.Fatal(err)
	}
	after, err := h.stack.NodeInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(after, func(in stack.Instance) bool { return in.ID == launching.ID })
	if i < 0 || after[i].Node != name {
		t.Errorf("after AddNode: %+v, want %s as node %s", after, launching.ID, name)
	}
}

// TestLifecycleActionsAsTheRole: the lifecycle function's role, through
// the shim as the function reaches AWS, completes a lifecycle action the
// replica registered, as Auto Scaling answers; describes the group's hooks
// and the instance (moto); and is mapped in aws-auth to its own user and
// group.
func TestLifecycleActionsAsTheRole(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	creds, err := h.stack.AssumeRole(ctx, stack.LifecycleRole, "lambda-eks-e2e-lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	client, err := h.stack.ShimHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	cfg := aws.Config{Region: stack.Region, HTTPClient: client, Credentials: credentials.StaticCredentialsProvider{Value: creds}}
	as := autoscaling.NewFromConfig(cfg)

	hooks, err := as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(stack.NodeASG)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, hk := range hooks.LifecycleHooks {
		got[aws.ToString(hk.LifecycleHookName)] = aws.ToString(hk.LifecycleTransition) + " " + aws.ToString(hk.DefaultResult)
		if aws.ToInt32(hk.HeartbeatTimeout) != stack.HookHeartbeatTimeout {
			t.Errorf("hook %s heartbeat timeout %d", aws.ToString(hk.LifecycleHookName), aws.ToInt32(hk.HeartbeatTimeout))
		}
	}
	if diff := cmp.Diff(map[string]string{stack.TerminateHook: "autoscaling:EC2_INSTANCE_TERMINATING CONTINUE",
		stack.LaunchHook: "autoscaling:EC2_INSTANCE_LAUNCHING ABANDON"}, got); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
	insts, err := h.stack.NodeInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	instance := insts[2]
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instance.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Reservations) != 1 || aws.ToString(out.Reservations[0].Instances[0].PrivateDnsName) != instance.PrivateDNSName {
		t.Errorf("DescribeInstances %s: %+v", instance.ID, out.Reservations)
	}

	token := "e2e00000-0000-4000-8000-" + strings.Repeat("0", 12-len(runID())) + runID()
	added, err := h.stack.RegisterLifecycleAction(ctx, shim.LifecycleDetail{LifecycleActionToken: token, AutoScalingGroupName: stack.NodeASG,
		LifecycleHookName: stack.TerminateHook, EC2InstanceID: instance.ID, LifecycleTransition: "autoscaling:EC2_INSTANCE_TERMINATING"})
	if err != nil || !added {
		t.Fatalf("register: %v %v", added, err)
	}
	if _, err := as.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String(stack.NodeASG),
		LifecycleHookName: aws.String(stack.TerminateHook), LifecycleActionToken: aws.String(token)}); err != nil {
		t.Fatal(err)
	}
	complete := func() error {
		_, err := as.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String(stack.NodeASG),
			LifecycleHookName: aws.String(stack.TerminateHook), LifecycleActionToken: aws.String(token), InstanceId: aws.String(instance.ID),
			LifecycleActionResult: aws.String("CONTINUE")})
		return err
	}
	if err := complete(); err != nil {
		t.Fatal(err)
	}
	var ae smithy.APIError
	if err := complete(); !errors.As(err, &ae) || ae.ErrorCode() != "ValidationError" || ae.ErrorMessage() != "No active Lifecycle Action found with token "+token {
		t.Errorf("second completion: %v, want ValidationError", err)
	}
	rec, err := h.stack.Lifecycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(rec.Actions, func(a shim.LifecycleAction) bool { return a.Token == token })
	if i < 0 || rec.Actions[i].State != shim.ActionCompleted || rec.Actions[i].Result != "CONTINUE" || rec.Actions[i].Heartbeats != 1 {
		t.Errorf("action %s: %+v", token, rec.Actions)
	}
	var calls []string
	for _, c := range rec.Calls {
		if c.Token == token && c.AccessKeyID == creds.AccessKeyID {
			calls = append(calls, c.Op+" "+c.Error)
		}
	}
	if diff := cmp.Diff([]string{"RecordLifecycleActionHeartbeat ", "CompleteLifecycleAction ", "CompleteLifecycleAction ValidationError"}, calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}

	tok, err := mintLifecycleToken(ctx, creds)
	if err != nil {
		t.Fatal(err)
	}
	user, err := selfSubjectReview(ctx, h, tok)
	if err != nil {
		t.Fatal(err)
	}
	if user.Username != stack.LifecycleUser || !slices.Contains(user.Groups, stack.LifecycleGroup) {
		t.Errorf("the lifecycle role is %q %v, want %s in %s", user.Username, user.Groups, stack.LifecycleUser, stack.LifecycleGroup)
	}
}

// mintLifecycleToken makes an EKS token for creds with the function's own
// auth package.
func mintLifecycleToken(ctx context.Context, creds aws.Credentials) (string, error) {
	cfg, err := auth.LoadConfig(ctx, config.WithRegion(stack.Region),
		config.WithCredentialsProvider(aws.NewCredentialsCache(credentials.StaticCredentialsProvider{Value: creds})))
	if err != nil {
		return "", err
	}
	ts, err := auth.NewTokenSource(cfg, stack.ClusterName)
	if err != nil {
		return "", err
	}
	tok, err := ts.Token()
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}
