package handler

// The CodePipeline action: a Lambda invoke action of a pipeline sends a
// CodePipeline.job event; the function reads the input artifact (a zip in
// S3) with the job's own artifact credentials, applies its manifests as
// apply does, owned by the pipeline and action so that a later job prunes
// only what this action applied before, waits for readiness, and answers
// CodePipeline with PutJobSuccessResult or PutJobFailureResult. A wait
// longer than the invocation answers success with a continuationToken;
// CodePipeline then invokes the function again with it.

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// ActionCodePipeline is the Response's action of a CodePipeline job.
const ActionCodePipeline = "codepipeline"

// PipelineJobEvent is what CodePipeline's Lambda invoke action sends. Our
// own type: aws-lambda-go's events.CodePipelineJobEvent lacks
// expirationTime.
type PipelineJobEvent struct {
	Job PipelineJob `json:"CodePipeline.job"`
}

// PipelineJob is the job of a PipelineJobEvent.
type PipelineJob struct {
	ID        string          `json:"id"`
	AccountID string          `json:"accountId"`
	Data      PipelineJobData `json:"data"`
}

// PipelineJobData is the job's data.
type PipelineJobData struct {
	ActionConfiguration struct {
		Configuration struct {
			FunctionName   string `json:"FunctionName"`
			UserParameters string `json:"UserParameters,omitempty"`
		} `json:"configuration"`
	} `json:"actionConfiguration"`
	InputArtifacts      []PipelineArtifact  `json:"inputArtifacts"`
	OutputArtifacts     []PipelineArtifact  `json:"outputArtifacts"`
	ArtifactCredentials ArtifactCredentials `json:"artifactCredentials"`
	ContinuationToken   string              `json:"continuationToken,omitempty"`
	EncryptionKey       *struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"encryptionKey,omitempty"`
}

// PipelineArtifact is an input or output artifact: a zip in S3.
type PipelineArtifact struct {
	Name     string  `json:"name"`
	Revision *string `json:"revision"`
	Location struct {
		Type       string `json:"type"`
		S3Location struct {
			BucketName string `json:"bucketName"`
			ObjectKey  string `json:"objectKey"`
		} `json:"s3Location"`
	} `json:"location"`
}

// ArtifactCredentials are the job's temporary credentials for its
// artifacts. Never logged; String hides them.
type ArtifactCredentials struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken"`
	ExpirationTime  int64  `json:"expirationTime"`
}

// String keeps the credentials out of any message.
func (ArtifactCredentials) String() string { return "(artifact credentials)" }

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
	maxArtifactBytes    = 32 << 20
	maxManifestBytes    = 16 << 20
	defaultPipelineWait = 5 * time.Minute
	// maxPipelineWait bounds a wait across continuations: CodePipeline's
	// own timeout of a Lambda action is an hour.
	maxPipelineWait = 55 * time.Minute
	// answerBudget is kept between the work's end and the invocation's,
	// for the answer to CodePipeline (retried).
	answerBudget = 4 * time.Second
	// inventoryPrefix names the ConfigMap that lists what an owner applied.
	inventoryPrefix = "lambda-eks-pipeline-"
)

