package handler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"syscall"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
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
// says what happened and what to do. It claims only what the error shows:
// Unavailable is a transport failure (no answer, a refused or timed-out
// connect) or a 5xx or 429 answer after client-go's and the SDK's retries;
// an error nothing here recognises is Internal, with its text.
//
// An apply that failed after writing some objects says which stay written.
func classify(ctx context.Context, err error, d diagnosis) *Error {
	e := classifyOne(ctx, err, d)
	var applyErr *kube.ApplyError
	if errors.As(err, &applyErr) && !strings.Contains(e.Message, "written before the failure") {
		names := make([]string, len(applyErr.Written))
		for i, w := range applyErr.Written {
			names[i] = fmt.Sprintf("%s %s (%s)", w.Kind, qualified(w.Namespace, w.Name), w.Result)
		}
		e = &Error{Code: e.Code, Err: e.Err, Message: e.Message + "; written before the failure, and still applied: " + strings.Join(names, ", ")}
	}
	return e
}

func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

func classifyOne(ctx context.Context, err error, d diagnosis) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := redact(err.Error())
	var (
		notFound   *auth.ClusterNotFoundError
		notActive  *auth.ClusterNotActiveError
		endpoint   *auth.EndpointError
		assumeRole *auth.AssumeRoleError
		manifest   *kube.ManifestError
		ref        *kube.RefError
		replicas   *kube.ReplicasAnnotationError
		waited     *kube.WaitTimeoutError
		apiErr     smithy.APIError
	)
	switch {
	case errors.As(err, &waited):
		return &Error{Code: Timeout, Err: err, Message: redact(waited.Error()) +
			"; the changes were made. Wait longer (at most the function's Timeout), or look at the pods' events"}
	case kube.IsFieldConflict(err):
		return &Error{Code: Conflict, Err: err, Message: fmt.Sprintf(
			"%s: fields owned by another field manager: %s; set \"force\": true to take them over, or leave them out of the manifest",
			opName(err), strings.Join(kube.FieldConflicts(err), ", "))}
	case apierrors.IsForbidden(err):
		// Before the manifest case: a dry run refused by RBAC or a policy
		// is a 403 first.
		return forbidden(err, msg, d)
	case errors.As(err, &manifest):
		return &Error{Code: InvalidEvent, Err: err, Message: redact(manifest.Error()) + "; nothing was changed"}
	case errors.As(err, &ref):
		return &Error{Code: InvalidEvent, Err: err, Message: redact(ref.Error()) + "; nothing was changed"}
	case errors.As(err, &replicas):
		// The object's state, not the event, stands in the way.
		return &Error{Code: Conflict, Err: err, Message: redact(replicas.Error()) +
			"; nothing was changed: set it to the replicas to restore, or remove it and scale to a number"}
	case errors.As(err, &notFound):
		return &Error{Code: ClusterNotFound, Err: err, Message: fmt.Sprintf(
			"%s: check the cluster name and region (CLUSTER_NAME, CLUSTER_REGION or the event's cluster and region)", notFound.Error())}
	case errors.As(err, &notActive):
		return &Error{Code: Unavailable, Err: err, Message: notActive.Error() + ": try again when it is ACTIVE"}
	case errors.As(err, &assumeRole):
		caller := assumeRole.Caller
		if caller == "" {
			caller = "the function's execution role"
		}
		return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
			"%s: %s needs sts:AssumeRole on %s (template.yml grants it for TargetRoleArn), and the trust policy of %s must allow %s, "+
				"with the external ID it requires (EXTERNAL_ID or the event's externalId)",
			msg, caller, assumeRole.Target, assumeRole.Target, caller)}
	case errors.As(err, &endpoint) && ctx.Err() == nil:
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: AWS %s at %s did not answer; check the function's network access to it (VpcConfig: a NAT gateway or a %s interface endpoint in the subnets, security groups allowing 443 out)",
			msg, endpoint.Service, endpoint.Endpoint, strings.ToLower(endpoint.Service))}
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return &Error{Code: Timeout, Err: err, Message: fmt.Sprintf(
			"the invocation deadline came first (%s); raise the function's Timeout, or check that the API server of cluster %s answers in time", msg, d.req.Cluster)}
	case apierrors.IsUnauthorized(err):
		return &Error{Code: Unauthorized, Err: err, Message: fmt.Sprintf(
			"the API server of cluster %s rejected the token (401): map %s to the Kubernetes group lambda-eks, "+
				"with an EKS access entry (template.yml, AccessMode=access-entry) or a mapRoles entry in kube-system/aws-auth "+
				"(./deploy.sh with AccessMode=aws-auth)", d.req.Cluster, d.who(ctx))}
	case typedPatchRE.MatchString(msg) && statusCode(err) == http.StatusInternalServerError:
		// The server answers a patch it cannot type against the object's
		// schema with a 500; the patch, not the server, is at fault.
		return &Error{Code: InvalidEvent, Err: err, Message: fmt.Sprintf(
			"%s: the API server cannot apply this object: %s does not fit the object's schema (a field it does not declare, or a value of the wrong type); fix the event or manifest",
			msg, schemaField(msg))}
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err):
		// The server checked the object and refused it: what was sent is
		// wrong, not the network.
		return &Error{Code: InvalidEvent, Err: err, Message: msg +
			": the API server refused the object as written; fix the event or manifest"}
	case apierrors.IsNotFound(err):
		return &Error{Code: NotFound, Err: err, Message: msg}
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return &Error{Code: Conflict, Err: err, Message: msg + ": another writer changed the object; try again"}
	case statusCode(err) >= http.StatusInternalServerError || statusCode(err) == http.StatusTooManyRequests:
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: the API server of cluster %s answered %d after client-go's retries; try again later", msg, d.req.Cluster, statusCode(err))}
	case errors.As(err, &apiErr) && isAccessDenied(apiErr.ErrorCode()):
		return &Error{Code: Forbidden, Err: err, Message: awsDenied(d.req, msg)}
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "ExpiredToken":
		return &Error{Code: Unauthorized, Err: err, Message: msg + ": the AWS credentials expired; they are renewed on the next call"}
	case isAWSOverloaded(err):
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: AWS %s is throttling or failing after the SDK's retries; try again later", msg, awsService(err))}
	case stale(err) == "tls":
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: the API server at %s did not present a certificate of cluster %s's CA (as eks:DescribeCluster gave it); the connection was dropped, "+
				"so the next invocation describes the cluster again (a cluster re-created under the same name has a new CA)", msg, endpointOf(err), d.req.Cluster)}
	case isTransport(err):
		// Before a bare deadline: a request's own timeout (the client's, not
		// the invocation's) is an endpoint that did not answer in time.
		who := endpointOf(err)
		var op *kube.OpError
		if errors.As(err, &op) {
			who = fmt.Sprintf("the API server of cluster %s at %s", d.req.Cluster, who)
		}
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: %s did not answer; check network access from the function to it (VpcConfig, security groups allowing 443, the cluster's endpoint public or private access)",
			msg, who)}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: Timeout, Err: err, Message: msg + ": a step of the action ran out of its time before the invocation's deadline; try again"}
	}
	return &Error{Code: Internal, Err: err, Message: msg + " (an error lambda-eks does not classify: its text is all it knows)"}
}

