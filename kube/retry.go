package kube

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// OpError records which Kubernetes request failed, so that a 403 can name
// the verb, resource and namespace that RBAC must grant.
type OpError struct {
	Verb      string // RBAC verb: get, patch, delete, ...
	Resource  string // plural resource with group, e.g. deployments.apps
	Namespace string
	Name      string
	Err       error
}

func (e *OpError) Error() string {
	obj := e.Resource
	if e.Name != "" {
		obj += " " + e.Name
	}
	if e.Namespace != "" {
		obj += " in namespace " + e.Namespace
	}
	return fmt.Sprintf("%s %s: %s", e.Verb, obj, e.Err.Error())
}

func (e *OpError) Unwrap() error { return e.Err }

// do runs one request, and once more after a 401: the token transport has
// dropped the token the server refused (one cached from before the
// request; a token minted for this very request is kept), so the second
// attempt carries a fresh one. That is the only retry here: client-go retries 429 and 5xx
// answers after their Retry-After, and every attempt ends with ctx.
func do(ctx context.Context, op OpError, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		op.Err = err
		return &op
	}
	err := fn(ctx)
	if apierrors.IsUnauthorized(err) && ctx.Err() == nil {
		err = fn(ctx)
	}
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	}
	op.Err = err
	return &op
}
