package handler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/jsonpath"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Properties are a Custom::KubernetesManifest's ResourceProperties.
// CloudFormation passes every scalar as a string, so booleans and durations
// accept strings ("true", "2m", "120").
type Properties struct {
	// ServiceToken and ServiceTimeout are CloudFormation's own; ignored.
	ServiceToken   string          `json:"ServiceToken,omitempty"`
	ServiceTimeout json.RawMessage `json:"ServiceTimeout,omitempty"`

	Manifest   string  `json:"Manifest,omitempty"`
	ManifestS3 string  `json:"ManifestS3,omitempty"`
	Namespace  string  `json:"Namespace,omitempty"`
	Force      cfnBool `json:"Force,omitempty"`
	// Prune is true unless set to false.
	Prune      *cfnBool               `json:"Prune,omitempty"`
	Wait       cfnDuration            `json:"Wait,omitempty"`
	Cluster    string                 `json:"Cluster,omitempty"`
	Region     string                 `json:"Region,omitempty"`
	RoleArn    string                 `json:"RoleArn,omitempty"`
	ExternalID string                 `json:"ExternalId,omitempty"`
	Outputs    map[string]OutputProps `json:"Outputs,omitempty"`
}

var knownProperties = []string{"Manifest", "ManifestS3", "Namespace", "Force", "Prune", "Wait", "Cluster", "Region",
	"RoleArn", "ExternalId", "Outputs", "ServiceToken", "ServiceTimeout"}

// OutputProps names one value to read from an object for Fn::GetAtt.
type OutputProps struct {
	Kind string `json:"Kind"`
	Name string `json:"Name"`
	// Namespace defaults to the resource's Namespace.
	Namespace  string `json:"Namespace,omitempty"`
	APIVersion string `json:"ApiVersion,omitempty"`
	// JSONPath is a kubectl-style JSONPath, e.g.
	// {.status.loadBalancer.ingress[0].hostname}; the braces may be left out.
	JSONPath string `json:"JSONPath"`
}

var knownOutputFields = []string{"Kind", "Name", "Namespace", "ApiVersion", "JSONPath"}

// cfnBool is a boolean that CloudFormation may pass as "true" or "false".
type cfnBool bool

// UnmarshalJSON accepts true, false, "true" and "false".
func (b *cfnBool) UnmarshalJSON(data []byte) error {
	switch s := strings.TrimSpace(string(data)); s {
	case "true", `"true"`:
		*b = true
	case "false", `"false"`:
		*b = false
	default:
		return fmt.Errorf("want true or false, not %s", s)
	}
	return nil
}

// cfnDuration is a duration such as "90s" or "2m", or a number of seconds
// ("120" or 120), as a template author may write it.
type cfnDuration time.Duration

// UnmarshalJSON accepts a Go duration string or a whole number of seconds.
func (d *cfnDuration) UnmarshalJSON(data []byte) error {
	s := strings.TrimSpace(string(data))
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		if n <= 0 {
			return fmt.Errorf("want a positive duration such as 90s or 5m, not %s", string(data))
		}
		*d = cfnDuration(time.Duration(n) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf("want a positive duration such as 90s or 5m, not %s", string(data))
	}
	*d = cfnDuration(v)
	return nil
}

// decodeProperties decodes ResourceProperties strictly: case-sensitive
// names, no unknown or duplicate property.
func decodeProperties(raw json.RawMessage, which string) (Properties, error) {
	var p Properties
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return p, invoke.Invalid("%s: missing; Manifest or ManifestS3 is required", which)
	}
	strict, err := sigsjson.UnmarshalStrict(raw, &p)
	if err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Properties{}, invoke.Invalid("%s: property %s must be a %s, not %s", which, typeErr.Field, typeName(typeErr), typeErr.Value)
		}
		return Properties{}, invoke.Invalid("%s: %s", which, err.Error())
	}
	if len(strict) > 0 {
		msgs := make([]string, 0, len(strict))
		for _, e := range strict {
			msgs = append(msgs, e.Error())
		}
		return Properties{}, invoke.Invalid("%s: %s; known properties: %s; known fields of an output: %s", which,
			strings.Join(msgs, "; "), strings.Join(knownProperties, ", "), strings.Join(knownOutputFields, ", "))
	}
	return p, nil
}

func typeName(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "map", "struct":
		return "map"
	}
	return e.Type.Kind().String()
}

var (
	outputNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)                   // and at most 128 bytes
	s3URIRE      = regexp.MustCompile(`^s3://([a-z0-9][a-z0-9.-]*[a-z0-9])/(.+)$`) // bucket 3 to 63 bytes
)

// maxOutputs bounds the outputs of one resource: each is read and waited for.
const maxOutputs = 32

// output is one checked output.
type output struct {
	Name       string
	APIVersion string
	Kind       string
	Namespace  string
	ObjectName string
	JSONPath   string // with braces
	parser     *jsonpath.JSONPath
}

// describe names the output and where it is read.
func (o output) describe() string {
	where := o.Kind + " " + o.ObjectName
	if o.Namespace != "" {
		where += " in namespace " + o.Namespace
	}
	return fmt.Sprintf("output %s (%s %s)", o.Name, where, o.JSONPath)
}