// who names the identity the cluster sees, for a 401: the caller's
// canonical ARN, else the target role's, else "the function's role".
func (d diagnosis) who(ctx context.Context) string {
	if d.callerARN != nil {
		if arn, err := d.callerARN(ctx); err == nil {
			return arn
		}
	}
	if d.req.RoleARN != "" {
		if arn, err := auth.CanonicalARN(d.req.RoleARN); err == nil {
			return arn
		}
	}
	return "the function's role"
}

// forbidden words a 403. RBAC's refusal names the verb it checked
// (`User "x" cannot create resource "configmaps" ...`) and is fixed in
// permissions.yml; anything else that answers 403 is an admission check (a
// ValidatingAdmissionPolicy, a webhook, Pod Security, a quota, a
// terminating namespace) refusing the object, and permissions do not help.
func forbidden(err error, msg string, d diagnosis) *Error {
	var op *kube.OpError
	hasOp := errors.As(err, &op)
	m := refusedVerbRE.FindStringSubmatch(msg)
	if m == nil {
		what := "the request"
		if hasOp {
			what = fmt.Sprintf("the %s of %s", op.Verb, objectName(op))
		}
		return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
			"an admission policy or webhook of cluster %s refused %s (403): %q; this is not RBAC: change the object so that the policy admits it, or ask the cluster's administrators about the policy",
			d.req.Cluster, what, serverMessage(err, msg))}
	}
	verb := m[1] // server-side apply of a new object is authorized as create, not patch
	switch {
	case !hasOp:
		return &Error{Code: Forbidden, Err: err, Message: msg + ": grant it to the group lambda-eks in permissions.yml"}
	case op.Namespace == "":
		return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
			"RBAC does not allow verb %q on cluster-scoped resource %q (403): grant it to the group lambda-eks with a ClusterRole, as permissions-cluster.yml does (kubectl apply -f permissions-cluster.yml)",
			verb, op.Resource)}
	}
	return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
		"RBAC does not allow verb %q on resource %q in namespace %q (403): grant it to the group lambda-eks in permissions.yml and apply it (kubectl apply -f permissions.yml)",
		verb, op.Resource, op.Namespace)}
}

