package handler

// The CodePipeline action: a Lambda invoke action of a pipeline sends a
// CodePipeline.job event; the function reads the input artifact (a zip in
// S3) with the job's own artifact credentials, applies its manifests as
// apply does, owned by the pipeline and action so that a later job prunes
// only what this action applied before, waits for readiness, and answers
// CodePipeline with PutJobSuccessResult or PutJobFailureResult. A wait
// longer than the invocation answers success with a continuationToken;
// CodePipeline then invokes the function again with it. The protocol (the
// event, the artifact, the answer) is internal/codepipeline's; the action
// is this file's.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// ActionCodePipeline is the Response's action of a CodePipeline job.
const ActionCodePipeline = codepipeline.Action

// PipelineParams are the action's UserParameters (JSON).
type PipelineParams struct {
	// Pipeline and Action name the owner of what the job applies: a later
	// job of the same pipeline and action prunes what this one applied and
	// the next does not (Pipeline is required; Action defaults to deploy).
	Pipeline  string `json:"pipeline"`
	Action    string `json:"action,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
	Region    string `json:"region,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Artifact names the input artifact; default the first.
	Artifact string `json:"artifact,omitempty"`
	// Files lists the artifact's manifests; Directory takes every .yaml,
	// .yml and .json under it; neither: every one in the artifact.
	Files     []string `json:"files,omitempty"`
	Directory string   `json:"directory,omitempty"`
	// Prune (default true) deletes what this action applied before and the
	// artifact no longer holds.
	Prune *bool `json:"prune,omitempty"`
	// Wait bounds the wait for readiness, e.g. "10m"; default 5m, "0s" for
	// none. A wait longer than the invocation continues in the next.
	Wait string `json:"wait,omitempty"`
}

const (
	pipelineParamFields = "pipeline, action, cluster, region, namespace, artifact, files, directory, prune, wait"
	maxManifestBytes    = 16 << 20
	defaultPipelineWait = 5 * time.Minute
	// maxPipelineWait bounds a wait across continuations: CodePipeline's
	// own timeout of a Lambda action is an hour.
	maxPipelineWait = 55 * time.Minute
	// inventoryPrefix names the ConfigMap that lists what an owner applied.
	inventoryPrefix = "lambda-eks-pipeline-"
)

// DecodePipelineParams decodes UserParameters strictly and checks them.
func DecodePipelineParams(s string) (PipelineParams, error) {
	var p PipelineParams
	if strings.TrimSpace(s) == "" {
		return p, invoke.Invalid(`UserParameters is empty; give at least {"pipeline":"NAME"}`)
	}
	if err := invoke.Strict([]byte(s), &p, pipelineParamFields); err != nil {
		return p, &invoke.Error{Code: invoke.InvalidEvent, Err: err, Message: "UserParameters: " + invoke.AsError(err).Message}
	}
	p.Action = invoke.Or(p.Action, "deploy")
	if err := invoke.CheckControls("pipeline", p.Pipeline, "action", p.Action, "artifact", p.Artifact, "directory", p.Directory); err != nil {
		return p, err
	}
	if p.Pipeline == "" || len(p.Pipeline) > 100 || len(p.Action) > 100 {
		return p, invoke.Invalid("UserParameters: pipeline (1 to 100 characters) names the owner of what the action applies")
	}
	if p.Directory != "" && len(p.Files) > 0 {
		return p, invoke.Invalid("UserParameters: give files or directory, not both")
	}
	return p, nil
}

// owner is what the pipeline's action owns its objects as.
func (p PipelineParams) owner() string { return "codepipeline/" + p.Pipeline + "/" + p.Action }

// WithAWS sets the function's AWS configuration, which CodePipeline jobs
// are answered with (their artifacts are read with their own credentials).
func WithAWS(cfg aws.Config) Option { return func(h *Handler) { h.aws = &cfg } }

// pipelineAnswer is what the function answered CodePipeline, and the
// invocation's response.
type pipelineAnswer struct {
	codepipeline.Answer
	Objects objectList `json:"objects"`
}

// objectList is the job's objects: [] when there are none, as in every
// response of the function.
type objectList []kube.ObjectResult

func (l objectList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]kube.ObjectResult(l))
}

// CountResults counts the job's objects by result, for the metrics.
func (a *pipelineAnswer) CountResults() map[string]int {
	return (&Response{Objects: a.Objects}).CountResults()
}

