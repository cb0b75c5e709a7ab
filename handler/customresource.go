package handler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Custom resources: a CloudFormation custom resource request (any
// ResourceType; Custom::KubernetesManifest in the examples) applies, prunes
// and deletes the objects of a manifest and answers CloudFormation by a PUT
// to the request's ResponseURL.
//
// Ownership. The PhysicalResourceId owns the objects: every object applied
// for a resource carries kube.OwnerAnnotation = its PhysicalResourceId, and
// delete and prune remove only objects that still carry it. The ID is
// <stack name>/<logical id>/<hash of stack ID, logical ID, Cluster, Region,
// RoleArn>: the same on every Update unless the target changes, in which
// case the new ID makes CloudFormation replace the resource and later delete
// the old one, which then finds its objects owned by the new ID and keeps
// them. An object moved to another logical resource is taken over by that
// resource's Create or Update, and the old resource's prune or delete keeps
// it. (CloudFormation deletes removed resources after all creates and
// updates; between two resources that both stay, make the giving one
// DependsOn the receiving one, so the object is taken over before the giver
// prunes.)

// RolloutFailed is a custom resource whose Wait saw a rollout fail.
const RolloutFailed Code = "RolloutFailed"

// Timing of a custom resource request. The work ends putReserve before the
// handler's deadline (Lambda's less deadlineMargin), so that the answer is
// always sent; a cut at that point is answered FAILED (Timeout).
const (
	putReserve = 2 * time.Second
	// cutGrace is how long the answer waits, after the work's deadline, for
	// the work to return its own (better worded) error.
	cutGrace = 250 * time.Millisecond
	// defaultOutputWait bounds the wait for outputs when Wait is not set.
	defaultOutputWait = 5 * time.Minute
	// maxManifestS3Bytes bounds a manifest read from S3: it is decoded in
	// the function's memory.
	maxManifestS3Bytes = 16 << 20
	// maxDeleteDocuments decodes a manifest for delete and prune whatever
	// MAX_DOCUMENTS is now: it may have been larger when it was applied.
	maxDeleteDocuments = 10000
)

// outputInterval is how often outputs are read while they are empty (a
// variable for tests).
var outputInterval = 2 * time.Second

// responseClient PUTs responses; it honours HTTPS_PROXY like the SDKs.
var responseClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

// customResource serves one CloudFormation custom resource request and
// returns the body it sent. It answers before its deadline whatever
// happens: work cut at the deadline, or a panic, is answered FAILED. An
// error is returned only when no answer could be delivered (no usable
// ResponseURL, or the PUT failed), so that Lambda's retry of an
// asynchronous invocation tries again.
func (h *Handler) customResource(ctx context.Context, payload []byte) ([]byte, error) {
	return answerCustomResource(ctx, payload, h.log, h.plan, h.serve)
}

// answerCustomResource is the protocol, whatever the work: decode the
// envelope, plan the PhysicalResourceIds, run serve until shortly before
// the deadline (a panic or an overrun is answered FAILED), and PUT the
// answer within 4,096 bytes before the deadline.
func answerCustomResource(ctx context.Context, payload []byte, log *slog.Logger,
	plan func(cfnRequest) cfnPlan, serve func(context.Context, cfnRequest, cfnPlan) cfnResponse) ([]byte, error) {
	start := time.Now()
	req, err := decodeRequest(payload)
	if err != nil {
		e := appError(err)
		log.ErrorContext(ctx, "custom resource request cannot be answered", "code", string(e.Code), "error", e.Message)
		return nil, e
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = start.Add(maxWait)
	}
	answerBy := deadline.Add(-deadlineMargin)
	reserve := min(putReserve, time.Until(answerBy)/3)
	workCtx, cancel := context.WithDeadline(ctx, answerBy.Add(-reserve))
	defer cancel()

	p := plan(req)
	log.InfoContext(ctx, "custom resource", "requestType", req.RequestType, "resourceType", req.ResourceType,
		"logicalResourceId", req.LogicalResourceID, "physicalResourceId", p.id, "replacement", p.replacement)

	done := make(chan cfnResponse, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "custom resource panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				done <- p.failed(req, &Error{Code: Internal, Message: fmt.Sprintf("the function panicked: %v; see its logs", r)})
			}
		}()
		if err := req.check(); err != nil {
			done <- p.failed(req, err)
			return
		}
		done <- serve(workCtx, req, p)
	}()
	var resp cfnResponse
	select {
	case resp = <-done:
	case <-workCtx.Done():
		select {
		case resp = <-done:
		case <-time.After(cutGrace):
			resp = p.failed(req, &Error{Code: Timeout, Message: fmt.Sprintf(
				"the work did not end within the function's deadline (%s after the start, less %s to answer); raise the function's Timeout, or lower Wait",
				time.Since(start).Round(time.Millisecond), reserve+deadlineMargin)})
		}
	}

	body, err := encodeResponse(resp)
	if err != nil {
		return nil, &Error{Code: Internal, Message: "encode the response: " + err.Error(), Err: err}
	}
	putCtx, putCancel := context.WithDeadline(ctx, answerBy)
	defer putCancel()
	put, err := putResponse(putCtx, responseClient, req.ResponseURL, body)
	var sent cfnResponse
	_ = json.Unmarshal(body, &sent)
	attrs := []any{"requestType", req.RequestType, "logicalResourceId", req.LogicalResourceID,
		"physicalResourceId", sent.PhysicalResourceID, "status", sent.Status, "reason", sent.Reason,
		"dataKeys", len(sent.Data), "bytes", len(body), "attempts", put.Attempts, "httpStatus", put.StatusCode,
		"responseURL", safeURL(req.ResponseURL), "duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		log.ErrorContext(ctx, "custom resource answer not delivered", append(attrs, "error", err.Error())...)
		return nil, &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"the answer (%s) could not be delivered to CloudFormation: %s; Lambda retries the invocation", sent.Status, err.Error())}
	}
	log.InfoContext(ctx, "custom resource answered", attrs...)
	return body, nil
}

