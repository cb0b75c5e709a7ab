package helmrelease

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/storage/driver"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Custom::HelmRelease: the contract of Custom::KubernetesManifest (the
// answer is PUT before the deadline whatever happens, within 4,096 bytes):
// Create and Update run helm-upgrade, Delete runs helm-uninstall, a release
// already absent (or a cluster already gone) is SUCCESS, and the outputs
// are in Data (Release, Namespace, Revision, Status, Chart, ChartVersion,
// AppVersion).
//
// The PhysicalResourceId is <stack name>/<logical id>/<hash of stack ID,
// logical ID, Cluster, Region, RoleArn, Namespace, Release>: a change of any
// of those is a replacement (a new release; CloudFormation then deletes the
// old one). Every revision the resource writes carries OwnerLabel = the
// hash, and Delete uninstalls only a release whose newest revision still
// carries it: a release taken over by another resource, or upgraded by
// hand with helm, is kept.

// HelmProperties are a Custom::HelmRelease's ResourceProperties.
// CloudFormation passes every scalar as a string.
type HelmProperties struct {
	// ServiceToken and ServiceTimeout are CloudFormation's own; ignored.
	ServiceToken    string          `json:"ServiceToken,omitempty"`
	ServiceTimeout  json.RawMessage `json:"ServiceTimeout,omitempty"`
	Cluster         string          `json:"Cluster,omitempty"`
	Region          string          `json:"Region,omitempty"`
	RoleArn         string          `json:"RoleArn,omitempty"`
	ExternalId      string          `json:"ExternalId,omitempty"` //nolint:revive // CloudFormation's spelling
	Release         string          `json:"Release"`
	Namespace       string          `json:"Namespace,omitempty"`
	Chart           string          `json:"Chart,omitempty"`
	Version         string          `json:"Version,omitempty"`
	Repository      string          `json:"Repository,omitempty"`
	Values          json.RawMessage `json:"Values,omitempty"`
	CreateNamespace json.RawMessage `json:"CreateNamespace,omitempty"`
	Wait            json.RawMessage `json:"Wait,omitempty"`
	Atomic          json.RawMessage `json:"Atomic,omitempty"`
}

const helmPropertyFields = "ServiceToken, ServiceTimeout, Cluster, Region, RoleArn, ExternalId, Release, Namespace, Chart, Version, Repository, " +
	"Values, CreateNamespace, Wait, Atomic"

// decodeHelmProperties decodes raw strictly into an Event of action.
func decodeHelmProperties(raw json.RawMessage, which, action string) (Event, error) {
	var p HelmProperties
	if len(raw) == 0 {
		return Event{}, invoke.Invalid("%s: missing", which)
	}
	if err := invoke.CheckDepth(raw, maxDepth); err != nil {
		return Event{}, err
	}
	if err := invoke.Strict(raw, &p, helmPropertyFields); err != nil {
		return Event{}, invoke.Invalid("%s: %s", which, invoke.AsError(err).Message)
	}
	var err error
	ev := Event{Action: action, Cluster: p.Cluster, Region: p.Region, RoleARN: p.RoleArn, ExternalID: p.ExternalId,
		Release: p.Release, Namespace: p.Namespace, Chart: p.Chart, Version: p.Version, Repository: p.Repository}
	if ev.CreateNamespace, err = cfnBool(p.CreateNamespace, "CreateNamespace"); err != nil {
		return Event{}, err
	}
	if ev.Atomic, err = cfnBool(p.Atomic, "Atomic"); err != nil {
		return Event{}, err
	}
	if len(p.Wait) > 0 {
		var w Wait
		b := p.Wait
		if s, ok := unquote(b); ok && (s == "true" || s == "false") {
			b = []byte(s)
		} else if ok {
			if n, err := strconv.Atoi(s); err == nil && n > 0 {
				b = []byte(strconv.Quote(strconv.Itoa(n) + "s"))
			}
		}
		if err := w.UnmarshalJSON(b); err != nil {
			return Event{}, invoke.Invalid("%s: property Wait: %s", which, err.Error())
		}
		ev.Wait = &w
	}
	// Values: an object, or a string holding one (a template may build
	// it with Fn::Sub or Fn::ToJsonString).
	if len(p.Values) > 0 {
		v := p.Values
		if s, ok := unquote(v); ok {
			v = json.RawMessage(s)
		}
		var m map[string]any
		if strictErrs, err := sigsjson.UnmarshalStrict(v, &m); err != nil || m == nil || len(strictErrs) > 0 {
			return Event{}, invoke.Invalid("%s: property Values must be an object of the chart's values (or a string of one in JSON)", which)
		}
		ev.Values = v
	}
	return ev, nil
}

func unquote(b []byte) (string, bool) {
	var s string
	if len(b) == 0 || b[0] != '"' || json.Unmarshal(b, &s) != nil {
		return "", false
	}
	return s, true
}

func cfnBool(b json.RawMessage, name string) (bool, error) {
	if len(b) == 0 {
		return false, nil
	}
	s := string(b)
	if u, ok := unquote(b); ok {
		s = u
	}
	switch s {
	case "true":
		return true, nil
	case "false", "":
		return false, nil
	}
	return false, invoke.Invalid("property %s must be true or false, not %s", name, b)
}

