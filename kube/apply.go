package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// OwnerAnnotation names, on an object applied for an owner (a CloudFormation
// resource), that owner: delete and prune remove only objects whose
// annotation still names the resource being deleted or updated.
const OwnerAnnotation = "lambda-eks.io/owner"

// ApplyOptions are an apply's settings.
type ApplyOptions struct {
	// Namespace is given to namespaced objects that name none.
	Namespace string
	// Force takes ownership of fields another field manager owns.
	Force bool
	// DryRun asks the API server to check and not persist.
	DryRun bool
	// Owner, when set, is written to every object as OwnerAnnotation.
	Owner string
}

// ApplyError is an apply that failed after writing some objects: they stay
// applied, and Written lists them.
type ApplyError struct {
	Written []ObjectResult
	Err     error
}

func (e *ApplyError) Error() string {
	names := make([]string, len(e.Written))
	for i, w := range e.Written {
		names[i] = w.Kind + " " + qualified(w.Namespace, w.Name) + " " + string(w.Result)
	}
	return fmt.Sprintf("%s (written before the failure: %s)", e.Err.Error(), strings.Join(names, ", "))
}

func (e *ApplyError) Unwrap() error { return e.Err }

func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

const (
	// crdSettle bounds how long a custom resource of a just-established CRD
	// may still be answered 404 while the API server installs its handler.
	crdSettle = 5 * time.Second
	// crdPollInterval spaces the reads of a CRD being established, and the
	// applies of its custom resources while they are answered 404.
	crdPollInterval = 100 * time.Millisecond
)

// Apply server-side applies every object of m, as the field manager
// lambda-eks, and reports each as created, configured or unchanged, in
// manifest order.
//
// Nothing is written unless every object can be: each is resolved against
// the cluster's kinds (a *ManifestError if it cannot be), and a manifest of
// several objects is first applied as a server-side dry run, which checks
// what only the server knows (schema, names, admission policies); a document
// it refuses is a *ManifestError quoting the server. Objects this process
// applied before with the same content skip the dry run, so a warm re-apply
// of an unchanged manifest costs one request per object; a changed object
// costs two. Namespaces and CRDs are applied first; custom resources of a CRD
// of the manifest wait until it is established. The rest are applied with
// bounded concurrency. A failure after some writes is an *ApplyError naming
// them.
//
// Results: see resultOf. The first time a process meets an object it reads
// it (one GET); later applies are one request, except within seconds of
// lambda-eks's last change to the object, where the apply is preconditioned
// on the resourceVersion seen (and, if another writer came between, read
// again).
//
// A user's dry run reads every object, as nothing it applies is remembered.
// Objects in a namespace, or of a CRD, that the same dry run would create
// cannot be checked by the server; they are reported created without a
// request.
func (c *Client) Apply(ctx context.Context, m Manifest, o ApplyOptions) ([]ObjectResult, error) {
	ts, err := c.resolveManifest(ctx, m, o.Namespace)
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if o.Owner == "" {
			break
		}
		if err := unstructured.SetNestedField(t.obj.Object, o.Owner, "metadata", "annotations", OwnerAnnotation); err != nil {
			return nil, t.manifestError("metadata.annotations: %w", err)
		}
	}
	if !o.DryRun && len(ts) > 1 {
		if err := c.check(ctx, ts, o.Force); err != nil {
			return nil, err
		}
	}
	return c.applyTargets(ctx, ts, o)
}

func (c *Client) applyTargets(ctx context.Context, ts []target, o ApplyOptions) ([]ObjectResult, error) {
	results := make([]ObjectResult, len(ts))
	fail := func(err error) error {
		var written []ObjectResult
		for _, r := range results {
			if r.Result != "" && !o.DryRun {
				written = append(written, r)
			}
		}
		if len(written) == 0 {
			return err
		}
		return &ApplyError{Written: written, Err: err}
	}
	first, rest := phases(ts)
	err := each(ctx, first, func(ctx context.Context, i int) error {
		var err error
		results[i], err = c.applyObject(ctx, ts[i], o)
		return err
	})
	if err != nil {
		return nil, fail(err)
	}

	// In a dry run nothing of the first phase exists: objects in a new
	// namespace, or of a new CRD, cannot be checked by the server.
	created := map[string]bool{}
	for _, i := range first {
		if results[i].Result == Created {
			created[ts[i].mapping.GroupVersionKind.Kind+"/"+ts[i].name] = true
		}
	}
	if !o.DryRun {
		for _, crd := range crdsToSettle(ts) {
			if err := c.waitEstablished(ctx, crd); err != nil {
				return nil, fail(err)
			}
		}
	}
	err = each(ctx, rest, func(ctx context.Context, i int) error {
		t := ts[i]
		if o.DryRun && (created["Namespace/"+t.namespace] || t.definedBy != "") {
			results[i] = t.result(Created)
			return nil
		}
		var err error
		results[i], err = c.applyObject(ctx, t, o)
		return err
	})
	if err != nil {
		return nil, fail(err)
	}
	return results, nil
}

