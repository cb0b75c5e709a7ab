package helmrelease

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path"
	"strings"
	"time"

	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// PipelineParams are the UserParameters (JSON) of a CodePipeline action
// that deploys a chart from its input artifact with the Helm function:
// helm-upgrade's fields, the chart and values files named by their paths
// in the artifact.
type PipelineParams struct {
	// Pipeline and Action name the owner of the release: every revision
	// the action writes carries OwnerLabel, the hash of
	// codepipeline/<pipeline>/<action> (Pipeline is required; Action
	// defaults to deploy).
	Pipeline   string `json:"pipeline"`
	Action     string `json:"action,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	Region     string `json:"region,omitempty"`
	RoleARN    string `json:"roleArn,omitempty"`
	ExternalID string `json:"externalId,omitempty"`
	Release    string `json:"release"`
	Namespace  string `json:"namespace,omitempty"`
	// Artifact names the input artifact; default the first.
	Artifact string `json:"artifact,omitempty"`
	// Chart is the chart's path in the artifact: a directory holding
	// Chart.yaml ("." for the artifact's root) or a packaged .tgz; default
	// the only chart in the artifact.
	Chart string `json:"chart,omitempty"`
	// ValuesFiles are YAML files in the artifact, merged in order as helm
	// -f merges them; Values (an object) is merged over them.
	ValuesFiles     []string        `json:"valuesFiles,omitempty"`
	Values          json.RawMessage `json:"values,omitempty"`
	CreateNamespace bool            `json:"createNamespace,omitempty"`
	// Wait is true (5 minutes), false, or how long to wait for the
	// release's resources to be ready, across invocations (at most 55m).
	Wait   *PipelineWait `json:"wait,omitempty"`
	Atomic bool          `json:"atomic,omitempty"`
	DryRun bool          `json:"dryRun,omitempty"`
}

const pipelineParamFields = "pipeline, action, cluster, region, roleArn, externalId, release, namespace, artifact, chart, " +
	"valuesFiles, values, createNamespace, wait, atomic, dryRun"

// Waits of a pipeline job.
const (
	defaultPipelineWait = 5 * time.Minute
	// maxPipelineWait bounds a wait across continuations: CodePipeline's
	// own timeout of a Lambda action is an hour.
	maxPipelineWait = 55 * time.Minute
)

// PipelineWait is UserParameters' wait: true, false or a duration.
type PipelineWait struct{ Max time.Duration }

// UnmarshalJSON accepts true (5m), false (0) or a duration of 0 to 55m.
func (w *PipelineWait) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true":
		*w = PipelineWait{Max: defaultPipelineWait}
		return nil
	case "false":
		*w = PipelineWait{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return invoke.Invalid(`UserParameters: field "wait" must be true, false or a duration such as "10m", not %s`, invoke.DescribeValue(b))
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxPipelineWait {
		return invoke.Invalid(`UserParameters: field "wait" %q is not a duration of 0 to %s`, s, maxPipelineWait)
	}
	*w = PipelineWait{Max: d}
	return nil
}

// DecodePipelineParams decodes UserParameters strictly and checks what
// needs no artifact and no cluster.
func DecodePipelineParams(s string) (PipelineParams, error) {
	var p PipelineParams
	b := []byte(strings.TrimSpace(s))
	if len(b) == 0 {
		return p, invoke.Invalid(`UserParameters is empty; give at least {"pipeline":"NAME","release":"NAME"}`)
	}
	if err := invoke.CheckObject(b, maxDepth); err != nil {
		return p, invoke.Invalid("UserParameters: %s", invoke.AsError(err).Message)
	}
	if err := invoke.Strict(b, &p, pipelineParamFields); err != nil {
		e := invoke.AsError(err)
		if strings.HasPrefix(e.Message, "UserParameters") {
			return p, e
		}
		return p, &invoke.Error{Code: invoke.InvalidEvent, Err: err, Message: "UserParameters: " + e.Message}
	}
	p.Action = invoke.Or(p.Action, "deploy")
	if err := invoke.CheckControls("pipeline", p.Pipeline, "action", p.Action, "artifact", p.Artifact, "chart", p.Chart); err != nil {
		return p, err
	}
	for _, f := range p.ValuesFiles {
		if err := invoke.CheckControls("valuesFiles", f); err != nil {
			return p, err
		}
	}
	if p.Pipeline == "" || len(p.Pipeline) > 100 || len(p.Action) > 100 {
		return p, invoke.Invalid("UserParameters: pipeline (1 to 100 characters) names the owner of the release the action deploys")
	}
	if len(p.Values) > 0 && string(p.Values) != "null" {
		var vals map[string]any
		strictErrs, err := sigsjson.UnmarshalStrict(p.Values, &vals)
		if err != nil || vals == nil {
			return p, invoke.Invalid(`UserParameters: field "values" must be a JSON object of the chart's values, not %s`, invoke.DescribeValue(p.Values))
		}
		if len(strictErrs) > 0 {
			return p, invoke.Invalid(`UserParameters: field "values": %s`, strictErrs[0].Error())
		}
	}
	if strings.HasPrefix(p.Chart, "oci://") || strings.HasPrefix(p.Chart, "https://") {
		return p, invoke.Invalid("UserParameters: chart %q: name the chart's path in the input artifact (a directory with Chart.yaml, or a .tgz); "+
			"a chart from a repository is a helm-upgrade event's", p.Chart)
	}
	return p, nil
}

// owner is what the pipeline's action owns the release as.
func (p PipelineParams) owner() string { return "codepipeline/" + p.Pipeline + "/" + p.Action }

// ownerLabel is OwnerLabel's value on the revisions the action writes: a
// label value holds no "/", so the owner's hash (as a custom resource's).
func (p PipelineParams) ownerLabel() string {
	sum := sha256.Sum256([]byte(p.owner()))
	return hex.EncodeToString(sum[:8])
}

// wait is how long the job waits for readiness, across invocations.
func (p PipelineParams) wait() time.Duration {
	if p.Wait == nil {
		return defaultPipelineWait
	}
	return p.Wait.Max
}

// request checks the target, release and namespace as a helm-upgrade event
// of them is checked, and returns the upgrade's Request (its chart and
// values are the artifact's, set by the caller). Helm's own wait is off:
// the job waits for readiness itself (pipelineReady), across invocations.
func (p PipelineParams) request(d invoke.Defaults) (Request, error) {
	r, err := Resolve(Event{Action: ActionStatus, Cluster: p.Cluster, Region: p.Region, RoleARN: p.RoleARN, ExternalID: p.ExternalID,
		Release: p.Release, Namespace: p.Namespace}, d)
	if err != nil {
		return Request{}, err
	}
	r.Action = ActionUpgrade
	r.CreateNamespace, r.Atomic, r.DryRun = p.CreateNamespace, p.Atomic, p.DryRun
	return r, nil
}

// cleanArtifactPath is name as the artifact's zip names it (Zip cleans its
// names so), refusing a path that leaves the artifact.
func cleanArtifactPath(field, name string) (string, error) {
	c := path.Clean(strings.TrimPrefix(name, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", invoke.Invalid("UserParameters: %s %q leaves the input artifact", field, name)
	}
	return c, nil
}
