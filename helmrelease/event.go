package helmrelease

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/handler"
)

// Actions of the Helm function.
const (
	ActionUpgrade   = "helm-upgrade"
	ActionRollback  = "helm-rollback"
	ActionUninstall = "helm-uninstall"
	ActionStatus    = "helm-status"
)

// maxEventBytes is Lambda's cap on a synchronous payload.
const maxEventBytes = 6 << 20

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

// DecodeEvent decodes raw strictly: names match case-sensitively; an
// unknown or repeated field (values included), a wrong type, data after
// the object, invalid UTF-8 and deep nesting are InvalidEvent.
func DecodeEvent(raw []byte) (Event, error) {
	if len(raw) > maxEventBytes {
		return Event{}, handler.Invalid("event is %d bytes; at most %d are accepted", len(raw), maxEventBytes)
	}
	trimmed := bytes.Trim(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Event{}, handler.Invalid("event must be a JSON object with an action (%s, %s, %s, %s)",
			ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus)
	}
	if !utf8.Valid(trimmed) {
		return Event{}, handler.Invalid("event is not valid UTF-8")
	}
	if err := checkDepth(trimmed, maxDepth); err != nil {
		return Event{}, err
	}
	var ev Event
	strictErrs, err := sigsjson.UnmarshalStrict(trimmed, &ev)
	if err != nil {
		return Event{}, handler.Invalid("event: %s", describeError(err))
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, 0, len(strictErrs))
		for _, e := range strictErrs {
			msgs = append(msgs, e.Error())
		}
		return Event{}, handler.Invalid("event: %s (fields: %s)", strings.Join(msgs, "; "), eventFields)
	}
	// Strict checking of the values' own keys (a repeated key is an
	// error there too).
	if len(ev.Values) > 0 && string(ev.Values) != "null" {
		var vals map[string]any
		strictErrs, err := sigsjson.UnmarshalStrict(ev.Values, &vals)
		if err != nil || vals == nil {
			return Event{}, handler.Invalid(`field "values" must be a JSON object of the chart's values, not %s`, describeValue(ev.Values))
		}
		if len(strictErrs) > 0 {
			return Event{}, handler.Invalid(`field "values": %s`, strictErrs[0].Error())
		}
	}
	return ev, nil
}

func describeError(err error) string {
	var te *json.UnmarshalTypeError
	if ok := asTypeError(err, &te); ok && te.Field != "" {
		return fmt.Sprintf("field %q must be a JSON %s, not %s", te.Field, te.Type.Kind(), te.Value)
	}
	return err.Error()
}

func asTypeError(err error, target **json.UnmarshalTypeError) bool {
	te, ok := err.(*json.UnmarshalTypeError) //nolint:errorlint // the decoder returns it unwrapped
	if ok {
		*target = te
	}
	return ok
}

func describeValue(b []byte) string {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return "nothing"
	case b[0] == '"':
		return "a string"
	case b[0] == '[':
		return "an array"
	case b[0] == 't' || b[0] == 'f':
		return "a boolean"
	case b[0] == 'n':
		return "null"
	}
	return "a number"
}

// checkDepth refuses JSON nested deeper than limit, counting brackets
// outside strings.
func checkDepth(b []byte, limit int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			if depth > limit {
				return handler.Invalid("event nests deeper than %d levels", limit)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
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
	chartRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,249}$`)
	// The target's rules are the main function's (handler/event.go's
	// Resolve, which exports none of them), with the same messages: an
	// event that names a cluster, region, role or external ID is accepted
	// by both functions or by neither.
	clusterRE    = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$`)
	regionRE     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	roleARNRE    = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)
	externalIDRE = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// Resolve checks ev and completes it from cfg, before anything is read