// check applies ts as a server-side dry run, skipping what the server
// cannot check yet (objects of a CRD of the manifest, objects in a
// namespace the manifest creates) and objects this process applied with
// the same content. A refused document is a *ManifestError.
func (c *Client) check(ctx context.Context, ts []target, force bool) error {
	newNamespaces := map[string]bool{}
	for _, t := range ts {
		if t.mapping.GroupVersionKind.GroupKind() == namespaceGK {
			newNamespaces[t.name] = true
		}
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: force, DryRun: []string{metav1.DryRunAll}}
	return each(ctx, indexes(len(ts)), func(ctx context.Context, i int) error {
		t := ts[i]
		if t.definedBy != "" {
			return nil
		}
		if s, ok := c.seen.get(t.key()); ok && s.intent != "" && s.intent == t.intent() {
			return nil
		}
		body, err := applyBody(t.obj, "")
		if err != nil {
			return t.manifestError("encode: %w", err)
		}
		apply := func(opts metav1.ApplyOptions) error {
			return do(ctx, t.op("patch"), func(ctx context.Context) error {
				_, err := c.resource(t).Patch(ctx, t.name, types.ApplyPatchType, body, opts.ToPatchOptions())
				return err
			})
		}
		err = apply(opts)
		if IsFieldConflict(err) && onlyOwnConflicts(err) {
			// As the apply will: lambda-eks's own fields (a scale) are its.
			forced := opts
			forced.Force = true
			err = apply(forced)
		}
		switch {
		case err == nil:
			return nil
		case apierrors.IsNotFound(err) && newNamespaces[t.namespace]:
			return nil // its namespace comes with the manifest
		case refusesDocument(err):
			return t.manifestError("the API server refused it (server-side dry run): %s", apiMessage(err))
		}
		return err
	})
}

// refusesDocument reports whether the API server refused what was sent, as
// opposed to who sent it or how it travelled: invalid, malformed, too large,
// in a namespace that does not exist, or a value that does not fit the
// schema (which the API server answers with 500 "failed to create typed
// patch object").
func refusesDocument(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err) ||
		apierrors.IsNotFound(err) || IsSchemaError(err)
}

// IsSchemaError reports whether err is the API server's answer to an object
// that does not fit its kind's schema. That answer is a 500 whose only mark
// is its message ("failed to create typed patch object (...)", worded with
// fmt.Errorf in apimachinery's managedfields), so the message decides;
// callers use this rather than match the text again.
func IsSchemaError(err error) bool {
	return apierrors.IsInternalError(err) && strings.Contains(apiMessage(err), "failed to create typed")
}

func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Message
	}
	return err.Error()
}

// crdsToSettle names the manifest's CRDs that its other objects need.
func crdsToSettle(ts []target) []string {
	need := map[string]bool{}
	for _, t := range ts {
		if t.definedBy != "" {
			need[t.definedBy] = true
		}
	}
	return slices.Sorted(maps.Keys(need))
}

// waitEstablished polls a CRD until its Established condition is true.
func (c *Client) waitEstablished(ctx context.Context, name string) error {
	crd := target{mapping: &meta.RESTMapping{Resource: crdGVR, GroupVersionKind: crdGVR.GroupVersion().WithKind(crdGK.Kind), Scope: meta.RESTScopeRoot},
		name: name}
	for {
		u, err := c.get(ctx, crd)
		switch {
		case apierrors.IsNotFound(err): // not visible yet
		case err != nil:
			return fmt.Errorf("wait for CustomResourceDefinition %s to be established: %w", name, err)
		case conditionStatus(u, "Established") == "True":
			return nil
		}
		if err := c.sleep(ctx, crdPollInterval); err != nil {
			return fmt.Errorf("wait for CustomResourceDefinition %s to be established: %w", name, err)
		}
	}
}

