package lifecycle

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Kind is what an event asks of a node.
type Kind string

// The kinds of event the function acts on.
const (
	// Terminate is an Auto Scaling terminate lifecycle action: drain, then
	// complete the action.
	Terminate Kind = "terminate"
	// Launch is an Auto Scaling launch lifecycle action: complete it once
	// the instance's Node is Ready.
	Launch Kind = "launch"
	// Spot is a Spot Instance interruption warning: two minutes to drain,
	// nothing to complete.
	Spot Kind = "spot-interruption"
	// Rebalance is an EC2 rebalance recommendation: cordon, and drain when
	// REBALANCE_DRAIN is true.
	Rebalance Kind = "rebalance-recommendation"
	// Scheduled is an AWS Health scheduled change to EC2 instances
	// (retirement, maintenance): drain every affected instance's node.
	Scheduled Kind = "scheduled-change"
	// Test is Auto Scaling's TEST_NOTIFICATION, sent when a hook is
	// created: acknowledged, nothing done.
	Test Kind = "test-notification"
)

// taintKey is the taint a drain puts on its node: it says why, in the
// function's own key space.
func (k Kind) taintKey() string {
	switch k {
	case Terminate:
		return "lambda-eks.io/asg-lifecycle-termination"
	case Spot:
		return "lambda-eks.io/spot-interruption"
	case Rebalance:
		return "lambda-eks.io/rebalance-recommendation"
	default:
		return "lambda-eks.io/scheduled-maintenance"
	}
}

// Hook is the Auto Scaling lifecycle action an event carries.
type Hook struct {
	ASG         string `json:"AutoScalingGroupName"`
	Name        string `json:"LifecycleHookName"`
	Token       string `json:"LifecycleActionToken"`
	Instance    string `json:"EC2InstanceId"`
	Transition  string `json:"LifecycleTransition"`
	Metadata    string `json:"NotificationMetadata,omitempty"`
	Origin      string `json:"Origin,omitempty"`
	Destination string `json:"Destination,omitempty"`
}

// Event is a checked node lifecycle event.
type Event struct {
	Kind      Kind
	Instances []string
	// Hook is set for Terminate and Launch.
	Hook *Hook
	// Time is when AWS sent the event.
	Time time.Time
	// ID is the EventBridge event id.
	ID string
	// Continuation is set when the function continues its own work.
	Continuation *Continuation
	// raw is the event as received, without any continuation: what a
	// continuation sends on.
	raw map[string]json.RawMessage
}

// Continuation is what an invocation hands the next one of the same work.
type Continuation struct {
	// Attempt numbers the invocation that receives it: the first carries
	// none, the second 2.
	Attempt int `json:"attempt"`
	// Started is when the first invocation began: a launch hook's wait is
	// measured from it.
	Started time.Time `json:"started"`
}

// ContinuationKey is the top-level key of a continuing invocation's event:
// the original event, with this key added.
const ContinuationKey = "lambda-eks-continuation"

// maxContinuations bounds a chain of invocations: at 15 minutes each, two
// days (the longest lifecycle hook) is 192.
const maxContinuations = 250

const (
	transitionTerminate = "autoscaling:EC2_INSTANCE_TERMINATING"
	transitionLaunch    = "autoscaling:EC2_INSTANCE_LAUNCHING"
	testNotification    = "autoscaling:TEST_NOTIFICATION"
)

var (
	instanceIDRE = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)
	// tokenRE is a lifecycle action token (a UUID) as Auto Scaling checks it.
	tokenRE = regexp.MustCompile(`^[0-9A-Za-z-]{36}$`)
	asgRE   = regexp.MustCompile(`^[\x20-\x7e]{1,255}$`)
)

// DecodeEvent reads a raw invocation payload: an EventBridge event from
// aws.autoscaling, aws.ec2 or aws.health that names instances, possibly
// carrying a Continuation. Anything else is an InvalidEvent error naming
// what is wrong; AWS may add fields to its events, so unknown ones are
// ignored.
func DecodeEvent(raw []byte) (*Event, error) {
	if len(raw) > invoke.MaxEventBytes {
		return nil, invoke.Invalid("event is %d bytes; at most %d", len(raw), invoke.MaxEventBytes)
	}
	b, err := invoke.Trim(raw)
	if err != nil {
		return nil, err
	}
	if err := invoke.CheckObject(b, 32); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, invoke.Invalid("event is not a JSON object: %v", err)
	}
	var cw events.CloudWatchEvent
	if err := json.Unmarshal(b, &cw); err != nil {
		return nil, invoke.Invalid("event is not an EventBridge event: %v", err)
	}
	ev := &Event{Time: cw.Time, ID: cw.ID, raw: top}
	if c, ok := top[ContinuationKey]; ok {
		ev.Continuation = &Continuation{}
		if err := json.Unmarshal(c, ev.Continuation); err != nil || ev.Continuation.Attempt < 2 {
			return nil, invoke.Invalid("%s is not a continuation of this function", ContinuationKey)
		}
		if ev.Continuation.Attempt > maxContinuations {
			return nil, invoke.Invalid("%s: %d invocations already; at most %d", ContinuationKey, ev.Continuation.Attempt, maxContinuations)
		}
		delete(top, ContinuationKey)
	}
	switch {
	case cw.Source == "aws.autoscaling":
		err = ev.autoscaling(cw)
	case cw.Source == "aws.ec2" && cw.DetailType == "EC2 Spot Instance Interruption Warning":
		ev.Kind = Spot
		err = ev.ec2Instance(cw.Detail)
	case cw.Source == "aws.ec2" && cw.DetailType == "EC2 Instance Rebalance Recommendation":
		ev.Kind = Rebalance
		err = ev.ec2Instance(cw.Detail)
	case cw.Source == "aws.health":
		err = ev.health(cw)
	default:
		return nil, invoke.Invalid("not a node lifecycle event (source %q, detail-type %q): this function takes Auto Scaling lifecycle actions, "+
			"EC2 Spot interruption warnings and rebalance recommendations, and AWS Health scheduled changes", cw.Source, cw.DetailType)
	}
	if err != nil {
		return nil, err
	}
	return ev, nil
}

