package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/kube"
)

// Actions the function performs.
const (
	ActionEnsureNginx = "ensure-nginx"
	ActionApply       = "apply"
	ActionDelete      = "delete"
	ActionScale       = "scale"
	ActionRestart     = "restart"
	ActionStatus      = "status"
)

var actions = []string{ActionEnsureNginx, ActionApply, ActionDelete, ActionScale, ActionRestart, ActionStatus}

// maxEventBytes bounds what is decoded at all: Lambda's own cap on a
// synchronous payload, so a manifest Lambda accepts is never refused here.
const maxEventBytes = 6 << 20

// maxWait is Lambda's 15-minute cap; a wait is further bounded by the
// function's own timeout.
const maxWait = 15 * time.Minute

// Event is one invocation's intent. Every field is optional: what is missing
// comes from the function's environment (Config).
type Event struct {
	Action     string    `json:"action,omitempty"`
	Cluster    string    `json:"cluster,omitempty"`
	Region     string    `json:"region,omitempty"`
	Namespace  string    `json:"namespace,omitempty"`
	Name       string    `json:"name,omitempty"`
	Image      string    `json:"image,omitempty"`
	Replicas   *Replicas `json:"replicas,omitempty"`
	RoleARN    string    `json:"roleArn,omitempty"`
	ExternalID string    `json:"externalId,omitempty"`

	// Manifest is one or more YAML or JSON documents (apply, delete, status).
	Manifest string `json:"manifest,omitempty"`
	// ManifestS3 names a manifest in S3 instead (s3://bucket/key), for
	// manifests larger than an event may be.
	ManifestS3 string `json:"manifestS3,omitempty"`
	// Kind names the object of delete, scale, restart and status.
	Kind string `json:"kind,omitempty"`
	// Selector is a label selector: scale every matching workload.
	Selector string `json:"selector,omitempty"`
	// Force takes ownership of conflicting fields (apply).
	Force bool `json:"force,omitempty"`
	// DryRun asks the API server to check, not persist (apply, delete,
	// scale, restart).
	DryRun bool `json:"dryRun,omitempty"`
	// Propagation is Background (default) or Foreground (delete).
	Propagation string `json:"propagation,omitempty"`
	// Wait is how long to wait for rollouts, e.g. "2m" (apply, scale,
	// restart).
	Wait string `json:"wait,omitempty"`
}

// Replicas is a replica count, or "restore": the count a scale to 0
// remembered.
type Replicas struct {
	Count   int32
	Restore bool
}

// replicasRestore is the string form of Replicas{Restore: true}.
const replicasRestore = "restore"

// replicasError is a replicas value that is neither a count nor "restore".
type replicasError struct{ value string }

func (e *replicasError) Error() string {
	return fmt.Sprintf(`field "replicas" must be a JSON integer or "restore", not %s`, e.value)
}

// UnmarshalJSON accepts an integer or the string "restore".
func (r *Replicas) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil || s != replicasRestore {
			return &replicasError{value: string(b)}
		}
		*r = Replicas{Restore: true}
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 32)
	if err != nil {
		return &replicasError{value: string(b)}
	}
	*r = Replicas{Count: int32(n)}
	return nil
}

// MarshalJSON writes the form UnmarshalJSON reads.
func (r Replicas) MarshalJSON() ([]byte, error) {
	if r.Restore {
		return json.Marshal(replicasRestore)
	}
	return json.Marshal(r.Count)
}

// scheduledEvent is an EventBridge scheduled event (a rule's schedule),
// which carries no intent of ours. It is recognised only with exactly these
// fields, decoded as strictly as an Event, and an empty detail.
type scheduledEvent struct {
	Version    string   `json:"version"`
	ID         string   `json:"id"`
	DetailType string   `json:"detail-type"`
	Source     string   `json:"source"`
	Account    string   `json:"account"`
	Time       string   `json:"time"`
	Region     string   `json:"region"`
	Resources  []string `json:"resources"`
	Detail     struct{} `json:"detail"`
}

// maxEventDepth bounds how deeply an event's JSON may nest. An Event is
// flat (depth 1, 2 for a scheduled event's detail); the bound only keeps a
// hostile payload from costing a deep recursion in the decoder.
const maxEventDepth = 32

// eventFields lists the Event's JSON names, for the message about an
// unknown field.
const eventFields = "action, cluster, region, namespace, name, image, replicas, roleArn, externalId, " +
	"manifest, manifestS3, kind, selector, force, dryRun, propagation, wait"

