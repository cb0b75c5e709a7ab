package handler

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/smithy-go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Code classifies an error for the caller. It becomes Lambda's errorType.
type Code string

// Error codes. Each tells the caller what happened; the message says what to do.
const (
	InvalidEvent    Code = "InvalidEvent"
	ClusterNotFound Code = "ClusterNotFound"
	Unauthorized    Code = "Unauthorized"
	Forbidden       Code = "Forbidden"
	NotFound        Code = "NotFound"
	Conflict        Code = "Conflict"
	Timeout         Code = "Timeout"
	Unavailable     Code = "Unavailable"
	Internal        Code = "Internal"
)

// Error is the one error type the handler returns.
type Error struct {
	Code    Code
	Message string
	Err     error
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

func (e *Error) Unwrap() error { return e.Err }

func invalid(format string, args ...any) *Error {
	return &Error{Code: InvalidEvent, Message: fmt.Sprintf(format, args...)}
}

// appError is err as the one error type; anything unclassified is Internal.
func appError(err error) *Error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: Internal, Message: redact(err.Error()), Err: err}
	}
	return e
}

// lambdaError is e as Lambda reports it: errorType is the code, so callers
// and alarms can match on it.
func (e *Error) lambdaError() error {
	return messages.InvokeResponse_Error{Type: string(e.Code), Message: e.Message}
}

// secretRE matches what must never leave the process: a bearer token and the
// signature of a presigned URL.
var secretRE = regexp.MustCompile(`k8s-aws-v1\.[A-Za-z0-9_-]+|(?i)(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=[^&\s"]*`)

func redact(s string) string {
	return secretRE.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "k8s-aws-v1.") {
			return "k8s-aws-v1.REDACTED"
		}
		name, _, _ := strings.Cut(m, "=")
		return name + "=REDACTED"
	})
}

// diagnosis is what classify needs to word an error for one request.
type diagnosis struct {
	req Request
	// callerARN returns the canonical ARN the cluster sees (for a 401).
	callerARN func(context.Context) (string, error)
}

