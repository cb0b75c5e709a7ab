package invoke_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// clientTimeout is net/http's error for a request past the client's
// Timeout: a net.Error that is also context.DeadlineExceeded.
type clientTimeout struct{}

func (clientTimeout) Error() string {
	return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
}
func (clientTimeout) Timeout() bool        { return true }
func (clientTimeout) Temporary() bool      { return true }
func (clientTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// apiError is a minimal smithy.APIError.
type apiError struct{ code string }

func (e apiError) Error() string                 { return e.code }
func (e apiError) ErrorCode() string             { return e.code }
func (e apiError) ErrorMessage() string          { return e.code }
func (e apiError) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

// diagnosis is the Diagnosis of the main function's default target.
func diagnosis(roleARN string, callerARN func(context.Context) (string, error)) invoke.Diagnosis {
	return invoke.Diagnosis{Cluster: "demo", RoleARN: roleARN, CallerARN: callerARN,
		Access: invoke.Access{Group: "lambda-eks", AccessEntry: "AccessMode=access-entry"}}
}

// checkClassified checks got's code, that its message holds each of
// wantInMsg, and that it keeps err in its chain (or, for an *Error in err's
// chain, is that *Error).
func checkClassified(tb testing.TB, got *invoke.Error, err error, wantCode invoke.Code, wantInMsg []string) {
	tb.Helper()
	if got.Code != wantCode {
		tb.Errorf("code = %s, want %s (message %q)", got.Code, wantCode, got.Message)
	}
	for _, s := range wantInMsg {
		if !strings.Contains(got.Message, s) {
			tb.Errorf("message %q lacks %q", got.Message, s)
		}
	}
	if !errors.Is(got, err) && !errors.Is(err, got) {
		tb.Errorf("the classified error lost its cause %v", err)
	}
}

func TestClassify(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	forbidden := &kube.OpError{Verb: "patch", Resource: "deployments.apps", Namespace: "other", Name: "nginx",
		Err: apierrors.NewForbidden(gr, "nginx", errors.New(`User "lambda:fn" cannot patch resource "deployments" in API group "apps" in the namespace "other"`))}
	vap := &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "default", Name: "a",
		Err: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "a",
			errors.New(`ValidatingAdmissionPolicy 'no-blue' with binding 'no-blue' denied request: blue is not allowed here`))}
	webhook := &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "default", Name: "a",
		Err: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "a",
			errors.New(`admission webhook "policy.example.com" denied the request: images must come from ECR`))}
	unauthorized := &kube.OpError{Verb: "get", Resource: "deployments.apps", Namespace: "default",
		Err: apierrors.NewUnauthorized("Unauthorized")}
	const apiURL = "https://ABCD.gr7.us-east-1.eks.amazonaws.com/apis/apps/v1/namespaces/default/deployments/nginx"
	refused := &url.Error{Op: "Get", URL: apiURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	caller := func(context.Context) (string, error) { return "arn:aws:iam::123456789012:role/fn-role", nil }
	noCaller := func(context.Context) (string, error) { return "", errors.New("sts down") }

	tests := []struct {
		name      string
		err       error
		callerARN func(context.Context) (string, error)
		roleARN   string
		expired   bool // the invocation's own context has ended
		wantCode  invoke.Code
		wantInMsg []string
	}{
		{name: "cluster not found", err: &auth.ClusterNotFoundError{Name: "nope", Region: "us-east-1"}, wantCode: invoke.ClusterNotFound,
			wantInMsg: []string{"nope", "us-east-1", "CLUSTER_NAME"}},
		{name: "cluster creating", err: &auth.ClusterNotActiveError{Name: "demo", Status: "CREATING"}, wantCode: invoke.Unavailable,
			wantInMsg: []string{"CREATING", "try again when it is ACTIVE"}},
		{name: "deadline", err: &kube.OpError{Verb: "patch", Resource: "deployments.apps", Err: context.DeadlineExceeded}, expired: true,
			wantCode: invoke.Timeout, wantInMsg: []string{"invocation deadline came first", "Timeout", "cluster demo"}},
		{name: "a request's own timeout is Unavailable", err: &kube.OpError{Verb: "patch", Resource: "deployments.apps",
			Err: &url.Error{Op: "Patch", URL: apiURL, Err: clientTimeout{}}}, wantCode: invoke.Unavailable,
			wantInMsg: []string{"the API server of cluster demo at https://ABCD.gr7.us-east-1.eks.amazonaws.com did not answer"}},
		{name: "a step's own deadline is not the invocation's", err: &kube.OpError{Verb: "get", Resource: "customresourcedefinitions",
			Err: context.DeadlineExceeded}, wantCode: invoke.Timeout, wantInMsg: []string{"a step of the action ran out of its time"}},
		{name: "401 names the caller", err: unauthorized, callerARN: caller, wantCode: invoke.Unauthorized,
			wantInMsg: []string{"cluster demo rejected the token (401): map arn:aws:iam::123456789012:role/fn-role to the Kubernetes group lambda-eks",
				"EKS access entry (template.yml, AccessMode=access-entry)", "kube-system/aws-auth"}},
		{name: "401 falls back to the target role without path", err: unauthorized, callerARN: noCaller,
			roleARN: "arn:aws:iam::210987654321:role/ops/admin", wantCode: invoke.Unauthorized,
			wantInMsg: []string{"map arn:aws:iam::210987654321:role/admin to"}},
		{name: "401 without caller nor role names the function's role", err: unauthorized, wantCode: invoke.Unauthorized,
			wantInMsg: []string{"map the function's role to the Kubernetes group lambda-eks"}},
		{name: "403 names verb, resource, namespace", err: forbidden, wantCode: invoke.Forbidden,
			wantInMsg: []string{`"patch"`, `"deployments.apps"`, `"other"`, "grant it to the group lambda-eks in permissions.yml"}},
		{name: "403 from a ValidatingAdmissionPolicy quotes it", err: vap, wantCode: invoke.Forbidden,
			wantInMsg: []string{"admission policy", "refused the patch of configmaps a in namespace default", "blue is not allowed here", "not RBAC"}},
		{name: "403 from a webhook quotes it", err: webhook, wantCode: invoke.Forbidden,
			wantInMsg: []string{"admission policy or webhook", "images must come from ECR"}},
		{name: "AssumeRole denied names the target", err: apiError{"AccessDenied"}, roleARN: "arn:aws:iam::210987654321:role/t",
			wantCode: invoke.Forbidden, wantInMsg: []string{"sts:AssumeRole", "arn:aws:iam::210987654321:role/t"}},
		{name: "DescribeCluster denied", err: apiError{"AccessDeniedException"}, wantCode: invoke.Forbidden,
			wantInMsg: []string{"eks:DescribeCluster on cluster demo"}},
		{name: "expired AWS credentials", err: apiError{"ExpiredToken"}, wantCode: invoke.Unauthorized,
			wantInMsg: []string{"the AWS credentials expired"}},
		{name: "unreachable", err: &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: refused}, wantCode: invoke.Unavailable,
			wantInMsg: []string{"connection refused", "https://ABCD.gr7.us-east-1.eks.amazonaws.com did not answer", "VpcConfig"}},
		{name: "connect timeout", err: &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: &url.Error{Op: "Get", URL: apiURL,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}}}, wantCode: invoke.Unavailable,
			wantInMsg: []string{"https://ABCD.gr7.us-east-1.eks.amazonaws.com"}},
		{name: "certificate of another CA", err: &kube.OpError{Verb: "get", Resource: "deployments.apps", Err: &url.Error{Op: "Get", URL: apiURL,
			Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}}, wantCode: invoke.Unavailable,
			wantInMsg: []string{"certificate", "describes the cluster again"}},
		{name: "AWS endpoint silent", err: fmt.Errorf("credentials: %w", &auth.EndpointError{Service: "STS",
			Endpoint: "https://sts.us-east-1.amazonaws.com", Err: errors.New("no answer")}), wantCode: invoke.Unavailable,
			wantInMsg: []string{"STS", "https://sts.us-east-1.amazonaws.com", "sts interface endpoint"}},
		{name: "AssumeRole denied names both roles", err: &auth.AssumeRoleError{Caller: "arn:aws:iam::123456789012:role/fn-role",
			Target: "arn:aws:iam::210987654321:role/t", Err: apiError{"AccessDenied"}}, wantCode: invoke.Forbidden,
			wantInMsg: []string{"arn:aws:iam::123456789012:role/fn-role needs sts:AssumeRole on arn:aws:iam::210987654321:role/t",
				"trust policy of arn:aws:iam::210987654321:role/t must allow arn:aws:iam::123456789012:role/fn-role"}},
		{name: "AssumeRole denied of an unknown caller", err: &auth.AssumeRoleError{Target: "arn:aws:iam::210987654321:role/t",
			Err: apiError{"AccessDenied"}}, wantCode: invoke.Forbidden,
			wantInMsg: []string{"the function's execution role needs sts:AssumeRole on arn:aws:iam::210987654321:role/t"}},
		{name: "AWS throttling", err: apiError{"ThrottlingException"}, wantCode: invoke.Unavailable, wantInMsg: []string{"throttling"}},
		{name: "S3 throttling", err: apiError{"SlowDown"}, wantCode: invoke.Unavailable, wantInMsg: []string{"throttling"}},
		{name: "AWS 500", err: &smithy.OperationError{ServiceID: "EKS", OperationName: "DescribeCluster", Err: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 500}}, Err: errors.New("internal")}},
			wantCode: invoke.Unavailable, wantInMsg: []string{"AWS EKS"}},
		{name: "500 from the API server", err: &kube.OpError{Verb: "get", Resource: "deployments.apps",
			Err: apierrors.NewInternalError(errors.New("etcd is down"))}, wantCode: invoke.Unavailable,
			wantInMsg: []string{"cluster demo answered 500", "etcd is down"}},
		{name: "429 from the API server", err: &kube.OpError{Verb: "get", Resource: "deployments.apps",
			Err: apierrors.NewTooManyRequests("busy", 1)}, wantCode: invoke.Unavailable, wantInMsg: []string{"answered 429"}},
		{name: "typed patch 500 is the event's fault", err: &kube.OpError{Verb: "patch", Resource: "configmaps", Name: "a",
			Err: apierrors.NewInternalError(errors.New("failed to create typed patch object (default/a; /v1, Kind=ConfigMap): .spec: field not declared in schema"))},
			wantCode: invoke.InvalidEvent, wantInMsg: []string{"field .spec", "does not fit the object's schema"}},
		{name: "an unknown error is Internal with its text", err: &kube.OpError{Verb: "patch", Resource: "deployments.apps",
			Err: errors.New(`unable to find api field in struct Unstructured for the json field "spec"`)}, wantCode: invoke.Internal,
			wantInMsg: []string{"unable to find api field", "does not classify"}},
		{name: "a transport wrapping a non-network error is Internal", err: &kube.OpError{Verb: "get", Resource: "deployments.apps",
			Err: &url.Error{Op: "Get", URL: apiURL, Err: errors.New("failed to refresh cached credentials")}}, wantCode: invoke.Internal,
			wantInMsg: []string{"failed to refresh cached credentials"}},
		{name: "already classified", err: fmt.Errorf("step: %w", invoke.Invalid("bad %s", "thing")), wantCode: invoke.InvalidEvent,
			wantInMsg: []string{"bad thing"}},
		{name: "a target refused", err: &auth.TargetError{Field: "region", Message: `region "mars" is not an AWS region name`},
			wantCode: invoke.InvalidEvent, wantInMsg: []string{`region "mars" is not an AWS region name`}},
		{name: "422 from the server is the event's fault", err: &kube.OpError{Verb: "patch", Resource: "deployments.apps",
			Err: apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "nginx", nil)}, wantCode: invoke.InvalidEvent,
			wantInMsg: []string{"refused the object"}},
		{name: "400 from the server is the event's fault", err: apierrors.NewBadRequest("field not declared in schema"),
			wantCode: invoke.InvalidEvent, wantInMsg: []string{"field not declared in schema"}},
		{name: "404 is NotFound", err: &kube.OpError{Verb: "get", Resource: "deployments.apps", Name: "web",
			Err: apierrors.NewNotFound(gr, "web")}, wantCode: invoke.NotFound, wantInMsg: []string{`"web" not found`}},
		{name: "409 is Conflict", err: apierrors.NewConflict(gr, "web", errors.New("the object has been modified")),
			wantCode: invoke.Conflict, wantInMsg: []string{"another writer changed the object"}},
		{name: "a secret in an error is redacted", err: errors.New("Get https://sts.amazonaws.com/?X-Amz-Signature=abc123&X-Amz-Credential=AKIA: Bearer k8s-aws-v1.aHR0cHM6Ly9zdHM"),
			wantCode: invoke.Internal, wantInMsg: []string{"X-Amz-Signature=REDACTED", "X-Amz-Credential=REDACTED", "k8s-aws-v1.REDACTED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if tt.expired {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, time.Now().Add(-time.Second))
				defer cancel()
			}
			got := invoke.Classify(ctx, tt.err, diagnosis(tt.roleARN, tt.callerARN))
			checkClassified(t, got, tt.err, tt.wantCode, tt.wantInMsg)
			if strings.Contains(tt.name, "policy") || strings.Contains(tt.name, "webhook") {
				if strings.Contains(got.Message, "permissions") || strings.Contains(got.Message, "grant") {
					t.Errorf("a policy refusal points to permissions: %q", got.Message)
				}
			}
			if got.Code != invoke.Unavailable && strings.Contains(got.Message, "network access") {
				t.Errorf("a %s error points to the network: %q", got.Code, got.Message)
			}
			if strings.Contains(got.Message, "abc123") || strings.Contains(got.Message, "AKIA") || strings.Contains(got.Message, "aHR0cHM6Ly9zdHM") {
				t.Errorf("message leaks a secret: %q", got.Message)
			}
		})
	}
}

