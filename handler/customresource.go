package handler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
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
// them. A replacing Update that fails is answered with the old ID, which
// CloudFormation keeps, so no Delete will name the new one: it deletes, best
// effort, the objects it created under the new ID (an object it took over
// stays, annotated with the new ID). An object moved to another logical
// resource is taken over by that resource's Create or Update, and the old
// resource's prune or delete keeps it. (CloudFormation deletes removed
// resources after all creates and updates; between two resources that both
// stay, make the giving one DependsOn the receiving one, so the object is
// taken over before the giver prunes.)

// RolloutFailed is a custom resource whose Wait saw a rollout fail.
const RolloutFailed invoke.Code = "RolloutFailed"

const (
	// defaultOutputWait bounds the wait for outputs when Wait is not set.
	defaultOutputWait = 5 * time.Minute
	// maxManifestS3Bytes bounds a manifest read from S3: it is decoded in
	// the function's memory.
	maxManifestS3Bytes = 16 << 20
	// maxDeleteDocuments decodes a manifest for delete and prune whatever
	// MAX_DOCUMENTS is now: it may have been larger when it was applied.
	maxDeleteDocuments = 10000
)

// manifestResource is Custom::KubernetesManifest for the custom-resource
// engine.
type manifestResource struct{ h *Handler }

// targetOf is the cluster p names, with the environment's defaults.
func (h *Handler) targetOf(p Properties) cfnTarget {
	return cfnTarget{Cluster: invoke.Or(p.Cluster, h.cfg.Cluster), Region: invoke.Or(p.Region, h.cfg.Region), RoleARN: invoke.Or(p.RoleArn, h.cfg.RoleARN)}
}

// PhysicalID is the ID of the target the properties name; on Update, the
// request's own while the target stays (a change of target is a
// replacement).
func (r manifestResource) PhysicalID(req cfnresource.Request) (string, error) {
	h := r.h
	props, err := decodeProperties(req.ResourceProperties, "ResourceProperties")
	if err != nil {
		return "", err
	}
	if req.RequestType == cfn.RequestUpdate {
		if old, oerr := decodeProperties(req.OldResourceProperties, "OldResourceProperties"); oerr == nil && h.targetOf(old) == h.targetOf(props) {
			return req.PhysicalResourceID, nil
		}
	}
	return physicalID(req.StackID, req.LogicalResourceID, h.targetOf(props)), nil
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
		return cfnSpec{}, invoke.Invalid("set exactly one of the properties Manifest and ManifestS3")
	}
	spec := cfnSpec{prune: p.Prune == nil || bool(*p.Prune), wait: time.Duration(p.Wait), manifest: "Manifest"}
	if spec.wait > invoke.MaxWait {
		return cfnSpec{}, invoke.Invalid("Wait %s is longer than Lambda's 15-minute limit", spec.wait)
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
			// S3's throttling and 5xx are Unavailable (to retry), as in an
			// event's manifestS3; what ReadManifestS3 worded stays as it is.
			t := h.targetOf(p)
			return cfnSpec{}, invoke.Classify(ctx, err, invoke.Diagnosis{Cluster: t.Cluster, RoleARN: t.RoleARN, Access: access})
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
		// A document of the manifest in S3 is named with where it came from.
		var me *kube.ManifestError
		if e := invoke.AsError(err); spec.manifest != "Manifest" && errors.As(err, &me) {
			return cfnSpec{}, &invoke.Error{Code: e.Code, Err: err, Message: spec.manifest + ": " + e.Message}
		}
		return cfnSpec{}, err
	}
	spec.req = req
	if spec.outputs, err = checkOutputs(p.Outputs, req.Namespace); err != nil {
		return cfnSpec{}, err
	}
	return spec, nil
}

// connectSpec opens (or reuses) the connection to spec's cluster; errors
// come back classified.
func (h *Handler) connectSpec(ctx context.Context, spec cfnSpec) (*Conn, invoke.Diagnosis, error) {
	diag := diagnose(spec.req, nil)
	conn, err := h.conns.Get(ctx, spec.req.target(h.cfg.SessionName))
	if err != nil {
		return nil, diag, invoke.Classify(ctx, err, diag)
	}
	diag.CallerARN = conn.CallerARN
	return conn, diag, nil
}

