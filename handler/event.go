package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Actions the function performs.
const (
	ActionEnsureNginx = "ensure-nginx"
)

// maxEventBytes bounds what is decoded at all; Lambda caps synchronous
// payloads at 6 MB, and nothing lambda-eks does needs more than this.
const maxEventBytes = 1 << 20

// Event is one invocation's intent. Every field is optional: what is missing
// comes from the function's environment (Config).
type Event struct {
	Action     string `json:"action,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	Region     string `json:"region,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	Image      string `json:"image,omitempty"`
	Replicas   *int32 `json:"replicas,omitempty"`
	RoleARN    string `json:"roleArn,omitempty"`
	ExternalID string `json:"externalId,omitempty"`
}

// scheduledEvent holds the fields that tell an EventBridge scheduled event
// (which carries no intent of ours) from an Event.
type scheduledEvent struct {
	Source     string `json:"source"`
	DetailType string `json:"detail-type"`
}

// DecodeEvent decodes raw strictly: unknown fields, wrong types and trailing
// data are errors. Empty input, null and an EventBridge scheduled event
// decode to the zero Event, which runs the default action.
func DecodeEvent(raw []byte) (Event, error) {
	if len(raw) > maxEventBytes {
		return Event{}, invalid("event is %d bytes; at most %d are accepted", len(raw), maxEventBytes)
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return Event{}, nil
	}
	if trimmed[0] != '{' {
		return Event{}, invalid("event must be a JSON object")
	}
	var sched scheduledEvent
	if err := json.Unmarshal(trimmed, &sched); err == nil &&
		sched.Source == "aws.events" && sched.DetailType == "Scheduled Event" {
		return Event{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var ev Event
	if err := dec.Decode(&ev); err != nil {
		return Event{}, invalid("%s", describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Event{}, invalid("event has data after its JSON object")
	}
	return ev, nil
}

func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q must be a JSON %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("event is not valid JSON at byte %d: %s", syntaxErr.Offset, syntaxErr.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "event is not valid JSON: it ends too early"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Sprintf("unknown field %s; known fields: action, cluster, region, namespace, name, image, replicas, roleArn, externalId",
			strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return "event: " + err.Error()
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int32", "int", "int64":
		return "integer"
	case "string":
		return "string"
	}
	return goKind
}

// Request is an Event with every default filled in and every field checked.
type Request struct {
	Action     string
	Cluster    string
	Region     string
	Namespace  string
	Name       string
	Image      string
	Replicas   int32
	RoleARN    string
	ExternalID string
}

var (
	clusterNameRE = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$`)
	regionRE      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	roleARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// maxReplicas bounds a replica count from an event: a typo should not ask a
// cluster for a million pods.
const maxReplicas = 1000

// Resolve fills ev's gaps from cfg and validates the result. Nothing is
// written before this succeeds.
func Resolve(ev Event, cfg Config) (Request, error) {
	r := Request{
		Action:     or(ev.Action, cfg.DefaultAction),
		Cluster:    or(ev.Cluster, cfg.Cluster),
		Region:     or(ev.Region, cfg.Region),
		Namespace:  or(ev.Namespace, cfg.Namespace),
		Name:       or(ev.Name, cfg.Name),
		Image:      or(ev.Image, cfg.Image),
		Replicas:   cfg.Replicas,
		RoleARN:    or(ev.RoleARN, cfg.RoleARN),
		ExternalID: or(ev.ExternalID, cfg.ExternalID),
	}
	if ev.Replicas != nil {
		r.Replicas = *ev.Replicas
	}
	// An event's role comes with its own external ID, never the default's.
	if ev.RoleARN != "" {
		r.ExternalID = ev.ExternalID
	}

	switch r.Action {
	case ActionEnsureNginx:
	default:
		return Request{}, invalid("unknown action %q; known actions: %s", r.Action, ActionEnsureNginx)
	}
	if r.Cluster == "" {
		return Request{}, invalid("no cluster: set CLUSTER_NAME or the event's cluster")
	}
	if !clusterNameRE.MatchString(r.Cluster) {
		return Request{}, invalid("cluster %q is not a valid EKS cluster name", r.Cluster)
	}
	if r.Region == "" {
		return Request{}, invalid("no region: set CLUSTER_REGION or AWS_REGION, or the event's region")
	}
	if !regionRE.MatchString(r.Region) {
		return Request{}, invalid("region %q is not an AWS region name", r.Region)
	}
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return Request{}, invalid("namespace %q is not a valid DNS-1123 label: %s", r.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(r.Name); len(errs) > 0 {
		return Request{}, invalid("name %q is not a valid DNS-1123 label: %s", r.Name, strings.Join(errs, "; "))
	}
	if r.Image == "" || strings.ContainsAny(r.Image, " \t\r\n") || len(r.Image) > 1024 {
		return Request{}, invalid("image %q is not a container image reference", r.Image)
	}
	if r.Replicas < 0 || r.Replicas > maxReplicas {
		return Request{}, invalid("replicas %d is out of range 0..%d", r.Replicas, maxReplicas)
	}
	if r.RoleARN != "" && !roleARNRE.MatchString(r.RoleARN) {
		return Request{}, invalid("roleArn %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", r.RoleARN)
	}
	if r.ExternalID != "" && (len(r.ExternalID) < 2 || len(r.ExternalID) > 1224 || !externalIDRE.MatchString(r.ExternalID)) {
		return Request{}, invalid("externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-")
	}
	if r.ExternalID != "" && r.RoleARN == "" {
		return Request{}, invalid("externalId is only used with roleArn")
	}
	return r, nil
}

func or(v, fallback string) string {
	if v != "" {
		return v
	}
	return fallback
}