// DecodeEvent decodes raw, the payload exactly as Lambda received it,
// strictly: field names match case-sensitively, an unknown or repeated
// field, a wrong type, data after the object, invalid UTF-8 and nesting
// deeper than maxEventDepth are all errors. Empty input, null and an
// EventBridge scheduled event decode to the zero Event, which runs the
// default action.
func DecodeEvent(raw []byte) (Event, error) {
	if len(raw) > maxEventBytes {
		return Event{}, invalid("event is %d bytes; at most %d are accepted", len(raw), maxEventBytes)
	}
	trimmed := bytes.Trim(raw, jsonSpace)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return Event{}, nil
	}
	if trimmed[0] != '{' {
		if kind := describeValue(trimmed); kind != "" {
			return Event{}, invalid("event must be a JSON object, not %s", kind)
		}
		return Event{}, invalid("event must be a JSON object; it is not JSON")
	}
	if !utf8.Valid(trimmed) {
		return Event{}, invalid("event is not valid UTF-8")
	}
	if err := checkDepth(trimmed, maxEventDepth); err != nil {
		return Event{}, err
	}
	var ev Event
	strictErrs, err := sigsjson.UnmarshalStrict(trimmed, &ev)
	if err == nil && len(strictErrs) == 0 {
		return ev, nil
	}
	if isScheduledEvent(trimmed) {
		return Event{}, nil
	}
	if err != nil {
		return Event{}, invalid("%s", describeJSONError(trimmed, err))
	}
	return Event{}, invalid("%s", describeStrictErrors(strictErrs))
}

// jsonSpace is JSON's whitespace; bytes.TrimSpace would also drop Unicode
// spaces that JSON does not allow.
const jsonSpace = " \t\r\n"

// isScheduledEvent reports whether b is an EventBridge scheduled event.
func isScheduledEvent(b []byte) bool {
	var sched scheduledEvent
	strictErrs, err := sigsjson.UnmarshalStrict(b, &sched)
	return err == nil && len(strictErrs) == 0 &&
		sched.Source == "aws.events" && sched.DetailType == "Scheduled Event"
}

