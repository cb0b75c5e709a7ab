package helmrelease

// The CodePipeline action of the Helm function: a Lambda invoke action
// sends a CodePipeline.job event; the function reads the input artifact (a
// zip in S3) with the job's own artifact credentials, loads the chart and
// values files it holds, installs or upgrades the release as helm-upgrade
// does (labelled as owned by the pipeline's action), waits for readiness
// across invocations (pipeline_ready.go), and answers CodePipeline with
// PutJobSuccessResult or PutJobFailureResult. The protocol is
// internal/codepipeline's, as for the main function's action.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// ActionCodePipeline is the metrics' action of a CodePipeline job.
const ActionCodePipeline = codepipeline.Action

// pipelineAnswer is what the function answered CodePipeline, and the
// invocation's response.
type pipelineAnswer struct {
	codepipeline.Answer
	// Status is the release's status (deployed, failed, ...), when the job
	// got as far as a revision.
	Status string `json:"status,omitempty"`
}

// CountResults counts the release by its status, for the metrics.
func (a *pipelineAnswer) CountResults() map[string]int {
	if a.Status == "" {
		return nil
	}
	return map[string]int{a.Status: 1}
}

// errNoAWS: a CodePipeline job needs the function's AWS configuration.
var errNoAWS = errors.New("this handler has no AWS configuration (helmrelease.New gives it)")

// pipelineJob serves a CodePipeline job on the framework's engine
// (codepipeline.Serve): the answer is always sent, a failure too, before
// the invocation returns.
func (h *Handler) pipelineJob(ctx context.Context, payload []byte) ([]byte, error) {
	return codepipeline.Serve(ctx, h.aws, h.log, payload, func(ctx context.Context, job codepipeline.Job) *pipelineAnswer {
		a := h.runPipelineJob(ctx, job)
		return &a
	}, func(a *pipelineAnswer) []any { return []any{"status", a.Status} })
}