// cfnPlan is decided before any work, from the request alone, so that an
// answer cut short still names the right resource.
type cfnPlan struct {
	// id is the PhysicalResourceId of a successful answer.
	id string
	// failedID is the PhysicalResourceId of a FAILED answer: the one
	// CloudFormation knows (Update, Delete), or for Create id with
	// failedCreateSuffix.
	failedID    string
	replacement bool
}

// failed is the FAILED answer to req for err.
func (p cfnPlan) failed(req cfnRequest, err error) cfnResponse {
	e := appError(err)
	return cfnResponse{Status: statusFailed, Reason: e.Error(), PhysicalResourceID: p.failedID,
		StackID: req.StackID, RequestID: req.RequestID, LogicalResourceID: req.LogicalResourceID}
}

func (p cfnPlan) success(req cfnRequest, reason string, data map[string]string) cfnResponse {
	return cfnResponse{Status: statusSuccess, Reason: reason, PhysicalResourceID: p.id,
		StackID: req.StackID, RequestID: req.RequestID, LogicalResourceID: req.LogicalResourceID, Data: data}
}

// targetOf is the cluster p names, with the environment's defaults.
func (h *Handler) targetOf(p Properties) cfnTarget {
	return cfnTarget{Cluster: or(p.Cluster, h.cfg.Cluster), Region: or(p.Region, h.cfg.Region), RoleARN: or(p.RoleArn, h.cfg.RoleARN)}
}

// failedCreateSuffix ends the PhysicalResourceId of a FAILED Create. The
// Delete CloudFormation sends for it (a rollback) cleans up what the Create
// may have written, owned by the ID without the suffix, and answers SUCCESS
// even when it cannot: a failed Create must never block the rollback.
const failedCreateSuffix = "/create-failed"

// plan decides the PhysicalResourceIds. Create: the ID of the target (when
// the properties cannot be read, nothing will be written, one made from the
// request), and that ID with failedCreateSuffix if it fails. Update: the
// same ID while the target stays, else the new target's. Delete: the
// request's.
func (h *Handler) plan(req cfnRequest) cfnPlan {
	props, err := decodeProperties(req.ResourceProperties, "ResourceProperties")
	switch req.RequestType {
	case requestCreate:
		id := physicalID(req.StackID, req.LogicalResourceID, h.targetOf(props))
		if err != nil {
			sum := sha256.Sum256([]byte(req.RequestID))
			id = stackName(req.StackID) + "/" + req.LogicalResourceID + "/" + hex.EncodeToString(sum[:8])
		}
		return cfnPlan{id: id, failedID: id + failedCreateSuffix}
	case requestUpdate:
		p := cfnPlan{id: req.PhysicalResourceID, failedID: req.PhysicalResourceID}
		if err != nil {
			return p
		}
		if old, oerr := decodeProperties(req.OldResourceProperties, "OldResourceProperties"); oerr == nil && h.targetOf(old) == h.targetOf(props) {
			return p
		}
		p.id = physicalID(req.StackID, req.LogicalResourceID, h.targetOf(props))
		p.replacement = p.id != req.PhysicalResourceID
		return p
	}
	return cfnPlan{id: req.PhysicalResourceID, failedID: req.PhysicalResourceID}
}