// refusedVerbRE finds the verb in RBAC's 403 message:
// `User "x" cannot create resource "configmaps" ...`.
var refusedVerbRE = regexp.MustCompile(`cannot ([a-z]+) resource`)

// typedPatchRE matches the API server's 500 for a server-side apply whose
// patch does not fit the schema:
// `failed to create typed patch object (ns/name; apps/v1, Kind=Deployment): .spec.replicas: expected numeric ...`.
var typedPatchRE = regexp.MustCompile(`failed to create typed patch object`)

// schemaFieldRE finds the first field path in a schema error.
var schemaFieldRE = regexp.MustCompile(`(\.[A-Za-z0-9_$-][^\s:]*):`)

// schemaField names the field a schema error is about.
func schemaField(msg string) string {
	if m := schemaFieldRE.FindStringSubmatch(msg); m != nil {
		return "field " + m[1]
	}
	return "a field"
}

// serverMessage is the API server's own message in err, or msg.
func serverMessage(err error, msg string) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Message != "" {
		return redact(status.Status().Message)
	}
	return msg
}

// statusCode is the HTTP status of the API server's answer in err, or 0.
func statusCode(err error) int {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return int(status.Status().Code)
	}
	return 0
}

// isTransport reports a failure to get any answer: a refused, reset or
// timed-out connection, a name that does not resolve, a connection closed
// before the answer. Only a url.Error's cause decides, since url.Error
// itself wraps anything the transport returns (a token source's error too).
func isTransport(err error) bool {
	var (
		op   *net.OpError
		dns  *net.DNSError
		uerr *url.Error
		nerr net.Error
	)
	switch {
	case errors.As(err, &op), errors.As(err, &dns),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &uerr):
		return uerr.Timeout() || errors.Is(uerr.Err, io.EOF)
	}
	// context.DeadlineExceeded is a net.Error too, but not a transport's.
	return errors.As(err, &nerr) && nerr.Timeout() && !errors.Is(err, context.DeadlineExceeded)
}

// isAWSOverloaded reports an AWS answer of 429 or 5xx, or an error code the
// SDK's retryer counts as throttling (S3's SlowDown among them), that
// outlasted the SDK's retries.
func isAWSOverloaded(err error) bool {
	var resp *smithyhttp.ResponseError
	if errors.As(err, &resp) {
		if c := resp.HTTPStatusCode(); c == http.StatusTooManyRequests || c >= http.StatusInternalServerError {
			return true
		}
	}
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	code := apiErr.ErrorCode()
	_, throttled := retry.DefaultThrottleErrorCodes[code]
	return throttled || code == "ServiceUnavailable" || code == "ServiceUnavailableException"
}

// awsService names the AWS service of a failed call.
func awsService(err error) string {
	var oerr *smithy.OperationError
	if errors.As(err, &oerr) {
		return oerr.ServiceID
	}
	return "the service"
}

// opName names the request err is about.
func opName(err error) string {
	var op *kube.OpError
	if errors.As(err, &op) {
		return op.Verb + " " + objectName(op)
	}
	return "the request"
}

// objectName names the object of op: resource, name and namespace.
func objectName(op *kube.OpError) string {
	s := op.Resource
	if op.Name != "" {
		s += " " + op.Name
	}
	if op.Namespace != "" {
		s += " in namespace " + op.Namespace
	}
	return s
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
	return "the endpoint"
}
