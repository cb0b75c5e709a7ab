package kube

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeleteOptions are a delete's settings.
type DeleteOptions struct {
	// Namespace is the namespace of namespaced objects that name none.
	Namespace string
	// Propagation is Background (the default) or Foreground.
	Propagation metav1.DeletionPropagation
	// DryRun asks the API server to check and not persist.
	DryRun bool
	// Owner, when set, limits the delete to objects whose OwnerAnnotation
	// still names it; others are Kept.
	Owner string
}

// DeleteManifest deletes the objects of m, in the reverse of apply's order
// (Namespaces and CRDs last), and reports each as deleted or absent. A kind
// that only a CRD of the manifest defines, and that the cluster no longer
// knows, is absent without a request.
func (c *Client) DeleteManifest(ctx context.Context, m Manifest, o DeleteOptions) ([]ObjectResult, error) {
	ts, err := c.resolveManifest(ctx, m, o.Namespace)
	if err != nil {
		return nil, err
	}
	return c.deleteTargets(ctx, ts, o)
}

// Delete deletes the objects refs name.
func (c *Client) Delete(ctx context.Context, refs []Ref, o DeleteOptions) ([]ObjectResult, error) {
	ts, err := c.resolveRefs(ctx, refs, o.Namespace)
	if err != nil {
		return nil, err
	}
	return c.deleteTargets(ctx, ts, o)
}

func (c *Client) deleteTargets(ctx context.Context, ts []target, o DeleteOptions) ([]ObjectResult, error) {
	results := make([]ObjectResult, len(ts))
	first, rest := phases(ts)
	del := func(ctx context.Context, i int) error {
		var err error
		results[i], err = c.deleteObject(ctx, ts[i], o)
		return err
	}
	if err := each(ctx, rest, del); err != nil {
		return nil, err
	}
	// Namespaces and CRDs last, and the CRDs before the Namespaces.
	for _, namespaces := range []bool{false, true} {
		for _, i := range first {
			if (ts[i].mapping.GroupVersionKind.GroupKind() == namespaceGK) != namespaces {
				continue
			}
			if err := del(ctx, i); err != nil {
				return nil, err
			}
		}
	}
	return results, nil
}

func (c *Client) deleteObject(ctx context.Context, t target, o DeleteOptions) (ObjectResult, error) {
	if t.definedBy != "" {
		return t.result(Absent), nil // its CRD does not exist, so neither does it
	}
	opts := metav1.DeleteOptions{DryRun: dryRunOf(o.DryRun)}
	if o.Propagation != "" {
		opts.PropagationPolicy = &o.Propagation
	}
	if o.Owner != "" {
		owned, note, err := c.ownedBy(ctx, t, o.Owner, &opts)
		if err != nil || !owned {
			res := t.result(Kept)
			if note == "" {
				res.Result = Absent
			}
			res.Note = note
			return res, err
		}
	}
	err := do(ctx, t.op("delete"), func(ctx context.Context) error {
		return c.resource(t).Delete(ctx, t.name, opts)
	})
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return t.result(Absent), nil
	case err != nil:
		return t.result(""), err
	}
	if !o.DryRun {
		c.seen.forget(t.key())
	}
	return t.result(Deleted), nil
}

// ownedBy reads t and reports whether its OwnerAnnotation names owner; if
// so, opts is preconditioned on what was read, so that an object another
// resource took over meanwhile is not deleted. An absent object is not
// owned and has no note; a kept one says who holds it.
func (c *Client) ownedBy(ctx context.Context, t target, owner string, opts *metav1.DeleteOptions) (bool, string, error) {
	u, err := c.get(ctx, t)
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return false, "", nil
	case err != nil:
		return false, "", err
	}
	if holder := u.GetAnnotations()[OwnerAnnotation]; holder != owner {
		if holder == "" {
			return false, "not applied by this resource (no " + OwnerAnnotation + " annotation): left in place", nil
		}
		return false, "owned by " + holder + ": left in place", nil
	}
	uid, rv := u.GetUID(), u.GetResourceVersion()
	opts.Preconditions = &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}
	return true, "", nil
}