// cfnSpec is a resource's properties, checked, with the manifest decoded.
type cfnSpec struct {
	req      Request // target, namespace, force, manifest
	prune    bool
	wait     time.Duration
	outputs  []output
	manifest string // where the manifest came from, for messages
}

// resolve checks p and reads and decodes its manifest, with at most
// maxDocs objects (0: MAX_DOCUMENTS). Nothing is written.
func (h *Handler) resolve(ctx context.Context, p Properties, maxDocs int) (cfnSpec, error) {
	if (p.Manifest == "") == (p.ManifestS3 == "") {
		return cfnSpec{}, invalid("set exactly one of the properties Manifest and ManifestS3")
	}
	spec := cfnSpec{prune: p.Prune == nil || bool(*p.Prune), wait: time.Duration(p.Wait), manifest: "Manifest"}
	if spec.wait > maxWait {
		return cfnSpec{}, invalid("Wait %s is longer than Lambda's 15-minute limit", spec.wait)
	}
	// The outputs' default namespace is the resolved one: check them first
	// without it, so that a bad output fails before S3 is read.
	if _, err := checkOutputs(p.Outputs, "default"); err != nil {
		return cfnSpec{}, err
	}
	text := p.Manifest
	if p.ManifestS3 != "" {
		bucket, key, err := parseS3URI(p.ManifestS3)
		if err != nil {
			return cfnSpec{}, err
		}
		get, err := h.s3Getter()
		if err != nil {
			return cfnSpec{}, err
		}
		if text, err = ReadManifestS3(ctx, get, bucket, key); err != nil {
			return cfnSpec{}, err
		}
		spec.manifest = "ManifestS3 " + p.ManifestS3
	}
	cfg := h.cfg
	if maxDocs > 0 {
		cfg.MaxDocuments = maxDocs
	}
	req, err := Resolve(Event{Action: ActionApply, Cluster: p.Cluster, Region: p.Region, Namespace: p.Namespace,
		RoleARN: p.RoleArn, ExternalID: p.ExternalID, Manifest: text, Force: bool(p.Force)}, cfg)
	if err != nil {
		if e := (*Error)(nil); errors.As(err, &e) && spec.manifest != "Manifest" && strings.HasPrefix(e.Message, "manifest document") {
			return cfnSpec{}, &Error{Code: e.Code, Err: err, Message: spec.manifest + ": " + e.Message}
		}
		return cfnSpec{}, err
	}
	spec.req = req
	if spec.outputs, err = checkOutputs(p.Outputs, req.Namespace); err != nil {
		return cfnSpec{}, err
	}
	return spec, nil
}

func (s cfnSpec) target(sessionName string) auth.Target {
	return auth.Target{Cluster: s.req.Cluster, Region: s.req.Region, RoleARN: s.req.RoleARN, ExternalID: s.req.ExternalID,
		SessionName: sessionName}
}

// connect opens (or reuses) the connection to spec's cluster; errors come
// back classified.
func (h *Handler) connectSpec(ctx context.Context, spec cfnSpec) (*Conn, diagnosis, error) {
	diag := diagnosis{req: spec.req}
	conn, err := h.conn(ctx, spec.target(h.cfg.SessionName))
	if err != nil {
		return nil, diag, classify(ctx, err, diag)
	}
	diag.callerARN = conn.CallerARN
	return conn, diag, nil
}

