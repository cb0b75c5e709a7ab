package auth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// EndpointError says an AWS endpoint did not answer: the connect was refused
// or timed out (a proxy's CONNECT included), or every attempt ran out of
// time. It is never an answer from AWS, and never the caller's deadline.
type EndpointError struct {
	Service  string // the SDK's service ID: "STS", "EKS", "S3"
	Endpoint string // scheme and host, e.g. https://sts.us-east-1.amazonaws.com
	Err      error
}

func (e *EndpointError) Error() string {
	// The transport's own words (connection refused, EOF, a timeout), not
	// the SDK's layers around them.
	cause := e.Err.Error()
	var uerr *url.Error
	if errors.As(e.Err, &uerr) && uerr.Err != nil {
		cause = uerr.Err.Error()
	}
	return fmt.Sprintf("%s endpoint %s could not be reached: %s", e.Service, e.Endpoint, cause)
}

func (e *EndpointError) Unwrap() error { return e.Err }

// AssumeRoleError says STS refused to let Caller assume Target
// (AccessDenied): a missing sts:AssumeRole permission, a trust policy that
// does not name Caller, or an external ID that does not match.
type AssumeRoleError struct {
	Caller string // canonical ARN of the role that asked, "" when unknown
	Target string // the role ARN asked for
	Err    error
}

func (e *AssumeRoleError) Error() string {
	caller := e.Caller
	if caller == "" {
		caller = "the execution role"
	}
	why := e.Err.Error()
	var apiErr smithy.APIError
	if errors.As(e.Err, &apiErr) {
		why = apiErr.ErrorCode() + ": " + apiErr.ErrorMessage()
	}
	return fmt.Sprintf("%s may not assume %s: %s", caller, e.Target, why)
}

func (e *AssumeRoleError) Unwrap() error { return e.Err }

// endpointError returns err as an *EndpointError when it is a transport
// failure of an AWS call (no answer from AWS), and nil otherwise.
func endpointError(err error, fallback string) *EndpointError {
	var apiErr smithy.APIError
	var op *smithy.OperationError
	var send *smithyhttp.RequestSendError
	if errors.As(err, &apiErr) || !errors.As(err, &op) || !errors.As(err, &send) {
		return nil
	}
	return &EndpointError{Service: op.ServiceID, Endpoint: endpointOf(err, fallback), Err: err}
}

// AsEndpointError returns err as an *EndpointError when it is a transport
// failure of an AWS call made under ctx, and err unchanged otherwise (an
// answer from AWS, or ctx's own end). It is for AWS calls made outside this
// package, such as S3's GetObject, whose answer is read after the call
// returns.
func AsEndpointError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	if e := endpointError(err, "https://"+serviceHost(err)); e != nil {
		return e
	}
	return err
}

// serviceHost is a service's host when an error does not name the URL.
func serviceHost(err error) string {
	var op *smithy.OperationError
	if errors.As(err, &op) {
		return strings.ToLower(op.ServiceID) + ".amazonaws.com"
	}
	return "amazonaws.com"
}

// awsCall runs one AWS operation bounded by callTimeout, so that a silent
// endpoint ends well inside the invocation's deadline, and turns a transport
// failure into an *EndpointError. When ctx ends first, the error is ctx's:
// the invocation's deadline came first, whatever the endpoint did.
func awsCall[T any](ctx context.Context, service, endpoint string, fn func(context.Context) (T, error)) (T, error) {
	callCtx, cancel := context.WithTimeoutCause(ctx, callTimeout, errNoAnswer)
	defer cancel()
	out, err := fn(callCtx)
	switch {
	case err == nil || ctx.Err() != nil:
		return out, err
	case context.Cause(callCtx) == errNoAnswer: //nolint:errorlint // the sentinel itself, never wrapped
		return out, &EndpointError{Service: service, Endpoint: endpointOf(err, endpoint),
			Err: fmt.Errorf("%w within %s (attempts of at most %s)", errNoAnswer, callTimeout, attemptTimeout)}
	}
	if e := endpointError(err, endpoint); e != nil {
		return out, e
	}
	return out, err
}

// errNoAnswer is the cause of an AWS call that ran out of callTimeout.
var errNoAnswer = errors.New("no answer")

// endpointOf names the endpoint a failed request went to, scheme and host,
// or fallback when the error does not say.
func endpointOf(err error, fallback string) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	return fallback
}

// regionalEndpoint is the endpoint the SDK uses for service (the host's
// first label, "sts") in cfg's region, unless cfg names one.
func regionalEndpoint(cfg aws.Config, service string) string {
	if cfg.BaseEndpoint != nil {
		return aws.ToString(cfg.BaseEndpoint)
	}
	return "https://" + service + "." + cfg.Region + ".amazonaws.com"
}

// deniedCallerRE finds the caller in STS's AccessDenied message:
// "User: arn:aws:sts::1:assumed-role/R/s is not authorized to perform: sts:AssumeRole on resource: ...".
var deniedCallerRE = regexp.MustCompile(`User: (arn:[^ ]+) is not authorized`)