// applyObject applies one object and says what it did.
func (c *Client) applyObject(ctx context.Context, t target, o ApplyOptions) (ObjectResult, error) {
	key := t.key()
	ri := c.resource(t)
	res := t.result("")
	settleUntil := c.now().Add(crdSettle)
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: o.Force, DryRun: dryRunOf(o.DryRun)}

	before, known := c.seen.get(key)
	// A first sight, and a dry run (nothing it writes is remembered), read
	// the object as it is now.
	if !known || o.DryRun {
		var err error
		if before, err = c.read(ctx, t); err != nil {
			return res, err
		}
	}
	// Where lambda-eks's managed-fields time cannot tell (an object just
	// read, whose last change by lambda-eks is unknown, or within seconds of
	// that change), the apply is preconditioned on the resourceVersion seen,
	// and the content decides.
	exclusive := !o.DryRun && before.exists && (!known || before.ambiguous(c.now()))

	conflicts := 0
	for attempt := 0; attempt < len(conflictBackoff)+3; attempt++ {
		precondition := ""
		if exclusive {
			precondition = before.resourceVersion
		}
		body, err := applyBody(t.obj, precondition)
		if err != nil {
			return res, t.manifestError("encode: %w", err)
		}
		var out *unstructured.Unstructured
		err = do(ctx, t.op("patch"), func(ctx context.Context) error {
			var err error
			out, err = ri.Patch(ctx, t.name, types.ApplyPatchType, body, opts.ToPatchOptions())
			// A CRD just established may take a moment to be served.
			for t.definedBy != "" && apierrors.IsNotFound(err) && c.now().Before(settleUntil) {
				if c.sleep(ctx, crdPollInterval) != nil {
					return err
				}
				out, err = ri.Patch(ctx, t.name, types.ApplyPatchType, body, opts.ToPatchOptions())
			}
			return err
		})
		switch {
		case exclusive && apierrors.IsConflict(err) && !IsFieldConflict(err):
			// Another writer came between (a controller writing status):
			// read what it left and try again after a moment; an object
			// that stays that busy is applied without a precondition, and
			// the time and generation decide.
			if conflicts < len(conflictBackoff) {
				if err := c.sleep(ctx, conflictBackoff[conflicts]); err != nil {
					return res, err
				}
			}
			conflicts++
			if before, err = c.read(ctx, t); err != nil {
				return res, err
			}
			exclusive = before.exists && conflicts <= len(conflictBackoff)
			continue
		case IsFieldConflict(err) && !opts.Force && onlyOwnConflicts(err):
			// The other manager is lambda-eks itself, through the scale
			// subresource (a scale, then a re-apply of the manifest): its
			// own fields are not another team's to protect.
			opts.Force = true
			continue
		case err != nil:
			c.seen.forget(key)
			return res, err
		}
		after, err := stateOf(out)
		if err != nil {
			return res, err
		}
		res.Result = resultOf(before, after, o.DryRun, exclusive)
		if !o.DryRun {
			after.intent, after.fresh = t.intent(), false
			c.seen.put(key, after)
		}
		return res, nil
	}
	op := t.op("patch")
	op.Err = apierrors.NewConflict(t.mapping.Resource.GroupResource(), t.name, errors.New("changed by another writer on every attempt; try again"))
	return res, &op
}

// conflictBackoff spaces the preconditioned applies that another writer
// beat: a controller's burst of status writes after a change is over in
// well under a second.
var conflictBackoff = []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond}

// read gets an object's current state; absent is not an error.
func (c *Client) read(ctx context.Context, t target) (state, error) {
	cur, err := c.get(ctx, t)
	switch {
	case apierrors.IsNotFound(err):
		return state{}, nil
	case err != nil:
		return state{}, err
	}
	s, err := stateOf(cur)
	s.fresh = true
	return s, err
}

// IsFieldConflict reports whether err is a server-side apply conflict with
// another field manager (not a stale resourceVersion).
func IsFieldConflict(err error) bool {
	return apierrors.IsConflict(err) && apierrors.HasStatusCause(err, metav1.CauseTypeFieldManagerConflict)
}

// onlyOwnConflicts reports whether every field conflict of err is with
// lambda-eks itself (under another operation or subresource).
func onlyOwnConflicts(err error) bool {
	causes := conflictCauses(err)
	for _, cause := range causes {
		// conflict with "lambda-eks" with subresource "scale" using apps/v1
		// (a StatusCause names the manager in its message only)
		if !strings.HasPrefix(cause.Message, `conflict with "`+FieldManager+`"`) {
			return false
		}
	}
	return len(causes) > 0
}

// FieldConflicts describes a field-manager conflict: each field and the
// manager that owns it, as the API server reported them.
func FieldConflicts(err error) []string {
	var out []string
	for _, cause := range conflictCauses(err) {
		// The message reads: conflict with "manager" using v1
		out = append(out, fmt.Sprintf("%s (%s)", cause.Field, strings.TrimPrefix(cause.Message, "conflict with ")))
	}
	return out
}

func conflictCauses(err error) []metav1.StatusCause {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	var out []metav1.StatusCause
	for _, cause := range status.Status().Details.Causes {
		if cause.Type == metav1.CauseTypeFieldManagerConflict {
			out = append(out, cause)
		}
	}
	return out
}

// applyBody is obj as a server-side apply's body, with resourceVersion as
// its precondition when one is given (obj is not changed, nor copied:
// only its top level and metadata are). It is encoded once for all of an
// object's attempts (dynamic's Apply encodes at each) and without
// encoding/json's HTML escaping, which makes each '<', '>' and '&' six bytes.
func applyBody(obj *unstructured.Unstructured, resourceVersion string) ([]byte, error) {
	v := obj.Object
	if resourceVersion != "" {
		md, _ := v["metadata"].(map[string]any)
		md = maps.Clone(md)
		if md == nil {
			md = map[string]any{}
		}
		md["resourceVersion"] = resourceVersion
		v = maps.Clone(v)
		v["metadata"] = md
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