// serve does the work of req and says what to answer.
func (h *Handler) serve(ctx context.Context, req cfnRequest, plan cfnPlan) cfnResponse {
	props, perr := decodeProperties(req.ResourceProperties, "ResourceProperties")
	if req.RequestType == requestDelete {
		reason, err := h.cfnDelete(ctx, req, props, perr)
		if err != nil {
			return plan.failed(req, err)
		}
		return plan.success(req, reason, nil)
	}
	if perr != nil {
		return plan.failed(req, perr)
	}
	spec, err := h.resolve(ctx, props, 0)
	if err != nil {
		return plan.failed(req, err)
	}
	reason, data, err := h.cfnApply(ctx, req, spec, plan)
	if err != nil {
		return plan.failed(req, err)
	}
	return plan.success(req, reason, data)
}

// cfnApply serves Create and Update: apply, prune what the old manifest
// named and the new one does not, wait, read the outputs.
func (h *Handler) cfnApply(ctx context.Context, req cfnRequest, spec cfnSpec, plan cfnPlan) (string, map[string]string, error) {
	// The old manifest, for the prune; read before anything is written. A
	// replacement prunes nothing: the old resource's Delete does, in its
	// own cluster, of what it still owns.
	var old *cfnSpec
	var notes []string
	if req.RequestType == requestUpdate && spec.prune && !plan.replacement {
		oldProps, err := decodeProperties(req.OldResourceProperties, "OldResourceProperties")
		if err == nil {
			var o cfnSpec
			if o, err = h.resolve(ctx, oldProps, maxDeleteDocuments); err == nil {
				old = &o
			}
		}
		if err != nil {
			// Nothing could have been applied from properties that do not
			// resolve, except from an S3 object since removed.
			notes = append(notes, "nothing pruned: the old properties do not resolve ("+appError(err).Message+")")
		}
	}

	conn, diag, err := h.connectSpec(ctx, spec)
	if err != nil {
		return "", nil, err
	}
	start := time.Now()
	applied, err := conn.Kube.Apply(ctx, spec.req.Objects, kube.ApplyOptions{Namespace: spec.req.Namespace, Force: spec.req.Force, Owner: plan.id})
	if err != nil {
		return "", nil, classify(ctx, err, diag)
	}
	h.log.InfoContext(ctx, "custom resource applied", "objects", len(applied), "duration_ms", time.Since(start).Milliseconds())
	summary := "apply: " + countResults(applied)

	if old != nil {
		if gone := pruneSet(old.req.Objects, old.req.Namespace, applied); len(gone) > 0 {
			pruned, err := deleteOwned(ctx, conn.Kube, gone, kube.DeleteOptions{Namespace: old.req.Namespace,
				Propagation: "Background", Owner: plan.id})
			if err != nil {
				return "", nil, classify(ctx, err, diag)
			}
			summary += "; prune: " + countResults(pruned)
			logResults(ctx, h.log, "custom resource pruned", pruned)
		}
	}

	waitUntil := time.Now().Add(defaultOutputWait)
	if spec.wait > 0 {
		waitUntil = time.Now().Add(spec.wait)
	}
	if deadline, ok := ctx.Deadline(); ok && deadline.Add(-waitMargin).Before(waitUntil) {
		waitUntil = deadline.Add(-waitMargin)
	}
	if spec.wait > 0 {
		waited, err := conn.Kube.Wait(ctx, applied, max(time.Until(waitUntil), 0), h.log)
		if err != nil {
			return "", nil, classify(ctx, err, diag)
		}
		if failed := failedRollouts(waited); failed != "" {
			return "", nil, &Error{Code: RolloutFailed, Message: "the changes were made, but " + failed +
				"; look at the pods' events, fix the manifest and update the stack"}
		}
	}
	data, err := h.readOutputs(ctx, conn.Kube, spec.outputs, waitUntil, diag)
	if err != nil {
		return "", nil, err
	}
	return strings.Join(append([]string{summary}, notes...), "; "), data, nil
}

// cfnDelete serves Delete: every object of the manifest that this resource
// still owns is deleted, in reverse order. A Delete must not block the
// stack: properties that never resolved applied nothing, a cluster that is
// gone holds nothing, and the cleanup after a failed Create is best effort;
// all answer SUCCESS saying so.
func (h *Handler) cfnDelete(ctx context.Context, req cfnRequest, props Properties, perr error) (string, error) {
	owner, afterFailedCreate := strings.CutSuffix(req.PhysicalResourceID, failedCreateSuffix)
	reason, err := h.deleteObjects(ctx, props, perr, owner)
	if err != nil && afterFailedCreate {
		return fmt.Sprintf("the Create failed, and so did the cleanup after it (%s); objects it may have written carry the annotation %s=%s",
			appError(err).Error(), kube.OwnerAnnotation, owner), nil
	}
	return reason, err
}