// IsPipelineJob reports a CodePipeline job event: a JSON object whose one
// member is CodePipeline.job.
func IsPipelineJob(payload []byte) bool {
	if !bytes.Contains(payload, []byte(`"CodePipeline.job"`)) {
		return false // every other event, without parsing it twice
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(payload, &probe) != nil {
		return false
	}
	_, ok := probe["CodePipeline.job"]
	return ok
}

// DecodePipelineJob decodes a CodePipeline.job event strictly.
func DecodePipelineJob(raw []byte) (PipelineJobEvent, error) {
	trimmed, err := invoke.Trim(raw)
	if err != nil {
		return PipelineJobEvent{}, err
	}
	if err := invoke.CheckObject(trimmed, maxEventDepth); err != nil {
		return PipelineJobEvent{}, err
	}
	var ev PipelineJobEvent
	if err := invoke.Strict(trimmed, &ev, "CodePipeline.job"); err != nil {
		return PipelineJobEvent{}, err
	}
	if ev.Job.ID == "" {
		return PipelineJobEvent{}, invoke.Invalid("CodePipeline.job has no id")
	}
	return ev, nil
}

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

// continuation is the state a continued job carries in its token.
type continuation struct {
	Start int64 `json:"start"` // when the first invocation of the job began (unix s)
}

// WithAWS sets the function's AWS configuration, which CodePipeline jobs
// are answered with (their artifacts are read with their own credentials).
func WithAWS(cfg aws.Config) Option { return func(h *Handler) { h.aws = &cfg } }

// pipelineAnswer is what the function answered CodePipeline.
type pipelineAnswer struct {
	JobID             string            `json:"jobId"`
	Result            string            `json:"result"` // success, continue, failure
	ContinuationToken string            `json:"continuationToken,omitempty"`
	OutputVariables   map[string]string `json:"outputVariables,omitempty"`
	FailureType       string            `json:"failureType,omitempty"`
	// Code is the failure's error code, for the metrics.
	Code    invoke.Code         `json:"code,omitempty"`
	Message string              `json:"message,omitempty"`
	Objects []kube.ObjectResult `json:"objects"`
}

// FailureCode is the code of a failure the job answered (invoke.Outcome):
// the invocation succeeds, its metrics count the failure.
func (a *pipelineAnswer) FailureCode() invoke.Code { return a.Code }

// CountResults counts the job's objects by result, for the metrics.
func (a *pipelineAnswer) CountResults() map[string]int {
	return (&Response{Objects: a.Objects}).CountResults()
}

// pipelineJob serves a CodePipeline job: the answer to CodePipeline is
// always sent (a failure too) before the invocation returns; only an
// event without a job id, or an answer that could not be delivered, is the
// invocation's error (Lambda then retries it, and the job runs again:
// applying is idempotent).
func (h *Handler) pipelineJob(ctx context.Context, payload []byte) ([]byte, error) {
	start := time.Now()
	invoke.NoteAction(ctx, ActionCodePipeline)
	ev, err := DecodePipelineJob(payload)
	if err != nil {
		return invoke.Finish(ctx, h.log, start, (*pipelineAnswer)(nil), err, func(*pipelineAnswer) []any { return nil })
	}
	job := ev.Job
	work, cancel := context.WithCancel(ctx)
	if deadline, ok := ctx.Deadline(); ok {
		work, cancel = context.WithDeadline(ctx, deadline.Add(-answerBudget))
	}
	ans := h.runPipelineJob(work, job)
	cancel()
	ans.JobID = job.ID
	if ans.Objects == nil {
		ans.Objects = []kube.ObjectResult{}
	}
	if err := h.answerJob(ctx, ans); err != nil {
		return invoke.Finish(ctx, h.log, start, (*pipelineAnswer)(nil), err, func(*pipelineAnswer) []any { return nil })
	}
	return invoke.Finish(ctx, h.log, start, &ans, nil, func(a *pipelineAnswer) []any {
		return []any{"action", ActionCodePipeline, "job", a.JobID, "result", a.Result, "objects", len(a.Objects)}
	})
}

// runPipelineJob does the job and says what to answer.
func (h *Handler) runPipelineJob(ctx context.Context, job PipelineJob) pipelineAnswer {
	fail := func(err error) pipelineAnswer {
		e := invoke.AsError(err)
		h.log.ErrorContext(ctx, "codepipeline job failed", "job", job.ID, "code", string(e.Code), "error", e.Message)
		return pipelineAnswer{Result: "failure", FailureType: failureType(e.Code), Code: e.Code, Message: jobMessage(string(e.Code) + ": " + e.Message)}
	}
	p, err := DecodePipelineParams(job.Data.ActionConfiguration.Configuration.UserParameters)
	if err != nil {
		return fail(err)
	}
	cont := continuation{Start: time.Now().Unix()}
	if tok := job.Data.ContinuationToken; tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || json.Unmarshal(b, &cont) != nil || cont.Start == 0 {
			return fail(invoke.Invalid("continuationToken %.40q is not one this function gave", tok))
		}
	}
	wait := defaultPipelineWait
	if p.Wait != "" {
		if wait, err = time.ParseDuration(p.Wait); err != nil || wait < 0 || wait > maxPipelineWait {
			return fail(invoke.Invalid("UserParameters: wait %q is not a duration of 0 to %s", p.Wait, maxPipelineWait))
		}
	}
	art, err := pickArtifact(job.Data.InputArtifacts, p.Artifact)
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
			tok, _ := json.Marshal(cont)
			return pipelineAnswer{Result: "continue", ContinuationToken: base64.RawURLEncoding.EncodeToString(tok), Objects: timeout.Objects,
				Message: jobMessage(fmt.Sprintf("%s; waiting for readiness (%s of %s)", summary, time.Since(time.Unix(cont.Start, 0)).Round(time.Second), wait))}
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
	out.Result = "success"
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

// pickArtifact returns the input artifact named name, or the first.
func pickArtifact(arts []PipelineArtifact, name string) (PipelineArtifact, error) {
	for _, a := range arts {
		if name == "" || a.Name == name {
			if a.Location.Type != "S3" || a.Location.S3Location.BucketName == "" || a.Location.S3Location.ObjectKey == "" {
				return a, invoke.Invalid("input artifact %q is not in S3", a.Name)
			}
			return a, nil
		}
	}
	if name == "" {
		return PipelineArtifact{}, invoke.Invalid("the action has no input artifact; give it the artifact that holds the manifests")
	}
	return PipelineArtifact{}, invoke.Invalid("no input artifact named %q", name)
}

// readArtifact reads the artifact's zip with the job's credentials (never
// the function's role) and returns its manifests as one document stream.
func (h *Handler) readArtifact(ctx context.Context, art PipelineArtifact, creds ArtifactCredentials, p PipelineParams) (string, error) {
	if h.aws == nil {
		return "", errors.New("this handler has no AWS configuration (handler.WithAWS)")
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return "", &invoke.Error{Code: invoke.Forbidden, Message: "the job has no artifactCredentials"}
	}
	client := s3.NewFromConfig(*h.aws, func(o *s3.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	})
	loc := art.Location.S3Location
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(loc.BucketName), Key: aws.String(loc.ObjectKey)})
	if err != nil {
		if _, rerr := ReadManifestS3(ctx, failingGetter{err}, loc.BucketName, loc.ObjectKey); rerr != nil {
			e := invoke.AsError(rerr)
			e.Message = strings.Replace(e.Message, "ManifestS3 ", "input artifact "+art.Name+" at ", 1)
			if e.Code == invoke.Forbidden {
				e.Message = fmt.Sprintf("input artifact %s at s3://%s/%s: access denied with the job's artifact credentials", art.Name, loc.BucketName, loc.ObjectKey)
			}
			return "", e
		}
		return "", err
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxArtifactBytes+1))
	if err != nil {
		return "", fmt.Errorf("read input artifact %s: %w", art.Name, err)
	}
	if len(b) > maxArtifactBytes {
		return "", invoke.Invalid("input artifact %s is larger than %d bytes", art.Name, maxArtifactBytes)
	}
	return manifestsOfZip(b, p)
}

