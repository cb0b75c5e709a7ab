package invoke

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Access says how a function's role is let into a cluster, for the messages
// of a 401 and of an RBAC refusal.
type Access struct {
	// Group is the Kubernetes group the role is mapped to (lambda-eks).
	Group string
	// AccessEntry names the template parameters that make the role's EKS
	// access entry (AccessMode=access-entry).
	AccessEntry string
}

// Diagnosis is what Classify needs to word an error for one request.
type Diagnosis struct {
	Cluster string
	RoleARN string // the target role, if any
	// CallerARN returns the canonical ARN the cluster sees (for a 401). May
	// be nil.
	CallerARN func(context.Context) (string, error)
	Access    Access
}

// Classify maps an error from AWS or Kubernetes to an *Error whose message
// says what happened and what to do. It claims only what the error shows:
// Unavailable is a transport failure (no answer, a refused or timed-out
// connect) or a 5xx or 429 answer after client-go's and the SDK's retries;
// an error nothing here recognises is Internal, with its text. An *Error in
// err's chain is returned as it is.
//
// An apply that failed after writing some objects says which stay written.
func Classify(ctx context.Context, err error, d Diagnosis) *Error {
	var done *Error
	if errors.As(err, &done) {
		// Already classified (or worded on purpose): its message says it all.
		return done
	}
	e := classifyOne(ctx, err, d)
	var applyErr *kube.ApplyError
	if errors.As(err, &applyErr) && !strings.Contains(e.Message, "written before the failure") {
		names := make([]string, len(applyErr.Written))
		for i, w := range applyErr.Written {
			names[i] = fmt.Sprintf("%s %s (%s)", w.Kind, Qualified(w.Namespace, w.Name), w.Result)
		}
		e = &Error{Code: e.Code, Err: e.Err, Message: e.Message + "; written before the failure, and still applied: " + strings.Join(names, ", ")}
	}
	return e
}

// Qualified is namespace/name, or name for a cluster-scoped object.
func Qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

