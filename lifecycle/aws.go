package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// The AWS calls the function makes, as interfaces so that tests can play
// AWS. *autoscaling.Client, *ec2.Client and *lambda.Client satisfy them.
type (
	// AutoScaling answers lifecycle actions.
	AutoScaling interface {
		CompleteLifecycleAction(context.Context, *autoscaling.CompleteLifecycleActionInput, ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
		RecordLifecycleActionHeartbeat(context.Context, *autoscaling.RecordLifecycleActionHeartbeatInput, ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error)
		DescribeLifecycleHooks(context.Context, *autoscaling.DescribeLifecycleHooksInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error)
	}
	// EC2 finds an instance's private DNS name, for nodes named by it
	// whose providerID is not set.
	EC2 interface {
		DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	}
	// Lambda starts the next invocation of a drain that outlasts this one.
	Lambda interface {
		Invoke(context.Context, *lambda.InvokeInput, ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
	}
)

// AWS is the function's clients, built once per process.
type AWS struct {
	AutoScaling AutoScaling
	EC2         EC2
	Lambda      Lambda
	// Function is this function's name (AWS_LAMBDA_FUNCTION_NAME), which
	// a continuation invokes.
	Function string
}

// NewAWS returns the clients of cfg's credentials and region.
func NewAWS(cfg aws.Config, function string) AWS {
	return AWS{AutoScaling: autoscaling.NewFromConfig(cfg), EC2: ec2.NewFromConfig(cfg), Lambda: lambda.NewFromConfig(cfg), Function: function}
}

const (
	resultContinue = "CONTINUE"
	resultAbandon  = "ABANDON"
)

// hookTimes is what a lifecycle hook allows: a heartbeat at least every
// Heartbeat, and the whole action within Global.
type hookTimes struct {
	Heartbeat time.Duration
	Global    time.Duration
}

// Auto Scaling's defaults: a heartbeat timeout of an hour, a global timeout
// of 100 heartbeat timeouts or 48 hours, whichever is less.
const (
	defaultHeartbeat = time.Hour
	maxGlobal        = 48 * time.Hour
)

// hookTimes asks Auto Scaling for h's timeouts. A hook it does not know
// (deleted since the event) is an error: nothing would accept its answer.
func (a AWS) hookTimes(ctx context.Context, h *Hook) (hookTimes, error) {
	out, err := a.AutoScaling.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{
		AutoScalingGroupName: aws.String(h.ASG), LifecycleHookNames: []string{h.Name}})
	if err != nil {
		return hookTimes{}, fmt.Errorf("describe lifecycle hook %s of %s: %w", h.Name, h.ASG, err)
	}
	for _, lh := range out.LifecycleHooks {
		if aws.ToString(lh.LifecycleHookName) != h.Name {
			continue
		}
		t := hookTimes{Heartbeat: defaultHeartbeat}
		if lh.HeartbeatTimeout != nil {
			t.Heartbeat = time.Duration(*lh.HeartbeatTimeout) * time.Second
		}
		t.Global = min(100*t.Heartbeat, maxGlobal)
		if lh.GlobalTimeout != nil {
			t.Global = min(t.Global, time.Duration(*lh.GlobalTimeout)*time.Second)
		}
		return t, nil
	}
	return hookTimes{}, &invoke.Error{Code: invoke.NotFound, Message: fmt.Sprintf(
		"lifecycle hook %s of Auto Scaling group %s does not exist (deleted since the event?): nothing would take its answer", h.Name, h.ASG)}
}

// complete answers h with result. An action Auto Scaling no longer has
// pending (answered by a duplicate of this event, or timed out) is not an
// error: done says false, and why.
func (a AWS) complete(ctx context.Context, h *Hook, result string) (done bool, why string, err error) {
	_, err = a.AutoScaling.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: aws.String(h.ASG), LifecycleHookName: aws.String(h.Name),
		LifecycleActionToken: aws.String(h.Token), InstanceId: aws.String(h.Instance), LifecycleActionResult: aws.String(result)})
	if inactive(err) {
		return false, "no longer pending: " + apiMessage(err), nil
	}
	if err != nil {
		return false, "", fmt.Errorf("complete lifecycle action of %s (hook %s): %w", h.Instance, h.Name, err)
	}
	return true, "", nil
}

// heartbeat extends h's heartbeat timeout. An action no longer pending says
// so (gone) and is not an error.
func (a AWS) heartbeat(ctx context.Context, h *Hook) (gone bool, err error) {
	_, err = a.AutoScaling.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String(h.ASG), LifecycleHookName: aws.String(h.Name),
		LifecycleActionToken: aws.String(h.Token), InstanceId: aws.String(h.Instance)})
	if inactive(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("record lifecycle action heartbeat of %s (hook %s): %w", h.Instance, h.Name, err)
	}
	return false, nil
}

// inactive says whether err is Auto Scaling's answer for an action that is
// not pending: "No active Lifecycle Action found with ..." (ValidationError).
func inactive(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "ValidationError" &&
		strings.Contains(api.ErrorMessage(), "No active Lifecycle Action")
}

func apiMessage(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorMessage()
	}
	return err.Error()
}

// privateDNSName is instance's private DNS name, "" when EC2 does not know
// the instance (terminated long ago, another account or region).
func (a AWS) privateDNSName(ctx context.Context, instance string) (string, error) {
	out, err := a.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instance}})
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "InvalidInstanceID.NotFound" {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("describe instance %s: %w", instance, err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if aws.ToString(i.InstanceId) == instance {
				return aws.ToString(i.PrivateDnsName), nil
			}
		}
	}
	return "", nil
}

// continueAsync starts the next invocation with payload, asynchronously:
// Lambda queues it (its retries and on-failure destination apply) and
// this invocation ends.
func (a AWS) continueAsync(ctx context.Context, payload []byte) error {
	if a.Function == "" {
		return errors.New("AWS_LAMBDA_FUNCTION_NAME is not set: cannot continue in a new invocation")
	}
	_, err := a.Lambda.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(a.Function),
		InvocationType: lambdatypes.InvocationTypeEvent, Payload: payload})
	if err != nil {
		return fmt.Errorf("invoke %s to continue: %w", a.Function, err)
	}
	return nil
}
