package handler

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
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
func replicasError(value []byte) error {
	return invoke.Invalid(`field "replicas" must be a JSON integer or "restore", not %s`, value)
}

// UnmarshalJSON accepts an integer or the string "restore".
func (r *Replicas) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil || s != replicasRestore {
			return replicasError(b)
		}
		*r = Replicas{Restore: true}
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 32)
	if err != nil {
		return replicasError(b)
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
	trimmed, err := invoke.Trim(raw)
	if err != nil {
		return Event{}, err
	}
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return Event{}, nil
	}
	if err := invoke.CheckObject(trimmed, maxEventDepth); err != nil {
		return Event{}, err
	}
	var ev Event
	err = invoke.Strict(trimmed, &ev, eventFields)
	if err != nil && isScheduledEvent(trimmed) {
		return Event{}, nil
	}
	return ev, err
}

// isScheduledEvent reports whether b is an EventBridge scheduled event.
func isScheduledEvent(b []byte) bool {
	var sched scheduledEvent
	strictErrs, err := sigsjson.UnmarshalStrict(b, &sched)
	return err == nil && len(strictErrs) == 0 &&
		sched.Source == "aws.events" && sched.DetailType == "Scheduled Event"
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

// target is where r's cluster is and who reaches it.
func (r Request) target(sessionName string) auth.Target {
	return auth.Target{Cluster: r.Cluster, Region: r.Region, RoleARN: r.RoleARN, ExternalID: r.ExternalID, SessionName: sessionName}
}

// maxReplicas bounds a replica count from an event: a typo should not ask a
// cluster for a million pods.
const maxReplicas = 1000

// Resolve fills ev's gaps from cfg and validates the result. Nothing is
// written before this succeeds.
func Resolve(ev Event, cfg Config) (Request, error) {
	t := cfg.Target(ev.Cluster, ev.Region, ev.RoleARN, ev.ExternalID)
	r := Request{
		Action:     invoke.Or(ev.Action, cfg.DefaultAction),
		Cluster:    t.Cluster,
		Region:     t.Region,
		Namespace:  invoke.Or(ev.Namespace, cfg.Namespace),
		Name:       invoke.Or(ev.Name, cfg.Name),
		Image:      invoke.Or(ev.Image, cfg.Image),
		Replicas:   cfg.Replicas,
		RoleARN:    t.RoleARN,
		ExternalID: t.ExternalID,
	}
	if err := invoke.CheckControls(
		"action", ev.Action, "cluster", ev.Cluster, "region", ev.Region, "namespace", ev.Namespace,
		"name", ev.Name, "image", ev.Image, "roleArn", ev.RoleARN, "externalId", ev.ExternalID,
		"kind", ev.Kind, "selector", ev.Selector, "propagation", ev.Propagation, "wait", ev.Wait,
	); err != nil {
		return Request{}, err
	}
	if i := strings.IndexFunc(ev.Manifest, isManifestControl); i >= 0 {
		return Request{}, invoke.Invalid("manifest has control character %U at byte %d; YAML and JSON allow only tab, newline and carriage return",
			[]rune(ev.Manifest[i:])[0], i)
	}
	if ev.Replicas != nil {
		r.Replicas, r.Restore = ev.Replicas.Count, ev.Replicas.Restore
	}

	if !slices.Contains(actions, r.Action) {
		return Request{}, invoke.Invalid("unknown action %q; known actions: %s", r.Action, strings.Join(actions, ", "))
	}
	if err := checkFields(ev, r.Action); err != nil {
		return Request{}, err
	}
	if err := t.Validate(); err != nil {
		return Request{}, invoke.Invalid("%s", err.Error())
	}
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return Request{}, invoke.Invalid("namespace %q is not a valid DNS-1123 label: %s", r.Namespace, strings.Join(errs, "; "))
	}
	if err := checkName(r.Action, r.Name); err != nil {
		return Request{}, err
	}
	if r.Image == "" || strings.ContainsAny(r.Image, " \t\r\n") || len(r.Image) > 1024 {
		return Request{}, invoke.Invalid("image %q is not a container image reference", r.Image)
	}
	if r.Replicas < 0 || r.Replicas > maxReplicas {
		return Request{}, invoke.Invalid("replicas %d is out of range 0..%d", r.Replicas, maxReplicas)
	}
	if err := resolveAction(ev, cfg, &r); err != nil {
		return Request{}, err
	}
	return r, nil
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
		return invoke.Invalid("action %s does not use %s; it reads: %s", action, strings.Join(extra, ", "), strings.Join(fieldsOf[action], ", "))
	}
	return nil
}

var kindRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*(\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?)?$`)

// validKind is kindRE with a kind of at most 63 bytes and a group of at
// most 253, checked apart: as counted repeats in the pattern they compiled
// to hundreds of states at every cold start.
func validKind(s string) bool {
	k, g, _ := strings.Cut(s, ".")
	return len(k) <= 63 && len(g) <= 253 && kindRE.MatchString(s)
}

// resolveAction checks and fills the fields of the actions beyond
// ensure-nginx. The manifest is decoded here, so that a bad document is
// refused before the function connects to anything.
func resolveAction(ev Event, cfg Config, r *Request) error {
	r.Kind, r.Selector, r.Force, r.DryRun = ev.Kind, ev.Selector, ev.Force, ev.DryRun
	if r.Restore && r.Action != ActionScale {
		return invoke.Invalid(`replicas "restore" is only for action scale`)
	}
	if ev.Wait != "" {
		d, err := time.ParseDuration(ev.Wait)
		if err != nil || d <= 0 {
			return invoke.Invalid("wait %q is not a positive duration such as 90s or 2m", ev.Wait)
		}
		if d > invoke.MaxWait {
			return invoke.Invalid("wait %s is longer than Lambda's 15-minute limit", d)
		}
		if ev.DryRun {
			return invoke.Invalid("wait and dryRun do not go together: a dry run starts no rollout")
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
			return invoke.Invalid("manifest and manifestS3 do not go together: give one")
		}
		var err error
		if r.ManifestS3Bucket, r.ManifestS3Key, err = parseS3URI(ev.ManifestS3); err != nil {
			return err
		}
	}
	if ev.Manifest != "" {
		m, err := kube.DecodeManifest([]byte(ev.Manifest), maxDocs)
		if err != nil {
			return &invoke.Error{Code: invoke.InvalidEvent, Err: err, Message: err.Error() + "; nothing was changed"}
		}
		r.Objects = m
	}
	if ev.Kind != "" && !validKind(ev.Kind) {
		return invoke.Invalid("kind %q is not a kind such as Deployment or Widget.example.com", ev.Kind)
	}
	if ev.Selector != "" {
		if _, err := labels.Parse(ev.Selector); err != nil {
			return invoke.Invalid("selector %q is not a label selector: %s", ev.Selector, err.Error())
		}
	}
	hasManifest := ev.Manifest != "" || ev.ManifestS3 != ""
	switch r.Action {
	case ActionApply:
		if !hasManifest {
			return invoke.Invalid("action apply needs a manifest or manifestS3")
		}
	case ActionDelete:
		switch {
		case hasManifest && (ev.Kind != "" || ev.Name != ""):
			return invoke.Invalid("action delete takes a manifest, or kind and name, not both")
		case !hasManifest && (ev.Kind == "" || ev.Name == ""):
			// No default name here: a delete names what it deletes.
			return invoke.Invalid("action delete needs a manifest, or kind and name")
		}
		switch ev.Propagation {
		case "", string(metav1.DeletePropagationBackground):
			r.Propagation = metav1.DeletePropagationBackground
		case string(metav1.DeletePropagationForeground):
			r.Propagation = metav1.DeletePropagationForeground
		default:
			return invoke.Invalid("propagation %q: want Background or Foreground", ev.Propagation)
		}
	case ActionScale:
		if ev.Replicas == nil {
			return invoke.Invalid(`action scale needs replicas: a count, or "restore"`)
		}
		if ev.Selector != "" && ev.Name != "" {
			return invoke.Invalid("action scale takes a name or a selector, not both")
		}
		if ev.Selector != "" {
			r.Name = ""
		}
		if ev.Kind != "" && ev.Kind != kube.KindDeployment && ev.Kind != kube.KindStatefulSet {
			return invoke.Invalid("action scale scales kind Deployment or StatefulSet, not %s", ev.Kind)
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
			return invoke.Invalid("action restart restarts kind Deployment, StatefulSet or DaemonSet, not %s", ev.Kind)
		}
	case ActionStatus:
		if hasManifest && (ev.Kind != "" || ev.Name != "") {
			return invoke.Invalid("action status takes a manifest, or kind and name, not both")
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
		return invoke.Invalid("name %q is not a valid name for action %s: %s", name, action, strings.Join(errs, "; "))
	}
	return nil
}
