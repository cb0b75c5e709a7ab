package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
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

// transientBackoff bounds how often a request is retried when the API server
// cannot be reached: about 1.4 s in all, always inside the caller's context.
var transientBackoff = wait.Backoff{Steps: 4, Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1}

// IsTransient reports whether err is worth retrying: the server could not be
// reached or was briefly overloaded. client-go already honours Retry-After
// on 429 and 5xx answers; this covers refused and reset connections.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) {
		return true
	}
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout())
}

// do runs one request: once more after a 401, for which the token transport
// has already dropped the cached token, and with bounded backoff while the
// server cannot be reached. Backoff sleeps end when ctx does.
func do(ctx context.Context, op OpError, fn func(context.Context) error) error {
	err := ctx.Err() // stays if ctx is done before the first attempt
	reminted := false
	_ = wait.ExponentialBackoffWithContext(ctx, transientBackoff, func(ctx context.Context) (bool, error) {
		err = fn(ctx)
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsUnauthorized(err) && !reminted:
			reminted = true
			return false, nil
		case IsTransient(err) && ctx.Err() == nil:
			return false, nil
		}
		return true, nil
	})
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	}
	op.Err = err
	return &op
}