// deleteObjects deletes the objects of props's manifest that owner holds.
func (h *Handler) deleteObjects(ctx context.Context, props Properties, perr error, owner string) (string, error) {
	if perr != nil {
		return "nothing to delete: the properties never resolved, so nothing was applied (" + appError(perr).Message + ")", nil
	}
	spec, err := h.resolve(ctx, props, maxDeleteDocuments)
	if err != nil {
		e := appError(err)
		switch {
		case e.Code == InvalidEvent:
			return "nothing to delete: the properties never resolved, so nothing was applied (" + e.Message + ")", nil
		case e.Code == NotFound && props.ManifestS3 != "":
			return "nothing deleted: " + e.Message + "; the objects it named, if any, were left in place", nil
		}
		return "", err
	}
	conn, diag, err := h.connectSpec(ctx, spec)
	if err != nil {
		if e := appError(err); e.Code == ClusterNotFound {
			return fmt.Sprintf("nothing to delete: cluster %s is gone from region %s", spec.req.Cluster, spec.req.Region), nil
		}
		return "", err
	}
	results, err := deleteOwned(ctx, conn.Kube, spec.req.Objects, kube.DeleteOptions{Namespace: spec.req.Namespace,
		Propagation: "Background", Owner: owner})
	if err != nil {
		return "", classify(ctx, err, diag)
	}
	logResults(ctx, h.log, "custom resource deleted", results)
	return "delete: " + countResults(results), nil
}

// deleteOwned deletes the objects of m that owner o.Owner holds. An object
// that cannot be resolved any more (its kind is gone from the cluster)
// cannot exist: it is absent, and the rest are deleted.
func deleteOwned(ctx context.Context, k *kube.Client, m kube.Manifest, o kube.DeleteOptions) ([]kube.ObjectResult, error) {
	var gone []kube.ObjectResult
	for len(m) > 0 {
		res, err := k.DeleteManifest(ctx, m, o)
		var me *kube.ManifestError
		if !errors.As(err, &me) {
			return append(res, gone...), err
		}
		i := slices.IndexFunc(m, func(mo kube.ManifestObject) bool { return mo.Index == me.Index && mo.Item == me.Item })
		if i < 0 {
			return nil, err
		}
		u := m[i].Object
		gone = append(gone, kube.ObjectResult{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(),
			Name: u.GetName(), Result: kube.Absent, Note: me.Problem})
		m = slices.Delete(slices.Clone(m), i, i+1)
	}
	return gone, nil
}

// countResults summarises results: "created 2, unchanged 1, kept 1", then
// why each kept object was kept.
func countResults(results []kube.ObjectResult) string {
	counts := map[kube.Result]int{}
	var order []kube.Result
	var kept []string
	for _, r := range results {
		if counts[r.Result] == 0 {
			order = append(order, r.Result)
		}
		counts[r.Result]++
		if r.Result == kube.Kept {
			kept = append(kept, fmt.Sprintf("%s %s/%s %s", r.Kind, r.Namespace, r.Name, r.Note))
		}
	}
	if len(order) == 0 {
		return "no objects"
	}
	parts := make([]string, 0, len(order))
	for _, r := range order {
		parts = append(parts, fmt.Sprintf("%s %d", r, counts[r]))
	}
	s := strings.Join(parts, ", ")
	if len(kept) > 0 {
		s += " (" + strings.Join(kept, "; ") + ")"
	}
	return s
}

func logResults(ctx context.Context, log *slog.Logger, msg string, results []kube.ObjectResult) {
	for _, r := range results {
		log.InfoContext(ctx, msg, "kind", r.Kind, "namespace", r.Namespace, "name", r.Name, "result", string(r.Result), "note", r.Note)
	}
}

// failedRollouts names the rollouts a wait saw fail, or says nothing.
func failedRollouts(results []kube.ObjectResult) string {
	var failed []string
	for _, r := range results {
		if r.Result != kube.Failed {
			continue
		}
		s := fmt.Sprintf("the rollout of %s %s/%s failed", r.Kind, r.Namespace, r.Name)
		if r.Readiness != nil && r.Readiness.Message != "" {
			s += " (" + r.Readiness.Message + ")"
		}
		failed = append(failed, s)
	}
	return strings.Join(failed, "; ")
}