// from or written to the cluster.
func Resolve(ev Event, cfg handler.Config) (Request, error) {
	for _, f := range []struct{ name, v string }{
		{"action", ev.Action}, {"cluster", ev.Cluster}, {"region", ev.Region}, {"roleArn", ev.RoleARN},
		{"externalId", ev.ExternalID}, {"release", ev.Release}, {"namespace", ev.Namespace}, {"chart", ev.Chart},
		{"version", ev.Version}, {"repository", ev.Repository},
	} {
		if i := strings.IndexFunc(f.v, unicode.IsControl); i >= 0 {
			return Request{}, handler.Invalid("field %q has a control character at byte %d", f.name, i)
		}
	}
	r := Request{Event: ev}
	r.Cluster = or(ev.Cluster, cfg.Cluster)
	r.Region = or(ev.Region, cfg.Region)
	r.Namespace = or(ev.Namespace, cfg.Namespace)
	r.RoleARN = or(ev.RoleARN, cfg.RoleARN)
	r.ExternalID = or(ev.ExternalID, cfg.ExternalID)
	if ev.RoleARN != "" {
		r.ExternalID = ev.ExternalID
	}
	switch ev.Action {
	case ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus:
	case "":
		return Request{}, handler.Invalid("field \"action\" is required: %s, %s, %s or %s", ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus)
	default:
		return Request{}, handler.Invalid("unknown action %q: want %s, %s, %s or %s", ev.Action, ActionUpgrade, ActionRollback, ActionUninstall, ActionStatus)
	}
	switch {
	case r.Cluster == "":
		return Request{}, handler.Invalid("no cluster: set CLUSTER_NAME or the event's cluster")
	case !clusterRE.MatchString(r.Cluster):
		return Request{}, handler.Invalid("cluster %q is not a valid EKS cluster name", r.Cluster)
	case r.Region == "":
		return Request{}, handler.Invalid("no region: set CLUSTER_REGION or AWS_REGION, or the event's region")
	case !regionRE.MatchString(r.Region):
		return Request{}, handler.Invalid("region %q is not an AWS region name", r.Region)
	case ev.Release == "":
		return Request{}, handler.Invalid("field \"release\" is required")
	case len(ev.Release) > 53 || !releaseRE.MatchString(ev.Release):
		return Request{}, handler.Invalid("release %q: want at most 53 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", ev.Release)
	}
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return Request{}, handler.Invalid("namespace %q is not a valid DNS-1123 label: %s", r.Namespace, strings.Join(errs, "; "))
	}
	switch {
	case r.RoleARN != "" && !roleARNRE.MatchString(r.RoleARN):
		return Request{}, handler.Invalid("roleArn %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", r.RoleARN)
	case r.ExternalID != "" && (len(r.ExternalID) < 2 || len(r.ExternalID) > 1224 || !externalIDRE.MatchString(r.ExternalID)):
		return Request{}, handler.Invalid("externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-")
	case r.ExternalID != "" && r.RoleARN == "":
		return Request{}, handler.Invalid("externalId is only used with roleArn")
	}
	if ev.Revision < 0 {
		return Request{}, handler.Invalid("revision %d: want a positive revision, or none for the previous one", ev.Revision)
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
			return Request{}, handler.Invalid("field \"revision\" is for %s only", ActionRollback)
		}
		if len(ev.Values) > 0 && string(ev.Values) != "null" {
			if err := json.Unmarshal(ev.Values, &r.Vals); err != nil {
				return Request{}, handler.Invalid("field \"values\": %s", err.Error())
			}
		}
	default:
		if chartFields {
			return Request{}, handler.Invalid("fields chart, repository, version, values, createNamespace and atomic are for %s only", ActionUpgrade)
		}
		if ev.Revision != 0 && ev.Action != ActionRollback {
			return Request{}, handler.Invalid("field \"revision\" is for %s only", ActionRollback)
		}
		if ev.Action == ActionStatus && (ev.DryRun || ev.Wait != nil) {
			return Request{}, handler.Invalid("fields dryRun and wait are not for %s", ActionStatus)
		}
	}
	r.Target = auth.Target{Cluster: r.Cluster, Region: r.Region, RoleARN: r.RoleARN, ExternalID: r.ExternalID, SessionName: cfg.SessionName}
	return r, nil
}

// chartRef checks the chart's location: an https repository and a chart
// name, or an oci:// reference (in repository with a chart name, or whole
// in chart).
func chartRef(ev Event) (ChartRef, error) {
	ref := ChartRef{Version: ev.Version}
	if ev.Version != "" {
		if _, err := semver.NewConstraint(ev.Version); err != nil {
			return ChartRef{}, handler.Invalid("version %q is neither a chart version nor a semver constraint: %s", ev.Version, err.Error())
		}
	}
	switch {
	case ev.Chart == "":
		return ChartRef{}, handler.Invalid("field \"chart\" is required for %s", ActionUpgrade)
	case strings.HasPrefix(ev.Chart, "oci://"):
		if ev.Repository != "" {
			return ChartRef{}, handler.Invalid("chart %q is a whole oci:// reference: leave repository out", ev.Chart)
		}
		ref.OCI = ev.Chart
	case !chartRE.MatchString(ev.Chart):
		return ChartRef{}, handler.Invalid("chart %q: want a chart name (letters, digits, '.', '_', '-') or an oci:// reference", ev.Chart)
	case ev.Repository == "":
		return ChartRef{}, handler.Invalid("field \"repository\" is required with chart %q: an https chart repository or an oci:// reference", ev.Chart)
	case strings.HasPrefix(ev.Repository, "oci://"):
		ref.OCI = strings.TrimSuffix(ev.Repository, "/") + "/" + ev.Chart
	case strings.HasPrefix(ev.Repository, "https://"):
		ref.Repository, ref.Name = ev.Repository, ev.Chart
	default:
		return ChartRef{}, handler.Invalid("repository %q: want an https:// chart repository or an oci:// reference (plain http is refused)", ev.Repository)
	}
	if ref.OCI != "" {
		u, err := url.Parse(ref.OCI)
		if err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(u.Path, ":@") {
			return ChartRef{}, handler.Invalid("oci reference %q: want oci://host/path/chart, the version in field \"version\"", ref.OCI)
		}
		ref.Name = u.Path[strings.LastIndex(u.Path, "/")+1:]
	} else if u, err := url.Parse(ref.Repository); err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return ChartRef{}, handler.Invalid("repository %q: want an https URL without credentials or query", ref.Repository)
	}
	return ref, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
