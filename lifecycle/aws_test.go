package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// fakeAutoScaling plays Auto Scaling's lifecycle actions: pending tokens
// answer once, then "No active Lifecycle Action".
type fakeAutoScaling struct {
	hooks     []astypes.LifecycleHook
	pending   map[string]bool
	completed []string // token=result
	beats     int
}

func (f *fakeAutoScaling) CompleteLifecycleAction(_ context.Context, in *autoscaling.CompleteLifecycleActionInput, _ ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	tok := aws.ToString(in.LifecycleActionToken)
	if !f.pending[tok] {
		return nil, &smithy.GenericAPIError{Code: "ValidationError", Message: "No active Lifecycle Action found with token " + tok}
	}
	delete(f.pending, tok)
	f.completed = append(f.completed, tok+"="+aws.ToString(in.LifecycleActionResult))
	return &autoscaling.CompleteLifecycleActionOutput{}, nil
}

func (f *fakeAutoScaling) RecordLifecycleActionHeartbeat(_ context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput, _ ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error) {
	if !f.pending[aws.ToString(in.LifecycleActionToken)] {
		return nil, &smithy.GenericAPIError{Code: "ValidationError", Message: "No active Lifecycle Action found with instance ID " + aws.ToString(in.InstanceId)}
	}
	f.beats++
	return &autoscaling.RecordLifecycleActionHeartbeatOutput{}, nil
}

func (f *fakeAutoScaling) DescribeLifecycleHooks(_ context.Context, in *autoscaling.DescribeLifecycleHooksInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error) {
	return &autoscaling.DescribeLifecycleHooksOutput{LifecycleHooks: f.hooks}, nil
}

type fakeEC2 struct{ err error }

func (f fakeEC2) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return nil, f.err
}

func TestHookTimes(t *testing.T) {
	t.Parallel()
	h := &Hook{ASG: "nodes", Name: "drain"}
	cases := []struct {
		hook astypes.LifecycleHook
		want hookTimes
	}{
		{astypes.LifecycleHook{LifecycleHookName: aws.String("drain"), HeartbeatTimeout: aws.Int32(300), GlobalTimeout: aws.Int32(30000)},
			hookTimes{Heartbeat: 5 * time.Minute, Global: 500 * time.Minute}},
		{astypes.LifecycleHook{LifecycleHookName: aws.String("drain"), HeartbeatTimeout: aws.Int32(7200)},
			hookTimes{Heartbeat: 2 * time.Hour, Global: 48 * time.Hour}},
	}
	for _, c := range cases {
		got, err := AWS{AutoScaling: &fakeAutoScaling{hooks: []astypes.LifecycleHook{c.hook}}}.hookTimes(context.Background(), h)
		if err != nil || got != c.want {
			t.Errorf("hookTimes = %+v, %v; want %+v", got, err, c.want)
		}
	}
	_, err := AWS{AutoScaling: &fakeAutoScaling{}}.hookTimes(context.Background(), h)
	var e *invoke.Error
	if !errors.As(err, &e) || e.Code != invoke.NotFound || !strings.Contains(e.Message, "drain") {
		t.Errorf("a hook that is gone: %v, want NotFound naming it", err)
	}
}

func TestCompleteAnswersOnceAndTakesNoLongerPendingAsDone(t *testing.T) {
	t.Parallel()
	as := &fakeAutoScaling{pending: map[string]bool{testToken: true}}
	a := AWS{AutoScaling: as}
	h := &Hook{ASG: "nodes", Name: "drain", Token: testToken, Instance: testInstance}
	if gone, err := a.heartbeat(context.Background(), h); gone || err != nil || as.beats != 1 {
		t.Fatalf("heartbeat: gone %v, err %v, beats %d", gone, err, as.beats)
	}
	done, _, err := a.complete(context.Background(), h, resultContinue)
	if !done || err != nil {
		t.Fatalf("complete: %v, %v", done, err)
	}
	done, why, err := a.complete(context.Background(), h, resultContinue)
	if done || err != nil || !strings.Contains(why, "No active Lifecycle Action") {
		t.Errorf("second complete: done %v, why %q, err %v; want not done, no error", done, why, err)
	}
	if gone, err := a.heartbeat(context.Background(), h); !gone || err != nil {
		t.Errorf("heartbeat after completion: gone %v, err %v", gone, err)
	}
	if strings.Join(as.completed, ",") != testToken+"=CONTINUE" {
		t.Errorf("completed %v, want one CONTINUE", as.completed)
	}
}

func TestPrivateDNSNameOfAnUnknownInstanceIsEmpty(t *testing.T) {
	t.Parallel()
	a := AWS{EC2: fakeEC2{err: &smithy.GenericAPIError{Code: "InvalidInstanceID.NotFound", Message: "The instance ID 'i-0123' does not exist"}}}
	if dns, err := a.privateDNSName(context.Background(), "i-01234567"); dns != "" || err != nil {
		t.Errorf("unknown instance: %q, %v", dns, err)
	}
	a.EC2 = fakeEC2{err: &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "no"}}
	if _, err := a.privateDNSName(context.Background(), "i-01234567"); err == nil {
		t.Error("a refusal is not an error")
	}
	if err := (AWS{}).continueAsync(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "AWS_LAMBDA_FUNCTION_NAME") {
		t.Errorf("continue without a function name: %v", err)
	}
}