// runPipelineJob does the job and says what to answer.
func (h *Handler) runPipelineJob(ctx context.Context, job codepipeline.Job) pipelineAnswer {
	fail := func(err error) pipelineAnswer {
		e := invoke.AsError(err)
		h.log.ErrorContext(ctx, "codepipeline job failed", "job", job.ID, "code", string(e.Code), "error", e.Message)
		return pipelineAnswer{Answer: codepipeline.Failed(e)}
	}
	p, err := DecodePipelineParams(job.Data.ActionConfiguration.Configuration.UserParameters)
	if err != nil {
		return fail(err)
	}
	cont := codepipeline.Continuation{Start: h.now().Unix()}
	continued := job.Data.ContinuationToken != ""
	if continued {
		if cont, err = codepipeline.ParseContinuation(job.Data.ContinuationToken); err != nil {
			return fail(err)
		}
		if cont.Revision < 1 {
			return fail(invoke.Invalid("continuationToken %.40q names no revision: it is not one the Helm function gave", job.Data.ContinuationToken))
		}
	}
	req, err := p.request(h.cfg.Defaults)
	if err != nil {
		return fail(err)
	}
	diag := invoke.Diagnosis{Cluster: req.Cluster, RoleARN: req.RoleARN, Access: access}
	owner := p.ownerLabel()
	out := pipelineAnswer{}
	vars := map[string]string{"release": req.Release, "namespace": req.Namespace, "cluster": req.Cluster, "owner": p.owner()}

	art, err := codepipeline.PickArtifact(job.Data.InputArtifacts, p.Artifact)
	if err != nil {
		return fail(err)
	}
	if art.Revision != nil && *art.Revision != "" {
		vars["artifactRevision"] = *art.Revision
	}

	if !continued {
		if h.aws == nil {
			return fail(errNoAWS)
		}
		b, err := codepipeline.ReadArtifact(ctx, *h.aws, art, job.Data.ArtifactCredentials)
		if err != nil {
			return fail(err)
		}
		z, err := codepipeline.OpenZip(b)
		if err != nil {
			return fail(err)
		}
		ac, err := chartOfZip(z, p.Chart)
		if err != nil {
			return fail(err)
		}
		var vals map[string]any
		if len(p.Values) > 0 && string(p.Values) != "null" {
			if err := json.Unmarshal(p.Values, &vals); err != nil {
				return fail(invoke.Invalid("UserParameters: field \"values\": %s", err.Error()))
			}
		}
		if req.Vals, err = valuesOfZip(z, p.ValuesFiles, vals); err != nil {
			return fail(err)
		}
		loc := art.Location.S3Location
		req.Ref = ChartRef{Repository: "s3://" + loc.BucketName + "/" + loc.ObjectKey, Name: ac.path, Version: ac.chart.Metadata.Version}
		h.log.InfoContext(ctx, "codepipeline job", "job", job.ID, "owner", p.owner(), "artifact", art.Name, "chart", ac.path,
			"chart_name", ac.chart.Metadata.Name, "chart_version", ac.chart.Metadata.Version, "release", req.Release, "namespace", req.Namespace)
		res, err := h.upgradeOwned(ctx, req, owner, ac.chart)
		if err != nil {
			e := invoke.AsError(err)
			return fail(&invoke.Error{Code: e.Code, Err: err, Message: fmt.Sprintf("chart %s of input artifact %s: %s", ac.path, art.Name, e.Message)})
		}
		cont.Revision = res.Revision
		out.Status = res.Status
		setResultVars(vars, res.Revision, res.Status, res.Chart, res.ChartVersion, res.AppVersion)
		if req.DryRun || p.wait() == 0 {
			out.Result, out.OutputVariables = codepipeline.Success, vars
			out.Message = codepipeline.Message(fmt.Sprintf("release %s revision %d %s (chart %s %s)", res.Release, res.Revision, res.Status, res.Chart, res.ChartVersion))
			return out
		}
	} else {
		h.log.InfoContext(ctx, "codepipeline job continued", "job", job.ID, "owner", p.owner(), "release", req.Release,
			"namespace", req.Namespace, "revision", cont.Revision)
	}

	// Readiness, in this invocation as far as it goes.
	wait := p.wait()
	left := time.Until(time.Unix(cont.Start, 0).Add(wait))
	bound := left
	if deadline, ok := ctx.Deadline(); ok {
		bound = min(bound, time.Until(deadline)-helmMargin)
	}
	conn, err := h.conns.Get(ctx, req.Target)
	if err != nil {
		return fail(classify(ctx, err, diag))
	}
	diag.CallerARN = conn.CallerARN
	cfg, err := h.configure(conn.Client, req.Namespace)
	if err != nil {
		return fail(err)
	}
	o := &op{req: req, cfg: cfg, log: h.log, now: h.now, owner: owner}
	r, err := o.waitReady(ctx, cont.Revision, max(bound, time.Millisecond))
	switch {
	case err != nil && r.rel != nil:
		return h.finishFailed(ctx, o, r, err, false, fail)
	case err != nil:
		h.conns.Done(ctx, req.Target, conn, err)
		return fail(classify(ctx, err, diag))
	case !r.ready && bound < left:
		// The invocation ends before the job's wait: CodePipeline
		// invokes the function again with the token.
		cont.Revision = r.rel.Version
		return pipelineAnswer{Status: r.rel.Info.Status.String(), Answer: codepipeline.Answer{Result: codepipeline.Continue, ContinuationToken: cont.Token(),
			Message: codepipeline.Message(fmt.Sprintf("release %s revision %d: waiting for readiness (%s of %s)", r.rel.Name, r.rel.Version,
				time.Since(time.Unix(cont.Start, 0)).Round(time.Second), wait))}}
	case !r.ready:
		return h.finishFailed(ctx, o, r, errors.New(invoke.Or(r.notReady, "not ready")), true, fail)
	}
	rel := r.rel
	chartName, chartVersion, appVersion := "", "", ""
	if rel.Chart != nil && rel.Chart.Metadata != nil {
		chartName, chartVersion, appVersion = rel.Chart.Metadata.Name, rel.Chart.Metadata.Version, rel.Chart.Metadata.AppVersion
	}
	status := rel.Info.Status.String()
	setResultVars(vars, rel.Version, status, chartName, chartVersion, appVersion)
	return pipelineAnswer{Status: status, Answer: codepipeline.Answer{Result: codepipeline.Success, OutputVariables: vars,
		Message: codepipeline.Message(fmt.Sprintf("release %s revision %d %s and ready (chart %s %s)", rel.Name, rel.Version, status, chartName, chartVersion))}}
}

// finishFailed answers a rollout that failed or outlasted the job's wait.
func (h *Handler) finishFailed(ctx context.Context, o *op, r readiness, cause error, timedOut bool, fail func(error) pipelineAnswer) pipelineAnswer {
	var re *ReleaseError
	var err error
	switch {
	case errors.As(cause, &re):
		// Failed already (by a duplicate delivery of the job, or by hand).
		err = &invoke.Error{Code: RolloutFailed, Err: cause, Message: invoke.Redact(re.Error())}
	default:
		err = o.rolloutFailed(ctx, r.rel, cause, timedOut)
	}
	a := fail(err)
	a.Status = "failed"
	return a
}

// setResultVars sets the output variables of a release's revision.
func setResultVars(vars map[string]string, revision int, status, chart, chartVersion, appVersion string) {
	vars["revision"] = strconv.Itoa(revision)
	vars["status"] = status
	vars["chart"] = chart
	vars["chartVersion"] = chartVersion
	if appVersion != "" {
		vars["appVersion"] = appVersion
	}
	for k, v := range vars {
		if len(v) > 1000 {
			vars[k] = v[:1000]
		}
		if v == "" {
			delete(vars, k)
		}
	}
}
