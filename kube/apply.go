package kube

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
)

// ApplyOptions are an apply's settings.
type ApplyOptions struct {
	// Namespace is given to namespaced objects that name none.
	Namespace string
	// Force takes ownership of fields another field manager owns.
	Force bool
	// DryRun asks the API server to check and not persist.
	DryRun bool
}

// crdSettle bounds how long a custom resource of a just-established CRD
// may still be answered 404 while the API server installs its handler.
const crdSettle = 5 * time.Second

// Apply server-side applies every object of m, as the field manager
// lambda-eks, and reports each as created, configured or unchanged, in
// manifest order. Every object is resolved against the cluster first: one
// that cannot be applied as written (an unknown kind, a namespace on a
// cluster-scoped kind) fails the call as a *ManifestError before anything is
// written. Namespaces and CRDs are applied first; custom resources of a CRD
// of the manifest wait until it is established. The rest are applied with
// bounded concurrency.
//
// Results come from the state before and after each apply: the first time a
// process meets an object it reads it (one GET); later applies send the
// resourceVersion it saw as a precondition, so a warm re-apply is one request
// per object. An unchanged resourceVersion means unchanged; a new uid means
// created (someone deleted it meanwhile); otherwise the content, without
// resourceVersion and managed fields, decides. The alternative - one apply
// and no read, telling created from the HTTP status - would need a REST
// client of our own instead of the dynamic client, and still could not tell
// configured from unchanged on a first sight.
//
// A dry run reads every object, as nothing it applies is remembered.
// Objects in a namespace, or of a CRD, that the same dry run would create
// cannot be checked by the server (the namespace or kind does not exist);
// they are reported created without a request.
//
// The first error stops the call; objects applied before it stay applied.
func (c *Client) Apply(ctx context.Context, m Manifest, o ApplyOptions) ([]ObjectResult, error) {
	ts, err := c.resolveManifest(ctx, m, o.Namespace)
	if err != nil {
		return nil, err
	}
	results := make([]ObjectResult, len(ts))
	first, rest := phases(ts)
	err = each(ctx, first, func(ctx context.Context, i int) error {
		var err error
		results[i], err = c.applyObject(ctx, ts[i], o)
		return err
	})
	if err != nil {
		return nil, err
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
		for _, crd := range c.crdsToSettle(ts) {
			if err := c.waitEstablished(ctx, crd); err != nil {
				return nil, err
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
		return nil, err
	}
	return results, nil
}

// crdsToSettle names the manifest's CRDs that its other objects need.
func (c *Client) crdsToSettle(ts []target) []string {
	need := map[string]bool{}
	for _, t := range ts {
		if t.definedBy != "" {
			need[t.definedBy] = true
		}
	}
	names := make([]string, 0, len(need))
	for n := range need {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// waitEstablished polls a CRD until its Established condition is true.
func (c *Client) waitEstablished(ctx context.Context, name string) error {
	crds := c.dyn.Resource(crdGVR)
	op := OpError{Verb: "get", Resource: crdGVR.GroupResource().String(), Name: name}
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var u *unstructured.Unstructured
		err := do(ctx, op, func(ctx context.Context) error {
			var err error
			u, err = crds.Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if apierrors.IsNotFound(err) {
			return false, nil // not visible yet
		}
		if err != nil {
			return false, err
		}
		return conditionStatus(u, "Established") == "True", nil
	})
	if err != nil {
		return fmt.Errorf("wait for CustomResourceDefinition %s to be established: %w", name, err)
	}
	return nil
}

// applyObject applies one object and says what it did.
func (c *Client) applyObject(ctx context.Context, t target, o ApplyOptions) (ObjectResult, error) {
	key := t.key()
	ri := c.resource(t)
	res := t.result("")
	settleUntil := c.now().Add(crdSettle)

	for attempt := 0; attempt < 3; attempt++ {
		before, known := c.lastSeen(key)
		// A dry run compares with the object as it is now, not as this
		// process last saw it: nothing it writes will be remembered.
		if !known || o.DryRun {
			var err error
			if before, err = c.read(ctx, t); err != nil {
				return res, err
			}
		}
		obj := t.obj.DeepCopy()
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: o.Force}
		if o.DryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		var out *unstructured.Unstructured
		err := do(ctx, t.op("patch"), func(ctx context.Context) error {
			var err error
			out, err = ri.Apply(ctx, t.name, obj, opts)
			// A CRD just established may take a moment to be served.
			for t.definedBy != "" && apierrors.IsNotFound(err) && c.now().Before(settleUntil) {
				select {
				case <-ctx.Done():
					return err
				case <-time.After(100 * time.Millisecond):
				}
				out, err = ri.Apply(ctx, t.name, obj, opts)
			}
			return err
		})
		if IsFieldConflict(err) && !opts.Force && onlyOwnConflicts(err) {
			// The other manager is lambda-eks itself, through the scale
			// subresource (a scale, then a re-apply of the manifest): its
			// own fields are not another team's to protect.
			o.Force = true
			continue
		}
		if err != nil {
			c.forget(key)
			return res, err
		}
		after, err := seenOf(out, t.obj.Object)
		if err != nil {
			return res, err
		}
		res.Result = resultOf(before, after, o.DryRun)
		if !o.DryRun {
			c.remember(key, after)
		}
		return res, nil
	}
	op := t.op("patch")
	op.Err = apierrors.NewConflict(t.mapping.Resource.GroupResource(), t.name, errors.New("changed by another writer on every attempt; try again"))
	return res, &op
}

// read gets an object's current state; absent is not an error.
func (c *Client) read(ctx context.Context, t target) (seenObject, error) {
	var s seenObject
	err := do(ctx, t.op("get"), func(ctx context.Context) error {
		cur, err := c.resource(t).Get(ctx, t.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			s = seenObject{}
			return nil
		case err != nil:
			return err
		}
		s, err = seenOf(cur, t.obj.Object)
		return err
	})
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
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	n := 0
	for _, cause := range status.Status().Details.Causes {
		if cause.Type != metav1.CauseTypeFieldManagerConflict {
			continue
		}
		n++
		// conflict with "lambda-eks" with subresource "scale" using apps/v1
		if !strings.HasPrefix(cause.Message, `conflict with "`+FieldManager+`"`) {
			return false
		}
	}
	return n > 0
}

// FieldConflicts describes a field-manager conflict: each field and the
// manager that owns it, as the API server reported them.
func FieldConflicts(err error) []string {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	var out []string
	for _, cause := range status.Status().Details.Causes {
		if cause.Type != metav1.CauseTypeFieldManagerConflict {
			continue
		}
		// The message reads: conflict with "manager" using v1
		out = append(out, fmt.Sprintf("%s (%s)", cause.Field, strings.TrimPrefix(cause.Message, "conflict with ")))
	}
	return out
}