// classify maps an error from AWS or Kubernetes to an *Error whose message
// says what to do.
func classify(ctx context.Context, err error, d diagnosis) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := redact(err.Error())
	var (
		notFound  *auth.ClusterNotFoundError
		notActive *auth.ClusterNotActiveError
		op        *kube.OpError
		apiErr    smithy.APIError
		manifest  *kube.ManifestError
		ref       *kube.RefError
		waited    *kube.WaitTimeoutError
	)
	switch {
	case errors.As(err, &manifest):
		return &Error{Code: InvalidEvent, Err: err, Message: manifest.Error() + "; nothing was changed"}
	case errors.As(err, &ref):
		return &Error{Code: InvalidEvent, Err: err, Message: ref.Error() + "; nothing was changed"}
	case errors.As(err, &waited):
		return &Error{Code: Timeout, Err: err, Message: redact(waited.Error()) +
			"; the changes were made. Wait longer (at most the function's Timeout), or look at the pods' events"}
	case kube.IsFieldConflict(err):
		return &Error{Code: Conflict, Err: err, Message: fmt.Sprintf(
			"%s: fields owned by another field manager: %s; set \"force\": true to take them over, or leave them out of the manifest",
			opName(err), strings.Join(kube.FieldConflicts(err), ", "))}
	case errors.As(err, &notFound):
		return &Error{Code: ClusterNotFound, Err: err, Message: fmt.Sprintf(
			"%s: check the cluster name and region (CLUSTER_NAME, CLUSTER_REGION or the event's cluster and region)", notFound.Error())}
	case errors.As(err, &notActive):
		return &Error{Code: Unavailable, Err: err, Message: notActive.Error() + ": try again when it is ACTIVE"}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: Timeout, Err: err, Message: fmt.Sprintf(
			"the invocation deadline came first (%s); raise the function's Timeout, or check that the API server of cluster %s answers in time", msg, d.req.Cluster)}
	case apierrors.IsUnauthorized(err):
		who := "the function's role"
		if d.callerARN != nil {
			if arn, aerr := d.callerARN(ctx); aerr == nil {
				who = arn
			} else if d.req.RoleARN != "" {
				if arn, aerr := auth.CanonicalARN(d.req.RoleARN); aerr == nil {
					who = arn
				}
			}
		}
		return &Error{Code: Unauthorized, Err: err, Message: fmt.Sprintf(
			"the API server of cluster %s rejected the token (401): map %s to the Kubernetes group lambda-eks, "+
				"with an EKS access entry (template.yml, AccessMode=access-entry) or a mapRoles entry in kube-system/aws-auth "+
				"(./deploy.sh with AccessMode=aws-auth)", d.req.Cluster, who)}
	case apierrors.IsForbidden(err):
		if errors.As(err, &op) {
			verb := op.Verb
			// The server names the verb it checked: server-side apply of a
			// new object is authorized as create, not patch.
			if m := refusedVerbRE.FindStringSubmatch(msg); m != nil {
				verb = m[1]
			}
			if op.Namespace == "" {
				return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
					"RBAC does not allow verb %q on cluster-scoped resource %q (403): grant it to the group lambda-eks with a ClusterRole, as permissions-cluster.yml does (kubectl apply -f permissions-cluster.yml)",
					verb, op.Resource)}
			}
			return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
				"RBAC does not allow verb %q on resource %q in namespace %q (403): grant it to the group lambda-eks in permissions.yml and apply it (kubectl apply -f permissions.yml)",
				verb, op.Resource, op.Namespace)}
		}
		return &Error{Code: Forbidden, Err: err, Message: msg + ": grant it to the group lambda-eks in permissions.yml"}
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err):
		// The server checked the object and refused it: what was sent is
		// wrong, not the network.
		return &Error{Code: InvalidEvent, Err: err, Message: msg +
			": the API server refused the object as written; fix the event or manifest (objects listed before it in an apply may already be applied)"}
	case apierrors.IsNotFound(err):
		return &Error{Code: NotFound, Err: err, Message: msg}
	case apierrors.IsConflict(err):
		return &Error{Code: Conflict, Err: err, Message: msg}
	case errors.As(err, &apiErr) && isAccessDenied(apiErr.ErrorCode()):
		return &Error{Code: Forbidden, Err: err, Message: awsDenied(d.req, msg)}
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "ExpiredToken":
		return &Error{Code: Unauthorized, Err: err, Message: msg + ": the AWS credentials expired; they are renewed on the next call"}
	}
	return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf("%s: could not reach %s after retries; check network access (VpcConfig, security groups, endpoint access) and try again",
		msg, endpointOf(err))}
}

// refusedVerbRE finds the verb in an API server's 403 message:
// `User "x" cannot create resource "configmaps" ...`.
var refusedVerbRE = regexp.MustCompile(`cannot ([a-z]+) resource`)

// opName names the request err is about, or says nothing useful.
func opName(err error) string {
	var op *kube.OpError
	if errors.As(err, &op) {
		s := op.Resource + " " + op.Name
		if op.Namespace != "" {
			s += " in namespace " + op.Namespace
		}
		return "apply " + s
	}
	return "apply"
}

func isAccessDenied(code string) bool {
	return code == "AccessDenied" || code == "AccessDeniedException" || code == "UnauthorizedOperation"
}

func awsDenied(req Request, msg string) string {
	if req.RoleARN != "" {
		return fmt.Sprintf("%s: the execution role may need sts:AssumeRole on %s, and that role's trust policy must allow the execution role (with external ID if set); the assumed role needs eks:DescribeCluster on cluster %s",
			msg, req.RoleARN, req.Cluster)
	}
	return fmt.Sprintf("%s: the execution role needs eks:DescribeCluster on cluster %s (template.yml grants it)", msg, req.Cluster)
}

// endpointOf names the host a failed request was for, without its query.
func endpointOf(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	var oerr *smithy.OperationError
	if errors.As(err, &oerr) {
		return "AWS " + oerr.ServiceID
	}
	return "the service"
}