// pipelineJob serves a CodePipeline job on the framework's engine
// (codepipeline.Serve): the answer is always sent, a failure too, before
// the invocation returns.
func (h *Handler) pipelineJob(ctx context.Context, payload []byte) ([]byte, error) {
	return codepipeline.Serve(ctx, h.aws, h.log, payload, func(ctx context.Context, job codepipeline.Job) *pipelineAnswer {
		a := h.runPipelineJob(ctx, job)
		return &a
	}, func(a *pipelineAnswer) []any { return []any{"objects", len(a.Objects)} })
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
	cont := codepipeline.Continuation{Start: time.Now().Unix()}
	if tok := job.Data.ContinuationToken; tok != "" {
		if cont, err = codepipeline.ParseContinuation(tok); err != nil {
			return fail(err)
		}
	}
	wait := defaultPipelineWait
	if p.Wait != "" {
		if wait, err = time.ParseDuration(p.Wait); err != nil || wait < 0 || wait > maxPipelineWait {
			return fail(invoke.Invalid("UserParameters: wait %q is not a duration of 0 to %s", p.Wait, maxPipelineWait))
		}
	}
	art, err := codepipeline.PickArtifact(job.Data.InputArtifacts, p.Artifact)
	if err != nil {
		return fail(err)
	}
	manifest, err := h.readArtifact(ctx, art, job.Data.ArtifactCredentials, p)
	if err != nil {
		return fail(err)
	}
	req, err := Resolve(Event{Action: ActionApply, Cluster: p.Cluster, Region: p.Region, Namespace: p.Namespace, Manifest: manifest}, h.cfg)
	if err != nil {
		return fail(err)
	}
	h.log.InfoContext(ctx, "codepipeline job", "job", job.ID, "pipeline", p.Pipeline, "owner", p.owner(), "artifact", art.Name,
		"documents", len(req.Objects), "continued", job.Data.ContinuationToken != "")
	t := req.target(h.cfg.SessionName)
	conn, err := h.conns.Get(ctx, t)
	if err != nil {
		return fail(invoke.Classify(ctx, err, diagnose(req, nil)))
	}
	k := conn.Client
	var objects []kube.ObjectResult
	summary := ""
	if job.Data.ContinuationToken == "" {
		objects, summary, err = applyOwned(ctx, k, req, p)
	} else {
		// Applied by the first invocation: only the wait goes on.
		objects, err = k.StatusManifest(ctx, req.Objects, req.Namespace)
		summary = "continued"
	}
	if err != nil {
		h.conns.Done(ctx, t, conn, err)
		return fail(invoke.Classify(ctx, err, diagnose(req, conn.CallerARN)))
	}
	out := pipelineAnswer{Objects: objects}
	if wait > 0 {
		left := time.Until(time.Unix(cont.Start, 0).Add(wait))
		bound := left
		if deadline, ok := ctx.Deadline(); ok {
			bound = min(bound, time.Until(deadline)-waitMargin)
		}
		waited, err := k.Wait(ctx, objects, max(bound, 0), h.log)
		var timeout *kube.WaitTimeoutError
		switch {
		case errors.As(err, &timeout) && bound < left:
			// The invocation ends before the wait: CodePipeline invokes
			// the function again with the token.
			return pipelineAnswer{Answer: codepipeline.Answer{Result: codepipeline.Continue, ContinuationToken: cont.Token(),
				Message: codepipeline.Message(fmt.Sprintf("%s; waiting for readiness (%s of %s)", summary, time.Since(time.Unix(cont.Start, 0)).Round(time.Second), wait))},
				Objects: timeout.Objects}
		case err != nil:
			return fail(invoke.Classify(ctx, err, diagnose(req, conn.CallerARN)))
		}
		out.Objects = waited
		if failed := failedRollouts(waited); failed != "" {
			a := fail(&invoke.Error{Code: RolloutFailed, Message: "the changes were made, but " + failed})
			a.Objects = waited
			return a
		}
	}
	out.Result = codepipeline.Success
	revision := ""
	if art.Revision != nil {
		revision = *art.Revision
	}
	out.OutputVariables = map[string]string{"objects": strconv.Itoa(len(out.Objects)), "results": countResults(out.Objects),
		"owner": p.owner(), "namespace": req.Namespace, "cluster": req.Cluster}
	if revision != "" {
		out.OutputVariables["revision"] = revision
	}
	for k, v := range out.OutputVariables {
		if len(v) > 1000 {
			out.OutputVariables[k] = v[:1000]
		}
	}
	out.Message = summary
	return out
}