// checkDepth refuses JSON nested deeper than limit, counting brackets
// outside strings, before any decoder recurses into it.
func checkDepth(b []byte, limit int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > limit {
				return invalid("event nests deeper than %d levels", limit)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// describeValue names the kind of JSON value b starts with, or "".
func describeValue(b []byte) string {
	switch c := b[0]; {
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	}
	return ""
}

// maxStrictErrors bounds how many unknown or repeated fields one message lists.
const maxStrictErrors = 5

// describeStrictErrors words sigs.k8s.io/json's strict errors: unknown
// fields (a misspelt or wrongly cased name) and repeated fields (which of
// two values counts is ambiguous, so neither does).
func describeStrictErrors(errs []error) string {
	msgs := make([]string, 0, min(len(errs), maxStrictErrors))
	unknown := false
	for _, err := range errs[:min(len(errs), maxStrictErrors)] {
		msgs = append(msgs, err.Error())
		unknown = unknown || strings.HasPrefix(err.Error(), "unknown field")
	}
	if len(errs) > maxStrictErrors {
		msgs = append(msgs, fmt.Sprintf("and %d more", len(errs)-maxStrictErrors))
	}
	msg := strings.Join(msgs, "; ")
	if unknown {
		msg += "; field names are case-sensitive; known fields: " + eventFields
	}
	return msg
}

func describeJSONError(b []byte, err error) string {
	var typeErr *json.UnmarshalTypeError
	var replicasErr *replicasError
	switch {
	case errors.As(err, &replicasErr):
		return replicasErr.Error()
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q must be a JSON %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case hasTrailingData(b):
		return "event has data after its JSON object"
	}
	if ok, offset := sigsjson.SyntaxErrorOffset(err); ok {
		return fmt.Sprintf("event is not valid JSON at byte %d: %s", offset, err.Error())
	}
	return "event: " + err.Error()
}

// hasTrailingData reports whether b holds one valid JSON value followed by
// more than whitespace.
func hasTrailingData(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	if dec.Decode(&v) != nil {
		return false
	}
	_, err := dec.Token()
	return !errors.Is(err, io.EOF)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int32", "int", "int64":
		return "integer"
	case "string":
		return "string"
	case "bool":
		return "boolean"
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

	// Restore scales back to the remembered replicas instead of Replicas.
	Restore bool
	// Objects is the decoded manifest (apply, and delete or status by
	// manifest); nil otherwise, or until ManifestS3 is read.
	Objects kube.Manifest
	// ManifestS3Bucket and ManifestS3Key name the manifest in S3, read
	// after every other check.
	ManifestS3Bucket, ManifestS3Key string
	// MaxDocuments bounds the objects of the manifest in S3.
	MaxDocuments int
	Kind         string
	Selector     string
	Force        bool
	DryRun       bool
	Propagation  metav1.DeletionPropagation
	Wait         time.Duration
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
	if err := checkControls(
		"action", ev.Action, "cluster", ev.Cluster, "region", ev.Region, "namespace", ev.Namespace,
		"name", ev.Name, "image", ev.Image, "roleArn", ev.RoleARN, "externalId", ev.ExternalID,
		"kind", ev.Kind, "selector", ev.Selector, "propagation", ev.Propagation, "wait", ev.Wait,
	); err != nil {
		return Request{}, err
	}
	if i := strings.IndexFunc(ev.Manifest, isManifestControl); i >= 0 {
		return Request{}, invalid("manifest has control character %U at byte %d; YAML and JSON allow only tab, newline and carriage return",
			[]rune(ev.Manifest[i:])[0], i)
	}
	if ev.Replicas != nil {
		r.Replicas, r.Restore = ev.Replicas.Count, ev.Replicas.Restore
	}
	// An event's role comes with its own external ID, never the default's.
	if ev.RoleARN != "" {
		r.ExternalID = ev.ExternalID
	}

	if !slices.Contains(actions, r.Action) {
		return Request{}, invalid("unknown action %q; known actions: %s", r.Action, strings.Join(actions, ", "))
	}
	if err := checkFields(ev, r.Action); err != nil {
		return Request{}, err
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
	if err := checkName(r.Action, r.Name); err != nil {
		return Request{}, err
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
	if err := resolveAction(ev, cfg, &r); err != nil {
		return Request{}, err
	}
	return r, nil
}

// checkControls refuses a control character (U+0000 to U+001F, U+007F to
// U+009F) in any of the named values (name, value pairs): it is never part
// of a valid name, selector or image, and some parsers stop at it (a
// selector "app=web\x00" would read as "app=web").
func checkControls(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		name, v := pairs[i], pairs[i+1]
		if j := strings.IndexFunc(v, unicode.IsControl); j >= 0 {
			return invalid("%s %q has control character %U at byte %d; names, selectors and images never hold one",
				name, v, []rune(v[j:])[0], j)
		}
	}
	return nil
}

// isManifestControl reports a control character YAML does not allow (it
// allows tab, newline, carriage return and next-line).
func isManifestControl(r rune) bool {
	return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' && r != '\u0085'
}

// fieldsOf lists the event fields an action reads, beyond those every
// action reads (action, cluster, region, namespace, roleArn, externalId).
var fieldsOf = map[string][]string{
	ActionEnsureNginx: {"name", "image", "replicas"},
	ActionApply:       {"manifest", "manifestS3", "force", "dryRun", "wait"},
	ActionDelete:      {"manifest", "manifestS3", "kind", "name", "propagation", "dryRun"},
	ActionScale:       {"kind", "name", "selector", "replicas", "dryRun", "wait"},
	ActionRestart:     {"kind", "name", "dryRun", "wait"},
	ActionStatus:      {"manifest", "manifestS3", "kind", "name"},
}

// checkFields refuses a field the action does not read: a field that would
// be silently ignored is most likely a mistake.
func checkFields(ev Event, action string) error {
	set := map[string]bool{
		"name": ev.Name != "", "image": ev.Image != "", "replicas": ev.Replicas != nil,
		"manifest": ev.Manifest != "", "manifestS3": ev.ManifestS3 != "", "kind": ev.Kind != "", "selector": ev.Selector != "",
		"force": ev.Force, "dryRun": ev.DryRun, "propagation": ev.Propagation != "", "wait": ev.Wait != "",
	}
	var extra []string
	for f, isSet := range set {
		if isSet && !slices.Contains(fieldsOf[action], f) {
			extra = append(extra, f)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return invalid("action %s does not use %s; it reads: %s", action, strings.Join(extra, ", "), strings.Join(fieldsOf[action], ", "))
	}
	return nil
}

var kindRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,62}(\.[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)?$`)

// resolveAction checks and fills the fields of the actions beyond
// ensure-nginx. The manifest is decoded here, so that a bad document is
// refused before the function connects to anything.
func resolveAction(ev Event, cfg Config, r *Request) error {
	r.Kind, r.Selector, r.Force, r.DryRun = ev.Kind, ev.Selector, ev.Force, ev.DryRun
	if r.Restore && r.Action != ActionScale {
		return invalid(`replicas "restore" is only for action scale`)
	}
	if ev.Wait != "" {
		d, err := time.ParseDuration(ev.Wait)
		if err != nil || d <= 0 {
			return invalid("wait %q is not a positive duration such as 90s or 2m", ev.Wait)
		}
		if d > maxWait {
			return invalid("wait %s is longer than Lambda's 15-minute limit", d)
		}
		if ev.DryRun {
			return invalid("wait and dryRun do not go together: a dry run starts no rollout")
		}
		r.Wait = d
	}
	maxDocs := cfg.MaxDocuments
	if maxDocs <= 0 {
		maxDocs = kube.MaxDocuments
	}
	if ev.ManifestS3 != "" {
		r.MaxDocuments = maxDocs
		if ev.Manifest != "" {
			return invalid("manifest and manifestS3 do not go together: give one")
		}
		var err error
		if r.ManifestS3Bucket, r.ManifestS3Key, err = parseS3URI(ev.ManifestS3); err != nil {
			return err
		}
	}
	if ev.Manifest != "" {
		m, err := kube.DecodeManifest([]byte(ev.Manifest), maxDocs)
		if err != nil {
			return invalid("%s; nothing was changed", err.Error())
		}
		r.Objects = m
	}
	if ev.Kind != "" && !kindRE.MatchString(ev.Kind) {
		return invalid("kind %q is not a kind such as Deployment or Widget.example.com", ev.Kind)
	}
	if ev.Selector != "" {
		if _, err := labels.Parse(ev.Selector); err != nil {
			return invalid("selector %q is not a label selector: %s", ev.Selector, err.Error())
		}
	}
	hasManifest := ev.Manifest != "" || ev.ManifestS3 != ""
	switch r.Action {
	case ActionApply:
		if !hasManifest {
			return invalid("action apply needs a manifest or manifestS3")
		}
	case ActionDelete:
		switch {
		case hasManifest && (ev.Kind != "" || ev.Name != ""):
			return invalid("action delete takes a manifest, or kind and name, not both")
		case !hasManifest && (ev.Kind == "" || ev.Name == ""):
			// No default name here: a delete names what it deletes.
			return invalid("action delete needs a manifest, or kind and name")
		}
		switch ev.Propagation {
		case "", string(metav1.DeletePropagationBackground):
			r.Propagation = metav1.DeletePropagationBackground
		case string(metav1.DeletePropagationForeground):
			r.Propagation = metav1.DeletePropagationForeground
		default:
			return invalid("propagation %q: want Background or Foreground", ev.Propagation)
		}
	case ActionScale:
		if ev.Replicas == nil {
			return invalid(`action scale needs replicas: a count, or "restore"`)
		}
		if ev.Selector != "" && ev.Name != "" {
			return invalid("action scale takes a name or a selector, not both")
		}
		if ev.Selector != "" {
			r.Name = ""
		}
		if ev.Kind != "" && ev.Kind != kube.KindDeployment && ev.Kind != kube.KindStatefulSet {
			return invalid("action scale scales kind Deployment or StatefulSet, not %s", ev.Kind)
		}
		if ev.Kind == "" && ev.Selector == "" {
			r.Kind = kube.KindDeployment
		}
	case ActionRestart:
		switch ev.Kind {
		case "":
			r.Kind = kube.KindDeployment
		case kube.KindDeployment, kube.KindStatefulSet, kube.KindDaemonSet:
		default:
			return invalid("action restart restarts kind Deployment, StatefulSet or DaemonSet, not %s", ev.Kind)
		}
	case ActionStatus:
		if hasManifest && (ev.Kind != "" || ev.Name != "") {
			return invalid("action status takes a manifest, or kind and name, not both")
		}
		if !hasManifest && ev.Kind == "" {
			r.Kind = kube.KindDeployment
		}
	}
	return nil
}

// checkName checks a name as the API server will: ensure-nginx's name is
// also a label value and a container's pod label (a DNS-1123 label);
// workloads are named by DNS-1123 subdomains (web.v2); other kinds, which
// delete and status may name (widgets.example.com, system:auth), need only
// be a valid path segment.
func checkName(action, name string) error {
	var errs []string
	switch action {
	case ActionEnsureNginx:
		errs = validation.IsDNS1123Label(name)
	case ActionScale, ActionRestart:
		errs = validation.IsDNS1123Subdomain(name)
	default:
		if name == "" {
			errs = []string{"must not be empty"}
		}
		errs = append(errs, content.IsPathSegmentName(name)...)
	}
	if len(errs) > 0 {
		return invalid("name %q is not a valid name for action %s: %s", name, action, strings.Join(errs, "; "))
	}
	return nil
}

func or(v, fallback string) string {
	if v != "" {
		return v
	}
	return fallback
}