// ownerHash is the resource's identity: what makes the release another one.
func ownerHash(stackID, logicalID string, req Request) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{stackID, logicalID, req.Cluster, req.Region, req.RoleARN,
		req.Namespace, req.Release}, "\x00")))
	return hex.EncodeToString(sum[:8])
}

// resource is Custom::HelmRelease, served by the cfnresource engine.
type resource struct{ h *Handler }

// properties decodes and resolves req's ResourceProperties as an event of
// action.
func (r resource) properties(req cfnresource.Request, action string) (Request, error) {
	ev, err := decodeHelmProperties(req.ResourceProperties, "ResourceProperties", action)
	if err != nil {
		return Request{}, err
	}
	if action == ActionUninstall {
		ev.Chart, ev.Repository, ev.Version, ev.Values, ev.CreateNamespace, ev.Atomic = "", "", "", nil, false, false
	}
	return Resolve(ev, r.h.cfg.Defaults)
}

// PhysicalID is <stack name>/<logical id>/<owner hash> of the release the
// properties name; an error when they do not resolve.
func (r resource) PhysicalID(req cfnresource.Request) (string, error) {
	rq, err := r.properties(req, ActionUpgrade)
	if err != nil {
		return "", err
	}
	return cfnresource.StackName(req.StackID) + "/" + req.LogicalResourceID + "/" + ownerHash(req.StackID, req.LogicalResourceID, rq), nil
}

// Apply serves Create and Update: helm-upgrade, the revisions labelled with
// the resource's owner hash.
func (r resource) Apply(ctx context.Context, req cfnresource.Request, _ cfnresource.Plan) (string, map[string]string, error) {
	rq, err := r.properties(req, ActionUpgrade)
	if err != nil {
		return "", nil, err
	}
	owner := ownerHash(req.StackID, req.LogicalResourceID, rq)
	res, err := r.h.upgradeOwned(ctx, rq, owner, nil)
	if err != nil {
		return "", nil, err
	}
	reason := fmt.Sprintf("release %s in namespace %s revision %d %s (chart %s %s)", res.Release, res.Namespace, res.Revision,
		res.Status, res.Chart, res.ChartVersion)
	if res.Recovered != "" {
		reason += "; " + res.Recovered
	}
	return reason, data(res), nil
}

// upgradeOwned runs helm-upgrade rq with the chart ch (nil: fetched) as
// owner. A duplicate delivery of the same request (CloudFormation's or
// CodePipeline's) that is writing the release meanwhile is waited for, and
// the upgrade run again (to the same chart and values), so that this answer
// is a success too, not a failure that CloudFormation or CodePipeline may
// read first.
func (h *Handler) upgradeOwned(ctx context.Context, rq Request, owner string, ch *chartv2.Chart) (*Result, error) {
	res, err := h.runChart(ctx, rq, owner, ch)
	for err != nil && writtenMeanwhile(err) && timeLeft(ctx) > duplicateRetryMargin {
		h.log.WarnContext(ctx, "release being written by another invocation: waiting", "release", rq.Release, "namespace", rq.Namespace)
		select {
		case <-ctx.Done():
		case <-time.After(duplicateRetryInterval):
		}
		res, err = h.runChart(ctx, rq, owner, ch)
	}
	return res, err
}

// Waiting for a duplicate delivery's write (upgradeOwned).
const (
	duplicateRetryInterval = 2 * time.Second
	duplicateRetryMargin   = 10 * time.Second
)

// writtenMeanwhile reports a Conflict because another invocation is
// writing the release: the revision it stored first, Helm's "in progress",
// or a pending revision whose invocation has not yet reached its deadline.
func writtenMeanwhile(err error) bool {
	var e *invoke.Error
	var pending *PendingError
	return errors.As(err, &e) && e.Code == invoke.Conflict &&
		(errors.Is(err, driver.ErrReleaseExists) || errors.As(err, &pending) || (e.Err != nil && busyProblem(e.Err)))
}

// timeLeft is what is left of ctx's deadline; five minutes without one.
func timeLeft(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return 5 * time.Minute
}

func data(res *Result) map[string]string {
	return map[string]string{"Release": res.Release, "Namespace": res.Namespace, "Revision": strconv.Itoa(res.Revision),
		"Status": res.Status, "Chart": res.Chart, "ChartVersion": res.ChartVersion, "AppVersion": res.AppVersion}
}

// Delete uninstalls the release the resource owns (p.Owner: after a failed
// Create, the ID without its suffix). Properties that cannot be read (a
// Create that failed on them wrote nothing), properties of another owner, a
// release already absent and a cluster already gone are SUCCESS.
func (r resource) Delete(ctx context.Context, req cfnresource.Request, p cfnresource.Plan) (string, error) {
	rq, err := r.properties(req, ActionUninstall)
	if err != nil {
		return "nothing to delete: the properties could not be read, so no release was made (" + invoke.AsError(err).Message + ")", nil
	}
	owner := ownerHash(req.StackID, req.LogicalResourceID, rq)
	if !strings.HasSuffix(p.Owner, "/"+owner) {
		return "nothing to delete: " + req.PhysicalResourceID + " names no release of these properties", nil
	}
	res, err := r.h.run(ctx, rq, owner)
	var e *invoke.Error
	if errors.As(err, &e) && e.Code == invoke.ClusterNotFound {
		return "nothing to delete: " + e.Message, nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("release %s in namespace %s: %s", res.Release, res.Namespace, res.Status), nil
}