// checkOutputs validates the outputs and fills their defaults; the result is
// sorted by name, so the order of reads and of messages is stable.
func checkOutputs(outs map[string]OutputProps, namespace string) ([]output, error) {
	if len(outs) > maxOutputs {
		return nil, invoke.Invalid("Outputs: %d outputs; at most %d", len(outs), maxOutputs)
	}
	names := make([]string, 0, len(outs))
	for n := range outs {
		names = append(names, n)
	}
	slices.Sort(names)
	res := make([]output, 0, len(names))
	for _, n := range names {
		o := outs[n]
		if len(n) > 128 || !outputNameRE.MatchString(n) {
			return nil, invoke.Invalid("Outputs: name %q: want a letter, then letters, digits or _ (at most 128)", n)
		}
		if !validKind(o.Kind) {
			return nil, invoke.Invalid("Outputs.%s.Kind %q: want a kind such as Service or Widget.example.com", n, o.Kind)
		}
		if errs := checkName(ActionStatus, o.Name); errs != nil {
			return nil, invoke.Invalid("Outputs.%s.Name %q is not a valid object name", n, o.Name)
		}
		if o.APIVersion != "" {
			if _, err := schema.ParseGroupVersion(o.APIVersion); err != nil {
				return nil, invoke.Invalid("Outputs.%s.ApiVersion %q: %s", n, o.APIVersion, err.Error())
			}
		}
		ns := o.Namespace
		if ns == "" {
			ns = namespace
		}
		path := strings.TrimSpace(o.JSONPath)
		if path == "" {
			return nil, invoke.Invalid("Outputs.%s.JSONPath is missing, e.g. {.status.loadBalancer.ingress[0].hostname}", n)
		}
		if !strings.Contains(path, "{") {
			path = "{" + path + "}"
		}
		p := jsonpath.New(n).AllowMissingKeys(true)
		if err := p.Parse(path); err != nil {
			return nil, invoke.Invalid("Outputs.%s.JSONPath %q: %s", n, o.JSONPath, err.Error())
		}
		res = append(res, output{Name: n, APIVersion: o.APIVersion, Kind: o.Kind, Namespace: ns, ObjectName: o.Name,
			JSONPath: path, parser: p})
	}
	return res, nil
}

// parseS3URI splits s3://bucket/key.
func parseS3URI(uri string) (bucket, key string, err error) {
	m := s3URIRE.FindStringSubmatch(uri)
	if m == nil || len(m[1]) < 3 || len(m[1]) > 63 {
		return "", "", invoke.Invalid("ManifestS3 %q: want s3://BUCKET/KEY", uri)
	}
	return m[1], m[2], nil
}

// target is where a resource's objects live. Only these three fields make
// a different cluster: a change of any is a replacement.
type cfnTarget struct {
	Cluster, Region, RoleARN string
}

// physicalID names a resource for CloudFormation and owns its objects (the
// value of kube.OwnerAnnotation). It is readable in kubectl
// (<stack name>/<logical id>/<hash>) and the hash covers the full stack ID
// (a stack re-created under the same name is another owner) and the
// target, so that the ID changes, making CloudFormation replace the
// resource, exactly when the target does. At most 128 + 255 + 18 bytes.
func physicalID(stackID, logicalID string, t cfnTarget) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{stackID, logicalID, t.Cluster, t.Region, t.RoleARN}, "\x00")))
	return cfnresource.StackName(stackID) + "/" + logicalID + "/" + hex.EncodeToString(sum[:8])
}

// objectID identifies an object across manifests: its group (not version:
// apps/v1beta1 and apps/v1 name the same object), kind, namespace and name.
type objectID struct {
	Group, Kind, Namespace, Name string
}

// pruneSet returns the objects of old (whose default namespace was oldNS)
// that are none of applied (the resolved results of the new manifest's
// apply), in old's order.
func pruneSet(old kube.Manifest, oldNS string, applied []kube.ObjectResult) kube.Manifest {
	_, gone := splitManifest(old, oldNS, applied)
	return gone
}

// splitManifest splits m, whose default namespace is ns, into the objects
// that results (resolved: every namespaced object's namespace set) name and
// the others, each in m's order. An object of m that names no namespace
// matches a result of no namespace too: its kind is cluster-scoped, so the
// default never applied to it.
func splitManifest(m kube.Manifest, ns string, results []kube.ObjectResult) (named, others kube.Manifest) {
	in := make(map[objectID]bool, len(results))
	for _, r := range results {
		gv, err := schema.ParseGroupVersion(r.APIVersion)
		if err != nil {
			continue
		}
		in[objectID{gv.Group, r.Kind, r.Namespace, r.Name}] = true
	}
	for _, o := range m {
		gvk := o.Object.GroupVersionKind()
		id := objectID{gvk.Group, gvk.Kind, o.Object.GetNamespace(), o.Object.GetName()}
		if id.Namespace == "" && !in[id] {
			id.Namespace = ns
		}
		if in[id] {
			named = append(named, o)
		} else {
			others = append(others, o)
		}
	}
	return named, others
}