// failingGetter answers GetObject with err, to word it as ReadManifestS3
// words S3's errors.
type failingGetter struct{ err error }

func (f failingGetter) GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	return nil, f.err
}

// manifestsOfZip returns the manifests of the zip that p selects, in
// name order, as one stream of documents.
func manifestsOfZip(b []byte, p PipelineParams) (string, error) {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return "", invoke.Invalid("the input artifact is not a zip: %v", err)
	}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		if !f.FileInfo().IsDir() {
			files[path.Clean(f.Name)] = f
		}
	}
	var names []string
	if len(p.Files) > 0 {
		for _, n := range p.Files {
			if _, ok := files[path.Clean(n)]; !ok {
				return "", invoke.Invalid("UserParameters: file %q is not in the input artifact", n)
			}
			names = append(names, path.Clean(n))
		}
	} else {
		dir := strings.Trim(path.Clean("/"+p.Directory), "/")
		for n := range files {
			ext := path.Ext(n)
			if (ext == ".yaml" || ext == ".yml" || ext == ".json") && (dir == "" || strings.HasPrefix(n, dir+"/")) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		if len(names) == 0 {
			return "", invoke.Invalid("the input artifact has no .yaml, .yml or .json file under %q", invoke.Or(p.Directory, "/"))
		}
	}
	var docs []string
	total := 0
	for _, n := range names {
		rc, err := files[n].Open()
		if err != nil {
			return "", invoke.Invalid("input artifact file %s: %v", n, err)
		}
		data, err := io.ReadAll(io.LimitReader(rc, int64(maxManifestBytes-total+1)))
		_ = rc.Close()
		if err != nil {
			return "", invoke.Invalid("input artifact file %s: %v", n, err)
		}
		total += len(data)
		if total > maxManifestBytes {
			return "", invoke.Invalid("the manifests of the input artifact are larger than %d bytes", maxManifestBytes)
		}
		docs = append(docs, strings.TrimPrefix(string(data), "---\n"))
	}
	return strings.Join(docs, "\n---\n"), nil
}