func classifyOne(ctx context.Context, err error, d Diagnosis) *Error {
	msg := Redact(err.Error())
	var (
		notFound   *auth.ClusterNotFoundError
		notActive  *auth.ClusterNotActiveError
		endpoint   *auth.EndpointError
		assumeRole *auth.AssumeRoleError
		target     *auth.TargetError
		manifest   *kube.ManifestError
		ref        *kube.RefError
		replicas   *kube.ReplicasAnnotationError
		waited     *kube.WaitTimeoutError
		apiErr     smithy.APIError
	)
	switch {
	case errors.As(err, &target):
		return &Error{Code: InvalidEvent, Err: err, Message: target.Message}
	case errors.As(err, &waited):
		return &Error{Code: Timeout, Err: err, Message: Redact(waited.Error()) +
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
		return &Error{Code: InvalidEvent, Err: err, Message: Redact(manifest.Error()) + "; nothing was changed"}
	case errors.As(err, &ref):
		return &Error{Code: InvalidEvent, Err: err, Message: Redact(ref.Error()) + "; nothing was changed"}
	case errors.As(err, &replicas):
		// The object's state, not the event, stands in the way.
		return &Error{Code: Conflict, Err: err, Message: Redact(replicas.Error()) +
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
			"the invocation deadline came first (%s); raise the function's Timeout, or check that the API server of cluster %s answers in time", msg, d.Cluster)}
	case apierrors.IsUnauthorized(err):
		return &Error{Code: Unauthorized, Err: err, Message: fmt.Sprintf(
			"the API server of cluster %s rejected the token (401): map %s to the Kubernetes group %s, "+
				"with an EKS access entry (template.yml, %s) or a mapRoles entry in kube-system/aws-auth "+
				"(./deploy.sh with AccessMode=aws-auth)", d.Cluster, d.who(ctx), d.Access.Group, d.Access.AccessEntry)}
	case kube.IsSchemaError(err):
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
			"%s: the API server of cluster %s answered %d after client-go's retries; try again later", msg, d.Cluster, statusCode(err))}
	case errors.As(err, &apiErr) && isAccessDenied(apiErr.ErrorCode()):
		return &Error{Code: Forbidden, Err: err, Message: awsDenied(d, msg)}
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "ExpiredToken":
		return &Error{Code: Unauthorized, Err: err, Message: msg + ": the AWS credentials expired; they are renewed on the next call"}
	case isAWSOverloaded(err):
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: AWS %s is throttling or failing after the SDK's retries; try again later", msg, awsService(err))}
	case isTLS(err):
		return &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"%s: the API server at %s did not present a certificate of cluster %s's CA (as eks:DescribeCluster gave it); the connection was dropped, "+
				"so the next invocation describes the cluster again (a cluster re-created under the same name has a new CA)", msg, EndpointOf(err), d.Cluster)}
	case IsTransport(err):
		// Before a bare deadline: a request's own timeout (the client's, not
		// the invocation's) is an endpoint that did not answer in time.
		who := EndpointOf(err)
		var op *kube.OpError
		if errors.As(err, &op) {
			who = fmt.Sprintf("the API server of cluster %s at %s", d.Cluster, who)
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
func (d Diagnosis) who(ctx context.Context) string {
	if d.CallerARN != nil {
		if arn, err := d.CallerARN(ctx); err == nil {
			return arn
		}
	}
	if d.RoleARN != "" {
		if arn, err := auth.CanonicalARN(d.RoleARN); err == nil {
			return arn
		}
	}
	return "the function's role"
}

// RBACVerb returns the verb RBAC refused in err, a 403 whose message reads
// `User "x" cannot create resource "configmaps" ...`; ok is false for any
// other error, a 403 of an admission policy or webhook among them.
func RBACVerb(err error) (verb string, ok bool) {
	if !apierrors.IsForbidden(err) {
		return "", false
	}
	m := refusedVerbRE.FindStringSubmatch(serverMessage(err, err.Error()))
	if m == nil {
		return "", false
	}
	return m[1], true
}

// refusedVerbRE finds the verb in RBAC's 403 message.
var refusedVerbRE = regexp.MustCompile(`cannot ([a-z]+) resource`)

// forbidden words a 403. RBAC's refusal names the verb it checked and is
// fixed in permissions.yml; anything else that answers 403 is an admission
// check (a ValidatingAdmissionPolicy, a webhook, Pod Security, a quota, a
// terminating namespace) refusing the object, and permissions do not help.
func forbidden(err error, msg string, d Diagnosis) *Error {
	var op *kube.OpError
	hasOp := errors.As(err, &op)
	verb, rbac := RBACVerb(err)
	if !rbac {
		what := "the request"
		if hasOp {
			what = fmt.Sprintf("the %s of %s", op.Verb, objectName(op))
		}
		return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
			"an admission policy or webhook of cluster %s refused %s (403): %q; this is not RBAC: change the object so that the policy admits it, or ask the cluster's administrators about the policy",
			d.Cluster, what, serverMessage(err, msg))}
	}
	// A server-side apply of a new object is authorized as create, not patch:
	// the verb is the server's.
	switch {
	case !hasOp:
		return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf("%s: grant it to the group %s in permissions.yml", msg, d.Access.Group)}
	case op.Namespace == "":
		return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
			"RBAC does not allow verb %q on cluster-scoped resource %q (403): grant it to the group %s with a ClusterRole, as permissions-cluster.yml does (kubectl apply -f permissions-cluster.yml)",
			verb, op.Resource, d.Access.Group)}
	}
	return &Error{Code: Forbidden, Err: err, Message: fmt.Sprintf(
		"RBAC does not allow verb %q on resource %q in namespace %q (403): grant it to the group %s in permissions.yml and apply it (kubectl apply -f permissions.yml)",
		verb, op.Resource, op.Namespace, d.Access.Group)}
}

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
		return Redact(status.Status().Message)
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

// IsTransport reports a failure to get any answer: a refused, reset or
// timed-out connection, a name that does not resolve, a connection closed
// before the answer. Only a url.Error's cause decides, since url.Error
// itself wraps anything the transport returns (a token source's error too).
func IsTransport(err error) bool {
	var (
		op   *net.OpError
		dns  *net.DNSError
		uerr *url.Error
	)
	switch {
	case errors.As(err, &op), errors.As(err, &dns),
		utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &uerr):
		return uerr.Timeout() || errors.Is(uerr.Err, io.EOF) || utilnet.IsProbableEOF(uerr.Err)
	}
	// context.DeadlineExceeded is a net.Error too, but not a transport's.
	return utilnet.IsTimeout(err) && !errors.Is(err, context.DeadlineExceeded)
}

// isTLS reports a certificate or handshake failure: the endpoint is not (or
// no longer) the cluster's, as eks:DescribeCluster described it.
func isTLS(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		badCert   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		alert     tls.AlertError
	)
	return errors.As(err, &verify) || errors.As(err, &authority) || errors.As(err, &hostname) || errors.As(err, &badCert) ||
		errors.As(err, &record) || errors.As(err, &alert)
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

func awsDenied(d Diagnosis, msg string) string {
	if d.RoleARN != "" {
		return fmt.Sprintf("%s: the execution role may need sts:AssumeRole on %s, and that role's trust policy must allow the execution role (with external ID if set); the assumed role needs eks:DescribeCluster on cluster %s",
			msg, d.RoleARN, d.Cluster)
	}
	return fmt.Sprintf("%s: the execution role needs eks:DescribeCluster on cluster %s (template.yml grants it)", msg, d.Cluster)
}

// EndpointOf names the host a failed request was for, without its query.
func EndpointOf(err error) string {
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