// TestClassifyManageErrors: the errors of kube's writes (apply, scale,
// wait) say which field, verb, document or object, and what to do.
func TestClassifyManageErrors(t *testing.T) {
	conflict := &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 409, Reason: metav1.StatusReasonConflict,
		Message: `Apply failed with 1 conflict: conflict with "kubectl" using v1: .data.color`,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeFieldManagerConflict,
			Message: `conflict with "kubectl" using v1`, Field: ".data.color"}}}}}
	createForbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "a",
		errors.New(`User "lambda:x" cannot create resource "configmaps" in API group "" in the namespace "team"`))
	tests := []struct {
		name      string
		err       error
		wantCode  invoke.Code
		wantInMsg []string
	}{
		{"field conflict names field and manager", &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "team", Name: "a", Err: conflict},
			invoke.Conflict, []string{".data.color", `"kubectl"`, `"force": true`, "configmaps a"}},
		{"forbidden names the verb the server checked", &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "team", Name: "a", Err: createForbidden},
			invoke.Forbidden, []string{`"create"`, `"configmaps"`, `"team"`, "permissions.yml"}},
		{"forbidden cluster-wide points to the ClusterRole", &kube.OpError{Verb: "get", Resource: "namespaces", Name: "a",
			Err: apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "a",
				errors.New(`User "lambda:x" cannot get resource "namespaces" in API group "" at the cluster scope`))},
			invoke.Forbidden, []string{`"get"`, `"namespaces"`, "group lambda-eks with a ClusterRole", "permissions-cluster.yml"}},
		{"manifest error", &kube.ManifestError{Index: 3, Kind: "ConfigMap", Name: "x", Problem: "metadata.name is missing"},
			invoke.InvalidEvent, []string{"document 3", "nothing was changed"}},
		{"wait past its bound", &kube.WaitTimeoutError{Waited: 2 * time.Second, Objects: []kube.ObjectResult{{Kind: "Deployment", Namespace: "n", Name: "d",
			Result: kube.Progressing, Readiness: &kube.Readiness{Desired: 3, Updated: 3, Ready: 1, Available: 1, Generation: 2, ObservedGeneration: 2, Message: "1 of 3 replicas ready"}}}},
			invoke.Timeout, []string{"Deployment n/d", "ready 1", "1 of 3 replicas ready", "the changes were made"}},
		{"an apply that wrote some objects names them", &kube.ApplyError{
			Written: []kube.ObjectResult{{Kind: "ConfigMap", Namespace: "team", Name: "a", Result: kube.Created}},
			Err:     &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "team", Name: "b", Err: createForbidden}},
			invoke.Forbidden, []string{`"create"`, "permissions.yml", "written before the failure, and still applied: ConfigMap team/a (created)"}},
		{"written objects are named once", &kube.ApplyError{
			Written: []kube.ObjectResult{{Kind: "ConfigMap", Namespace: "team", Name: "a", Result: kube.Created}},
			Err:     &kube.OpError{Verb: "patch", Resource: "configmaps", Namespace: "team", Name: "b", Err: errors.New("something odd")}},
			invoke.Internal, []string{"something odd (written before the failure: ConfigMap team/a created)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := invoke.Classify(t.Context(), tt.err, diagnosis("", nil))
			checkClassified(t, got, tt.err, tt.wantCode, tt.wantInMsg)
			if n := strings.Count(got.Message, "written before the failure"); n > 1 {
				t.Errorf("the written objects are named %d times: %q", n, got.Message)
			}
		})
	}
}