// failureType is CodePipeline's failureDetails.type for an error code.
func failureType(c invoke.Code) string {
	switch c {
	case invoke.InvalidEvent:
		return "ConfigurationError"
	case invoke.Forbidden, invoke.Unauthorized:
		return "PermissionError"
	case invoke.Unavailable:
		return "SystemUnavailable"
	}
	return "JobFailed"
}

// jobMessage fits a message in CodePipeline's 5,000 characters (redacted,
// as every message the function writes).
func jobMessage(s string) string {
	s = invoke.Redact(s)
	if len(s) > 4900 {
		s = s[:4900] + " ..."
	}
	return s
}

// answerJob sends the answer with the function's own credentials, retried
// within ctx: CodePipeline waits for it until the action's timeout.
func (h *Handler) answerJob(ctx context.Context, a pipelineAnswer) error {
	if h.aws == nil {
		return errors.New("this handler has no AWS configuration (handler.WithAWS)")
	}
	op, body := "PutJobSuccessResult", map[string]any{"jobId": a.JobID}
	switch a.Result {
	case "continue":
		body["continuationToken"] = a.ContinuationToken
		body["executionDetails"] = map[string]any{"summary": truncate(a.Message, 2048)}
	case "success":
		body["outputVariables"] = a.OutputVariables
		body["executionDetails"] = map[string]any{"summary": truncate(a.Message, 2048)}
	default:
		op = "PutJobFailureResult"
		body = map[string]any{"jobId": a.JobID, "failureDetails": map[string]any{"type": a.FailureType, "message": a.Message}}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	var last error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("answer codepipeline job %s: %w (last: %w)", a.JobID, ctx.Err(), last)
			case <-time.After(time.Duration(attempt) * 300 * time.Millisecond):
			}
		}
		retry, err := h.putJobResult(ctx, op, payload)
		if err == nil {
			h.log.InfoContext(ctx, "codepipeline answered", "job", a.JobID, "op", op, "result", a.Result)
			return nil
		}
		if errors.Is(err, errJobAnswered) {
			// A duplicate delivery of a job another invocation answered:
			// CodePipeline keeps that answer; this one did the same work.
			h.log.WarnContext(ctx, "codepipeline job answered already", "job", a.JobID, "op", op, "result", a.Result)
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return &invoke.Error{Code: invoke.Unavailable, Err: last, Message: fmt.Sprintf("answer codepipeline job %s (%s): %v", a.JobID, op, last)}
}

// putJobResult sends one CodePipeline call (AWS JSON 1.1, SigV4) and says
// whether a failure is worth retrying.
func (h *Handler) putJobResult(ctx context.Context, op string, payload []byte) (bool, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	region := h.aws.Region
	endpoint := "https://codepipeline." + region + ".amazonaws.com/"
	req, err := http.NewRequestWithContext(actx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "CodePipeline_20150709."+op)
	creds, err := h.aws.Credentials.Retrieve(actx)
	if err != nil {
		return true, fmt.Errorf("aws credentials: %w", err)
	}
	sum := sha256.Sum256(payload)
	if err := v4.NewSigner().SignHTTP(actx, creds, req, hex.EncodeToString(sum[:]), "codepipeline", region, time.Now()); err != nil {
		return false, err
	}
	client := h.aws.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return false, nil
	}
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(b, &e)
	if strings.HasSuffix(e.Type, "InvalidJobStateException") {
		return false, fmt.Errorf("%s: %w: %s", op, errJobAnswered, invoke.Redact(e.Message))
	}
	retry := resp.StatusCode >= 500 || strings.Contains(e.Type, "Throttling")
	return retry, fmt.Errorf("%s: %d %s: %s", op, resp.StatusCode, e.Type, invoke.Redact(e.Message))
}

// errJobAnswered is CodePipeline's InvalidJobStateException: the job
// succeeded or failed already.
var errJobAnswered = errors.New("the job was answered already")

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
