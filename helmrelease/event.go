package helmrelease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Actions of the Helm function.
const (
	ActionUpgrade   = "helm-upgrade"
	ActionRollback  = "helm-rollback"
	ActionUninstall = "helm-uninstall"
	ActionStatus    = "helm-status"
)

// maxDepth bounds the nesting of an event (values included), so that a
// hostile payload costs no deep recursion.
const maxDepth = 64

// Event is one invocation's intent, decoded strictly.
type Event struct {
	Action     string `json:"action"`
	Cluster    string `json:"cluster,omitempty"`
	Region     string `json:"region,omitempty"`
	RoleARN    string `json:"roleArn,omitempty"`
	ExternalID string `json:"externalId,omitempty"`

	Release   string `json:"release"`
	Namespace string `json:"namespace,omitempty"`
	// Chart is the chart's name in Repository, or a whole oci:// reference.
	Chart string `json:"chart,omitempty"`
	// Version is an exact version or a semver constraint; empty is the
	// newest stable version.
	Version string `json:"version,omitempty"`
	// Repository is an https chart repository or an oci:// prefix.
	Repository string `json:"repository,omitempty"`
	// Values are the release's values (an object); they replace, not merge
	// with, the values of the previous revision, as helm upgrade does.
	Values          json.RawMessage `json:"values,omitempty"`
	CreateNamespace bool            `json:"createNamespace,omitempty"`
	// Wait is true (until the invocation's deadline less a margin), false,
	// or a duration such as "5m" (at most that).
	Wait   *Wait `json:"wait,omitempty"`
	Atomic bool  `json:"atomic,omitempty"`
	DryRun bool  `json:"dryRun,omitempty"`
	// Revision is helm-rollback's target; 0 is the last deployed one
	// before the current.
	Revision int `json:"revision,omitempty"`
}

// eventFields names the Event's fields for an unknown-field message.
const eventFields = "action, cluster, region, roleArn, externalId, release, namespace, chart, version, repository, " +
	"values, createNamespace, wait, atomic, dryRun, revision"

// Wait is a bool or a duration.
type Wait struct {
	On  bool
	Max time.Duration // 0: until the deadline
}