// readOutputs reads every output, polling those still empty until
// waitUntil. An output still empty then is a Timeout naming it.
func (h *Handler) readOutputs(ctx context.Context, k *kube.Client, outs []output, waitUntil time.Time, diag diagnosis) (map[string]string, error) {
	if len(outs) == 0 {
		return nil, nil
	}
	data := make(map[string]string, len(outs))
	why := map[string]string{}
	start := time.Now()
	for {
		for _, o := range outs {
			if _, ok := data[o.Name]; ok {
				continue
			}
			v, note, err := readOutput(ctx, k, o)
			switch {
			case err != nil && errors.Is(err, context.DeadlineExceeded):
				// The deadline: report the outputs, not the request.
			case err != nil:
				var ref *kube.RefError
				if errors.As(err, &ref) {
					return nil, invalid("%s: %s", o.describe(), ref.Error())
				}
				return nil, classify(ctx, err, diag)
			case v != "":
				data[o.Name] = v
				continue
			}
			why[o.Name] = note
		}
		if len(data) == len(outs) {
			return data, nil
		}
		if !time.Now().Add(outputInterval).Before(waitUntil) || ctx.Err() != nil {
			var pending []string
			for _, o := range outs {
				if _, ok := data[o.Name]; !ok {
					pending = append(pending, o.describe()+": "+why[o.Name])
				}
			}
			return nil, &Error{Code: Timeout, Message: fmt.Sprintf(
				"still empty after %s: %s; the changes were made. Raise Wait (at most the function's Timeout), or check the JSONPath and the object",
				time.Since(start).Round(time.Second), strings.Join(pending, "; "))}
		}
		select {
		case <-ctx.Done():
		case <-time.After(outputInterval):
		}
	}
}

// readOutput reads one output's value; an empty value comes with a note
// saying why.
func readOutput(ctx context.Context, k *kube.Client, o output) (string, string, error) {
	u, err := k.Get(ctx, o.APIVersion, o.Kind, o.Namespace, o.ObjectName)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return "", "the object does not exist", nil
		}
		return "", "", err
	}
	var buf bytes.Buffer
	if err := o.parser.Execute(&buf, u.UnstructuredContent()); err != nil {
		return "", err.Error(), nil
	}
	if buf.Len() == 0 {
		return "", "the value is empty", nil
	}
	return buf.String(), "", nil
}

// ObjectGetter is the part of an S3 client that reads manifests.
type ObjectGetter interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// ReadManifestS3 reads a manifest (at most 16 MiB) with s3:GetObject.
// Errors are worded for the caller: a missing object is NotFound, a denied
// read Forbidden naming the permission.
func ReadManifestS3(ctx context.Context, get ObjectGetter, bucket, key string) (string, error) {
	uri := "s3://" + bucket + "/" + key
	out, err := get.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) {
			switch apiErr.ErrorCode() {
			case "NoSuchKey", "NoSuchBucket", "NotFound":
				return "", &Error{Code: NotFound, Err: err, Message: fmt.Sprintf("ManifestS3 %s: %s; upload the manifest there or fix the URI", uri, apiErr.ErrorCode())}
			case "AccessDenied", "Forbidden", "AllAccessDisabled":
				return "", &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
					"ManifestS3 %s: access denied; the function's execution role needs s3:GetObject on arn:aws:s3:::%s/%s (template.yml grants it for the ManifestBucket parameter)", uri, bucket, key)}
			}
		}
		// A transport failure names S3's endpoint (Unavailable).
		return "", fmt.Errorf("read ManifestS3 %s: %w", uri, auth.AsEndpointError(ctx, err))
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxManifestS3Bytes+1))
	if err != nil {
		return "", fmt.Errorf("read ManifestS3 %s: %w", uri, err)
	}
	if len(b) > maxManifestS3Bytes {
		return "", invalid("ManifestS3 %s is larger than %d bytes; split it over several resources", uri, maxManifestS3Bytes)
	}
	return string(b), nil
}

// s3Getter returns the S3 client manifests are read with (WithS3).
func (h *Handler) s3Getter() (ObjectGetter, error) {
	if h.s3 == nil {
		return nil, errors.New("this handler has no S3 client (handler.WithS3)")
	}
	return h.s3, nil
}
