package lifecycle

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

const (
	testInstance = "i-0123456789abcdef0"
	testToken    = "c613620e-07e2-4ed2-a9e2-ef8258911ade"
)

func terminateEvent(detail string) string {
	return `{"version":"0","id":"7e5c0a5b-0000-4000-8000-000000000001","detail-type":"EC2 Instance-terminate Lifecycle Action",
"source":"aws.autoscaling","account":"123456789012","time":"2026-12-06T12:00:00Z","region":"us-east-1",
"resources":["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x:autoScalingGroupName/nodes"],"detail":` + detail + `}`
}

var terminateDetail = `{"LifecycleActionToken":"` + testToken + `","AutoScalingGroupName":"nodes","LifecycleHookName":"drain",
"EC2InstanceId":"` + testInstance + `","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING","Origin":"AutoScalingGroup","Destination":"EC2"}`

func TestDecodeEvent(t *testing.T) {
	t.Parallel()
	launch := strings.NewReplacer("terminate Lifecycle", "launch Lifecycle", "TERMINATING", "LAUNCHING").Replace(terminateEvent(terminateDetail))
	cases := []struct {
		name, event string
		kind        Kind
		instances   []string
	}{
		{"terminate", terminateEvent(terminateDetail), Terminate, []string{testInstance}},
		{"launch", launch, Launch, []string{testInstance}},
		{"test notification", terminateEvent(`{"AutoScalingGroupName":"nodes","Event":"autoscaling:TEST_NOTIFICATION"}`), Test, nil},
		{"spot", `{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","time":"2026-12-06T12:00:00Z",
			"detail":{"instance-id":"` + testInstance + `","instance-action":"terminate"}}`, Spot, []string{testInstance}},
		{"rebalance", `{"detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","detail":{"instance-id":"i-01234567"}}`,
			Rebalance, []string{"i-01234567"}},
		{"health, instances in resources too", `{"detail-type":"AWS Health Event","source":"aws.health",
			"resources":["arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaaa","` + testInstance + `"],
			"detail":{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{"entityValue":"` + testInstance + `"}]}}`,
			Scheduled, []string{testInstance, "i-0aaaaaaaaaaaaaaaa"}},
		{"health", `{"detail-type":"AWS Health Event","source":"aws.health","detail":{"service":"EC2","eventTypeCategory":"scheduledChange",
			"eventTypeCode":"AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED","affectedEntities":[{"entityValue":"` + testInstance + `"},{"entityValue":"vol-1"}]}}`,
			Scheduled, []string{testInstance}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ev, err := DecodeEvent([]byte(c.event))
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			if ev.Kind != c.kind || strings.Join(ev.Instances, ",") != strings.Join(c.instances, ",") {
				t.Errorf("kind %s, instances %v; want %s, %v", ev.Kind, ev.Instances, c.kind, c.instances)
			}
		})
	}
}

func TestDecodeEventRefusesWithTypedErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, event, want string }{
		{"not json", `{`, "JSON"},
		{"array", `[]`, "object"},
		{"foreign source", `{"source":"aws.s3","detail-type":"Object Created","detail":{}}`, "not a node lifecycle event"},
		{"scheduled event", `{"source":"aws.events","detail-type":"Scheduled Event","detail":{}}`, "not a node lifecycle event"},
		{"bad instance", terminateEvent(strings.Replace(terminateDetail, testInstance, "i-xyz; rm", 1)), "EC2InstanceId"},
		{"bad token", terminateEvent(strings.Replace(terminateDetail, testToken, "short", 1)), "LifecycleActionToken"},
		{"transition and detail-type disagree", terminateEvent(strings.Replace(terminateDetail, "TERMINATING", "LAUNCHING", 1)), "not a lifecycle action"},
		{"health of another service", `{"source":"aws.health","detail-type":"AWS Health Event","detail":{"service":"RDS","eventTypeCategory":"scheduledChange"}}`, "only EC2"},
		{"health naming no instance", `{"source":"aws.health","detail-type":"AWS Health Event","detail":{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[]}}`, "no EC2 instance"},
		{"spot without instance", `{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning","detail":{}}`, "instance-id"},
		{"continuation forged", `{"source":"aws.ec2","detail-type":"EC2 Instance Rebalance Recommendation","detail":{"instance-id":"i-01234567"},"lambda-eks-continuation":{"attempt":0}}`, "continuation"},
		{"continuation chain too long", `{"source":"aws.ec2","detail-type":"EC2 Instance Rebalance Recommendation","detail":{"instance-id":"i-01234567"},"lambda-eks-continuation":{"attempt":251}}`, "at most 250"},
		{"too deep", strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40), "deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeEvent([]byte(c.event))
			var e *invoke.Error
			if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
				t.Fatalf("err = %v, want an InvalidEvent *invoke.Error", err)
			}
			if !strings.Contains(e.Message, c.want) {
				t.Errorf("message %q does not say %q", e.Message, c.want)
			}
		})
	}
}

func TestContinuedEventCarriesTheOriginalAndCounts(t *testing.T) {
	t.Parallel()
	ev, err := DecodeEvent([]byte(terminateEvent(terminateDetail)))
	if err != nil {
		t.Fatal(err)
	}
	started := time.Date(2026, 12, 6, 12, 0, 5, 0, time.UTC)
	next, err := ev.continued(started)
	if err != nil {
		t.Fatal(err)
	}
	ev2, err := DecodeEvent(next)
	if err != nil {
		t.Fatalf("the continuation does not decode: %v", err)
	}
	if ev2.Continuation == nil || ev2.Continuation.Attempt != 2 || !ev2.Continuation.Started.Equal(started) {
		t.Fatalf("continuation %+v, want attempt 2 started %s", ev2.Continuation, started)
	}
	if *ev2.Hook != *ev.Hook || ev2.ID != ev.ID {
		t.Errorf("the continuation changed the event: %+v vs %+v", ev2.Hook, ev.Hook)
	}
	third, err := ev2.continued(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(third, &top); err != nil {
		t.Fatal(err)
	}
	var c Continuation
	if err := json.Unmarshal(top[ContinuationKey], &c); err != nil || c.Attempt != 3 || !c.Started.Equal(started) {
		t.Errorf("third invocation's continuation %s, want attempt 3 from the first start", top[ContinuationKey])
	}
}