// applyOwned applies req's objects owned by p's owner, then prunes what the
// owner's inventory lists and the manifest no longer holds, and records the
// new inventory.
func applyOwned(ctx context.Context, k *kube.Client, req Request, p PipelineParams) ([]kube.ObjectResult, string, error) {
	owner := p.owner()
	invName := inventoryPrefix + ownerHash(owner)
	var before []kube.Ref
	if prev, err := k.Get(ctx, "v1", "ConfigMap", req.Namespace, invName); err == nil {
		if s, ok, _ := unstructured.NestedString(prev.Object, "data", "objects"); ok {
			_ = json.Unmarshal([]byte(s), &before)
		}
	} else if !isNotFound(err) {
		return nil, "", err
	}
	applied, err := k.Apply(ctx, req.Objects, kube.ApplyOptions{Namespace: req.Namespace, Owner: owner})
	if err != nil {
		return nil, "", err
	}
	summary := "apply: " + countResults(applied)
	now := make([]kube.Ref, 0, len(applied))
	for _, o := range applied {
		now = append(now, kube.Ref{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
	}
	var gone []kube.Ref
	for _, r := range before {
		if !slices.Contains(now, r) {
			gone = append(gone, r)
		}
	}
	keep := now
	if p.Prune == nil || *p.Prune {
		if len(gone) > 0 {
			pruned, err := k.Delete(ctx, gone, kube.DeleteOptions{Namespace: req.Namespace, Propagation: "Background", Owner: owner})
			if err != nil {
				return nil, "", err
			}
			summary += "; prune: " + countResults(pruned)
			applied = append(applied, pruned...)
		}
	} else {
		keep = append(keep, gone...)
	}
	list, err := json.Marshal(keep)
	if err != nil {
		return nil, "", err
	}
	inv := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": invName, "namespace": req.Namespace,
			"labels": map[string]any{"app.kubernetes.io/managed-by": "lambda-eks"}},
		"data": map[string]any{"owner": owner, "objects": string(list)},
	}}
	if _, err := k.Apply(ctx, kube.Manifest{{Object: inv}}, kube.ApplyOptions{Namespace: req.Namespace, Owner: owner, Force: true}); err != nil {
		return nil, "", fmt.Errorf("record what %s applied in ConfigMap %s/%s: %w", owner, req.Namespace, invName, err)
	}
	return applied, summary, nil
}

func ownerHash(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(sum[:6])
}

func isNotFound(err error) bool {
	return invoke.AsError(invoke.Classify(context.Background(), err, invoke.Diagnosis{})).Code == invoke.NotFound
}

// readArtifact reads the artifact's zip with the job's credentials (never
// the function's role) and returns its manifests as one document stream.
func (h *Handler) readArtifact(ctx context.Context, art codepipeline.Artifact, creds codepipeline.Credentials, p PipelineParams) (string, error) {
	if h.aws == nil {
		return "", errNoAWS
	}
	b, err := codepipeline.ReadArtifact(ctx, *h.aws, art, creds)
	if err != nil {
		return "", err
	}
	return manifestsOfZip(b, p)
}

// errNoAWS: a CodePipeline job needs the function's AWS configuration.
var errNoAWS = errors.New("this handler has no AWS configuration (handler.WithAWS)")

// manifestsOfZip returns the manifests of the zip that p selects, in
// name order, as one stream of documents.
func manifestsOfZip(b []byte, p PipelineParams) (string, error) {
	z, err := codepipeline.OpenZip(b)
	if err != nil {
		return "", err
	}
	var names []string
	if len(p.Files) > 0 {
		for _, n := range p.Files {
			if !z.Has(n) {
				return "", invoke.Invalid("UserParameters: file %q is not in the input artifact", n)
			}
			names = append(names, path.Clean(n))
		}
	} else {
		dir := strings.Trim(path.Clean("/"+p.Directory), "/")
		for _, n := range z.Names() {
			ext := path.Ext(n)
			if (ext == ".yaml" || ext == ".yml" || ext == ".json") && (dir == "" || strings.HasPrefix(n, dir+"/")) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return "", invoke.Invalid("the input artifact has no .yaml, .yml or .json file under %q", invoke.Or(p.Directory, "/"))
		}
	}
	var docs []string
	total := 0
	for _, n := range names {
		data, err := z.Read(n, maxManifestBytes-total)
		if err != nil {
			return "", err
		}
		total += len(data)
		if total > maxManifestBytes {
			return "", invoke.Invalid("the manifests of the input artifact are larger than %d bytes", maxManifestBytes)
		}
		docs = append(docs, strings.TrimPrefix(string(data), "---\n"))
	}
	return strings.Join(docs, "\n---\n"), nil
}