// UnmarshalJSON accepts true, false or a duration string.
func (w *Wait) UnmarshalJSON(b []byte) error {
	switch s := string(bytes.TrimSpace(b)); s {
	case "true":
		*w = Wait{On: true}
		return nil
	case "false":
		*w = Wait{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`field "wait" must be true, false or a duration such as "5m", not %s`, b)
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > 15*time.Minute {
		return fmt.Errorf(`field "wait" must be true, false or a duration such as "5m" (at most 15m), not %q`, s)
	}
	*w = Wait{On: true, Max: d}
	return nil
}

// MarshalJSON writes the form UnmarshalJSON reads.
func (w Wait) MarshalJSON() ([]byte, error) {
	if w.Max > 0 {
		return json.Marshal(w.Max.String())
	}
	return json.Marshal(w.On)
}

// DecodeEvent decodes raw, the payload as Lambda received it, strictly
// (invoke.Strict): names match case-sensitively; an unknown or repeated
// field (values included), a wrong type, data after the object, invalid
// UTF-8 and deep nesting are InvalidEvent.
func DecodeEvent(raw []byte) (Event, error) {
	trimmed, err := invoke.Trim(raw)
	if err != nil {
		return Event{}, err
	}
	if err := invoke.CheckObject(trimmed, maxDepth); err != nil {
		return Event{}, err
	}
	var ev Event
	if err := invoke.Strict(trimmed, &ev, eventFields); err != nil {
		return Event{}, err
	}
	// Strict checking of the values' own keys (a repeated key is an
	// error there too).
	if len(ev.Values) > 0 && string(ev.Values) != "null" {
		var vals map[string]any
		strictErrs, err := sigsjson.UnmarshalStrict(ev.Values, &vals)
		if err != nil || vals == nil {
			return Event{}, invoke.Invalid(`field "values" must be a JSON object of the chart's values, not %s`, invoke.DescribeValue(ev.Values))
		}
		if len(strictErrs) > 0 {
			return Event{}, invoke.Invalid(`field "values": %s`, strictErrs[0].Error())
		}
	}
	return ev, nil
}

// Request is an Event checked and completed from the environment.
type Request struct {
	Event
	// Target is the cluster and identity.
	Target auth.Target
	// Ref is the chart's reference: an https repository URL and chart
	// name, or an oci:// reference without tag.
	Ref ChartRef
	// Values decoded (nil when none).
	Vals map[string]any
}

// ChartRef locates a chart.
type ChartRef struct {
	Repository string // https://... (an index.yaml repository)
	OCI        string // oci://host/path/chart
	Name       string // chart name
	Version    string // version or constraint
}

// String names the chart for messages.
func (r ChartRef) String() string {
	v := r.Version
	if v == "" {
		v = "newest"
	}
	if r.OCI != "" {
		return r.OCI + " (version " + v + ")"
	}
	return fmt.Sprintf("chart %q (version %s) of %s", r.Name, v, r.Repository)
}

var (
	// releaseRE is Helm's rule for release names (at most 53 characters).
	releaseRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// chartRE is a chart name; its length (at most 250) is checked apart:
	// a counted repeat compiled to 250 states at every cold start.
	chartRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// Resolve checks ev and completes it from the deployment's defaults, before
// anything is read from or written to the cluster. The target's checks are
// every function's (auth.Target.Validate), with the same messages.
func Resolve(ev Event, defaults invoke.Defaults) (Request, error) {
	if err := invoke.CheckControls("action", ev.Action, "cluster", ev.Cluster, "region", ev.Region, "roleArn", ev.RoleARN,
		"externalId", ev.ExternalID, "release", ev.Release, "namespace", ev.Namespace, "chart", ev.Chart,
		"version", ev.Version, "repository", ev.Repository); err != nil {
		return Request{}, err
	}
	switch ev.Action {
	case ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus:
	case "":
		return Request{}, invoke.Invalid("field \"action\" is required: %s, %s, %s or %s", ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus)
	default:
		return Request{}, invoke.Invalid("unknown action %q: want %s, %s, %s or %s", ev.Action, ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus)
	}
	t := defaults.Target(ev.Cluster, ev.Region, ev.RoleARN, ev.ExternalID)
	if err := t.Validate(); err != nil {
		var te *auth.TargetError
		if errors.As(err, &te) {
			return Request{}, &invoke.Error{Code: invoke.InvalidEvent, Message: te.Message, Err: err}
		}
		return Request{}, err
	}
	r := Request{Event: ev, Target: t}
	r.Cluster, r.Region, r.RoleARN, r.ExternalID = t.Cluster, t.Region, t.RoleARN, t.ExternalID
	r.Namespace = invoke.Or(ev.Namespace, defaults.Namespace)
	switch {
	case ev.Release == "":
		return Request{}, invoke.Invalid("field \"release\" is required")
	case len(ev.Release) > 53 || !releaseRE.MatchString(ev.Release):
		return Request{}, invoke.Invalid("release %q: want at most 53 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", ev.Release)
	}
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return Request{}, invoke.Invalid("namespace %q is not a valid DNS-1123 label: %s", r.Namespace, strings.Join(errs, "; "))
	}
	if ev.Revision < 0 {
		return Request{}, invoke.Invalid("revision %d: want a positive revision, or none for the previous one", ev.Revision)
	}
	chartFields := ev.Chart != "" || ev.Repository != "" || ev.Version != "" || len(ev.Values) > 0 ||
		ev.CreateNamespace || ev.Atomic
	switch ev.Action {
	case ActionUpgrade:
		ref, err := chartRef(ev)
		if err != nil {
			return Request{}, err
		}
		r.Ref = ref
		if ev.Revision != 0 {
			return Request{}, invoke.Invalid("field \"revision\" is for %s only", ActionRollback)
		}
		if len(ev.Values) > 0 && string(ev.Values) != "null" {
			if err := json.Unmarshal(ev.Values, &r.Vals); err != nil {
				return Request{}, invoke.Invalid("field \"values\": %s", err.Error())
			}
		}
	default:
		if chartFields {
			return Request{}, invoke.Invalid("fields chart, repository, version, values, createNamespace and atomic are for %s only", ActionUpgrade)
		}
		if ev.Revision != 0 && ev.Action != ActionRollback {
			return Request{}, invoke.Invalid("field \"revision\" is for %s only", ActionRollback)
		}
		if ev.Action == ActionStatus && (ev.DryRun || ev.Wait != nil) {
			return Request{}, invoke.Invalid("fields dryRun and wait are not for %s", ActionStatus)
		}
	}
	return r, nil
}

// chartRef checks the chart's location: an https repository and a chart
// name, or an oci:// reference (in repository with a chart name, or whole
// in chart).
func chartRef(ev Event) (ChartRef, error) {
	ref := ChartRef{Version: ev.Version}
	if ev.Version != "" {
		if _, err := semver.NewConstraint(ev.Version); err != nil {
			return ChartRef{}, invoke.Invalid("version %q is neither a chart version nor a semver constraint: %s", ev.Version, err.Error())
		}
	}
	switch {
	case ev.Chart == "":
		return ChartRef{}, invoke.Invalid("field \"chart\" is required for %s", ActionUpgrade)
	case strings.HasPrefix(ev.Chart, "oci://"):
		if ev.Repository != "" {
			return ChartRef{}, invoke.Invalid("chart %q is a whole oci:// reference: leave repository out", ev.Chart)
		}
		ref.OCI = ev.Chart
	case len(ev.Chart) > 250 || !chartRE.MatchString(ev.Chart):
		return ChartRef{}, invoke.Invalid("chart %q: want a chart name (letters, digits, '.', '_', '-') or an oci:// reference", ev.Chart)
	case ev.Repository == "":
		return ChartRef{}, invoke.Invalid("field \"repository\" is required with chart %q: an https chart repository or an oci:// reference", ev.Chart)
	case strings.HasPrefix(ev.Repository, "oci://"):
		ref.OCI = strings.TrimSuffix(ev.Repository, "/") + "/" + ev.Chart
	case strings.HasPrefix(ev.Repository, "https://"):
		ref.Repository, ref.Name = ev.Repository, ev.Chart
	default:
		return ChartRef{}, invoke.Invalid("repository %q: want an https:// chart repository or an oci:// reference (plain http is refused)", ev.Repository)
	}
	if ref.OCI != "" {
		u, err := url.Parse(ref.OCI)
		if err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(u.Path, ":@") {
			return ChartRef{}, invoke.Invalid("oci reference %q: want oci://host/path/chart, the version in field \"version\"", ref.OCI)
		}
		ref.Name = u.Path[strings.LastIndex(u.Path, "/")+1:]
	} else if u, err := url.Parse(ref.Repository); err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return ChartRef{}, invoke.Invalid("repository %q: want an https URL without credentials or query", ref.Repository)
	}
	return ref, nil
}
