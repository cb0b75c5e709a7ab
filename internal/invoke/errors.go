// Package invoke is the invocation framework every lambda-eks function is
// built on: the one error type and its codes (Lambda's errorType), the
// mapping of AWS and Kubernetes failures to it, strict decoding of raw
// events, the per-process cache of cluster connections, and the start and
// end of an invocation (deadline margin, logs with the request id).
//
// A function's own package holds its actions only; it imports this package,
// auth and kube, and never another function's package.
package invoke

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/aws/aws-lambda-go/lambda/messages"

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

// Error is the one error type a function returns.
type Error struct {
	Code    Code
	Message string
	Err     error
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

func (e *Error) Unwrap() error { return e.Err }

// Invalid is an InvalidEvent error with a formatted message; a value it
// quotes (%q) is cut to kube.MaxQuoted bytes (kube.ShortQuoted).
func Invalid(format string, args ...any) *Error {
	return &Error{Code: InvalidEvent, Message: fmt.Sprintf(format, kube.ShortQuoted(format, args)...)}
}

// AsError returns err as an *Error: itself (or the first in its chain), else
// Internal with its redacted text.
func AsError(err error) *Error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: Internal, Message: Redact(err.Error()), Err: err}
	}
	return e
}

// LambdaError is e as Lambda reports it: errorType is the code, so callers
// and alarms can match on it.
func (e *Error) LambdaError() error {
	return messages.InvokeResponse_Error{Type: string(e.Code), Message: e.Message}
}

// secretRE matches what must never leave the process: a bearer token and the
// signature of a presigned URL.
var secretRE = regexp.MustCompile(`k8s-aws-v1\.[A-Za-z0-9_-]+|(?i)(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=[^&\s"]*`)

// Redact drops bearer tokens and presigned signatures and credentials from s.
func Redact(s string) string {
	return secretRE.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "k8s-aws-v1.") {
			return "k8s-aws-v1.REDACTED"
		}
		name, _, _ := strings.Cut(m, "=")
		return name + "=REDACTED"
	})
}