func (ev *Event) autoscaling(cw events.CloudWatchEvent) error {
	var h Hook
	if err := json.Unmarshal(cw.Detail, &h); err != nil {
		return invoke.Invalid("%s: detail is not a lifecycle action: %v", cw.DetailType, err)
	}
	// A hook's creation sends TEST_NOTIFICATION, through EventBridge as
	// a lifecycle action whose transition (or Event) says so.
	var test struct{ Event string }
	_ = json.Unmarshal(cw.Detail, &test)
	if h.Transition == testNotification || test.Event == testNotification {
		ev.Kind = Test
		return nil
	}
	switch {
	case cw.DetailType == "EC2 Instance-terminate Lifecycle Action" && h.Transition == transitionTerminate:
		ev.Kind = Terminate
	case cw.DetailType == "EC2 Instance-launch Lifecycle Action" && h.Transition == transitionLaunch:
		ev.Kind = Launch
	default:
		return invoke.Invalid("not a lifecycle action this function handles (detail-type %q, LifecycleTransition %q): "+
			"route only EC2 Instance-terminate and EC2 Instance-launch Lifecycle Actions here", cw.DetailType, h.Transition)
	}
	switch {
	case !instanceIDRE.MatchString(h.Instance):
		return invoke.Invalid("detail.EC2InstanceId %q is not an EC2 instance id", h.Instance)
	case !tokenRE.MatchString(h.Token):
		return invoke.Invalid("detail.LifecycleActionToken %q is not a lifecycle action token", h.Token)
	case !asgRE.MatchString(h.ASG):
		return invoke.Invalid("detail.AutoScalingGroupName %q is not an Auto Scaling group name", h.ASG)
	case !asgRE.MatchString(h.Name):
		return invoke.Invalid("detail.LifecycleHookName %q is not a lifecycle hook name", h.Name)
	}
	ev.Hook, ev.Instances = &h, []string{h.Instance}
	return nil
}

func (ev *Event) ec2Instance(detail json.RawMessage) error {
	var d struct {
		Instance string `json:"instance-id"`
	}
	if err := json.Unmarshal(detail, &d); err != nil || !instanceIDRE.MatchString(d.Instance) {
		return invoke.Invalid("detail.instance-id %q is not an EC2 instance id", d.Instance)
	}
	ev.Instances = []string{d.Instance}
	return nil
}

// maxAffected bounds the instances one Health event may name.
const maxAffected = 100

func (ev *Event) health(cw events.CloudWatchEvent) error {
	var d struct {
		Service  string `json:"service"`
		Category string `json:"eventTypeCategory"`
		Entities []struct {
			Value string `json:"entityValue"`
		} `json:"affectedEntities"`
	}
	if err := json.Unmarshal(cw.Detail, &d); err != nil {
		return invoke.Invalid("AWS Health event: detail is not a Health event: %v", err)
	}
	if d.Service != "EC2" || d.Category != "scheduledChange" {
		return invoke.Invalid("AWS Health event for service %q, category %q: only EC2 scheduledChange events name instances to drain",
			d.Service, d.Category)
	}
	if len(d.Entities)+len(cw.Resources) > maxAffected {
		return invoke.Invalid("AWS Health event names %d affected entities and resources; at most %d", len(d.Entities)+len(cw.Resources), maxAffected)
	}
	// The instances are in affectedEntities, and in resources (ids or
	// instance ARNs).
	names := make([]string, 0, len(d.Entities)+len(cw.Resources))
	for _, e := range d.Entities {
		names = append(names, e.Value)
	}
	for _, r := range cw.Resources {
		names = append(names, r[strings.LastIndexByte(r, '/')+1:])
	}
	for _, n := range names {
		if instanceIDRE.MatchString(n) && !slices.Contains(ev.Instances, n) {
			ev.Instances = append(ev.Instances, n)
		}
	}
	if len(ev.Instances) == 0 {
		return invoke.Invalid("AWS Health event names no EC2 instance in detail.affectedEntities")
	}
	ev.Kind = Scheduled
	return nil
}

// continued returns the payload of the next invocation of the same work.
func (ev *Event) continued(started time.Time) ([]byte, error) {
	next := Continuation{Attempt: 2, Started: started}
	if ev.Continuation != nil {
		next.Attempt = ev.Continuation.Attempt + 1
		next.Started = ev.Continuation.Started
	}
	c, err := json.Marshal(next)
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(ev.raw)+1)
	for k, v := range ev.raw {
		out[k] = v
	}
	out[ContinuationKey] = c
	return json.Marshal(out)
}