// Apply serves Create and Update.
func (r manifestResource) Apply(ctx context.Context, req cfnresource.Request, p cfnresource.Plan) (string, map[string]string, error) {
	props, err := decodeProperties(req.ResourceProperties, "ResourceProperties")
	if err != nil {
		return "", nil, err
	}
	spec, err := r.h.resolve(ctx, props, 0)
	if err != nil {
		return "", nil, err
	}
	return r.h.cfnApply(ctx, req, spec, p)
}

// Delete serves Delete of the objects p.Owner owns.
func (r manifestResource) Delete(ctx context.Context, req cfnresource.Request, p cfnresource.Plan) (string, error) {
	props, perr := decodeProperties(req.ResourceProperties, "ResourceProperties")
	return r.h.deleteObjects(ctx, props, perr, p.Owner)
}

// cfnApply serves Create and Update: apply, prune what the old manifest
// named and the new one does not, wait, read the outputs.
func (h *Handler) cfnApply(ctx context.Context, req cfnresource.Request, spec cfnSpec, plan cfnresource.Plan) (string, map[string]string, error) {
	// The old manifest, for the prune; read before anything is written. A
	// replacement prunes nothing: the old resource's Delete does, in its
	// own cluster, of what it still owns.
	var old *cfnSpec
	var notes []string
	if req.RequestType == cfn.RequestUpdate && spec.prune && !plan.Replacement {
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
			notes = append(notes, "nothing pruned: the old properties do not resolve ("+invoke.AsError(err).Message+")")
		}
	}

	conn, diag, err := h.connectSpec(ctx, spec)
	if err != nil {
		return "", nil, err
	}
	start := time.Now()
	applied, err := conn.Client.Apply(ctx, spec.req.Objects, kube.ApplyOptions{Namespace: spec.req.Namespace, Force: spec.req.Force, Owner: plan.ID})
	// A replacing Update that fails is answered with the old ID, which
	// CloudFormation keeps: no Delete will ever name the new one, so what
	// was written under it is undone here. results are the apply's, as far
	// as it got.
	fail := func(results []kube.ObjectResult, err error) (string, map[string]string, error) {
		e := invoke.Classify(ctx, err, diag)
		if plan.Replacement {
			e = h.undoReplacement(ctx, conn.Client, spec, plan.ID, results, e, diag)
		}
		return "", nil, e
	}
	if err != nil {
		var (
			partial *kube.ApplyError
			refused *kube.ManifestError
		)
		switch {
		case errors.As(err, &partial):
			return fail(partial.Written, err)
		case errors.As(err, &refused):
			// Refused before any write (not resolved, or by the dry run).
			return "", nil, invoke.Classify(ctx, err, diag)
		}
		// Writes in flight when the apply failed may have been made, with
		// no result.
		return fail(nil, err)
	}
	h.log.InfoContext(ctx, "custom resource applied", "objects", len(applied), "duration_ms", time.Since(start).Milliseconds())
	summary := "apply: " + countResults(applied)

	if old != nil {
		if gone := pruneSet(old.req.Objects, old.req.Namespace, applied); len(gone) > 0 {
			pruned, err := deleteOwned(ctx, conn.Client, gone, kube.DeleteOptions{Namespace: old.req.Namespace,
				Propagation: "Background", Owner: plan.ID})
			if err != nil {
				return fail(applied, err)
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
		waited, err := conn.Client.Wait(ctx, applied, max(time.Until(waitUntil), 0), h.log)
		if err != nil {
			return fail(applied, err)
		}
		if failed := failedRollouts(waited); failed != "" {
			return fail(applied, &invoke.Error{Code: RolloutFailed, Message: "the changes were made, but " + failed +
				"; look at the pods' events, fix the manifest and update the stack"})
		}
	}
	data, err := h.readOutputs(ctx, conn.Client, spec.outputs, waitUntil, diag)
	if err != nil {
		return fail(applied, err)
	}
	return strings.Join(append([]string{summary}, notes...), "; "), data, nil
}

// undoReplacement deletes, best effort, what a failed replacing Update may
// have written under its new ID owner, and returns failure, the answer,
// with a note of what was deleted or left. That is the manifest's objects
// but those results (the apply's, as far as it got) found already there:
// they were taken over (in the same cluster, from the old resource
// CloudFormation keeps, or from another one) and are not this Update's to
// remove. An object whose write the failure cut short is deleted if it
// carries the new ID: no resource CloudFormation knows holds that ID, so
// only this Update wrote it. The delete is the Delete's, owner-scoped.
func (h *Handler) undoReplacement(ctx context.Context, k *kube.Client, spec cfnSpec, owner string, results []kube.ObjectResult,
	failure *invoke.Error, diag invoke.Diagnosis) *invoke.Error {
	var existed []kube.ObjectResult
	for _, r := range results {
		if r.Result != kube.Created {
			existed = append(existed, r)
		}
	}
	_, written := splitManifest(spec.req.Objects, spec.req.Namespace, existed)
	if len(written) == 0 {
		return failure
	}
	res, err := deleteOwned(ctx, k, written, kube.DeleteOptions{Namespace: spec.req.Namespace, Propagation: "Background", Owner: owner})
	if err != nil {
		names := make([]string, len(written))
		for i, o := range written {
			names[i] = o.Object.GetKind() + " " + invoke.Qualified(o.Object.GetNamespace(), o.Object.GetName())
		}
		h.log.WarnContext(ctx, "failed replacement not undone", "owner", owner, "objects", strings.Join(names, ", "),
			"error", invoke.Redact(err.Error()))
		return &invoke.Error{Code: failure.Code, Err: failure, Message: fmt.Sprintf(
			"%s; the objects this replacing Update may have created under %s could not all be deleted (%s): delete by hand those of %s still annotated %s=%s",
			failure.Message, owner, invoke.Classify(ctx, err, diag).Message, strings.Join(names, ", "), kube.OwnerAnnotation, owner)}
	}
	logResults(ctx, h.log, "failed replacement undone", res)
	var deleted []string
	for _, r := range res {
		if r.Result == kube.Deleted {
			deleted = append(deleted, r.Kind+" "+invoke.Qualified(r.Namespace, r.Name))
		}
	}
	if len(deleted) == 0 {
		return failure
	}
	return &invoke.Error{Code: failure.Code, Err: failure, Message: failure.Message + "; the objects this replacing Update created under " +
		owner + " were deleted: " + strings.Join(deleted, ", ")}
}

// deleteObjects deletes the objects of props's manifest that owner holds.
func (h *Handler) deleteObjects(ctx context.Context, props Properties, perr error, owner string) (string, error) {
	if perr != nil {
		return "nothing to delete: the properties never resolved, so nothing was applied (" + invoke.AsError(perr).Message + ")", nil
	}
	spec, err := h.resolve(ctx, props, maxDeleteDocuments)
	if err != nil {
		e := invoke.AsError(err)
		switch {
		case e.Code == invoke.InvalidEvent:
			return "nothing to delete: the properties never resolved, so nothing was applied (" + e.Message + ")", nil
		case e.Code == invoke.NotFound && props.ManifestS3 != "":
			return "nothing deleted: " + e.Message + "; the objects it named, if any, were left in place", nil
		}
		return "", err
	}
	conn, diag, err := h.connectSpec(ctx, spec)
	if err != nil {
		if e := invoke.AsError(err); e.Code == invoke.ClusterNotFound {
			return fmt.Sprintf("nothing to delete: cluster %s is gone from region %s", spec.req.Cluster, spec.req.Region), nil
		}
		return "", err
	}
	results, err := deleteOwned(ctx, conn.Client, spec.req.Objects, kube.DeleteOptions{Namespace: spec.req.Namespace,
		Propagation: "Background", Owner: owner})
	if err != nil {
		return "", invoke.Classify(ctx, err, diag)
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
func (h *Handler) readOutputs(ctx context.Context, k *kube.Client, outs []output, waitUntil time.Time, diag invoke.Diagnosis) (map[string]string, error) {
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
					return nil, invoke.Invalid("%s: %s", o.describe(), ref.Error())
				}
				return nil, invoke.Classify(ctx, err, diag)
			case v != "":
				data[o.Name] = v
				continue
			}
			why[o.Name] = note
		}
		if len(data) == len(outs) {
			return data, nil
		}
		if !time.Now().Add(h.outputInterval).Before(waitUntil) || ctx.Err() != nil {
			var pending []string
			for _, o := range outs {
				if _, ok := data[o.Name]; !ok {
					pending = append(pending, o.describe()+": "+why[o.Name])
				}
			}
			return nil, &invoke.Error{Code: invoke.Timeout, Message: fmt.Sprintf(
				"still empty after %s: %s; the changes were made. Raise Wait (at most the function's Timeout), or check the JSONPath and the object",
				time.Since(start).Round(time.Second), strings.Join(pending, "; "))}
		}
		select {
		case <-ctx.Done():
		case <-time.After(h.outputInterval):
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
