package handler

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
)

// Hooks for other functions of the application (cmd/helm) that share this
// package's error contract and CloudFormation answer, without its actions.

// Classify maps err, from connecting to a cluster (auth) or from a request
// to it, to the Error an invocation of this function would return for it;
// req names the cluster and role for the message. callerARN may be nil.
func Classify(ctx context.Context, err error, req Request, callerARN func(context.Context) (string, error)) *Error {
	return classify(ctx, err, diagnosis{req: req, callerARN: callerARN})
}

// AsError returns err as an *Error: itself when it is one, else Internal
// with its (redacted) text.
func AsError(err error) *Error { return appError(err) }

// Invalid is an InvalidEvent error with a formatted message.
func Invalid(format string, args ...any) *Error { return invalid(format, args...) }

// LambdaError is e as Lambda reports it: errorType is the code.
func (e *Error) LambdaError() error { return e.lambdaError() }

// Finish ends an invocation of another function as Invoke ends this one's:
// resp as JSON, logged as "invocation done" with done's attributes, or err
// logged as "invocation failed" and returned with its code as errorType.
func Finish[T any](ctx context.Context, log *slog.Logger, start time.Time, resp T, err error, done func(T) []any) ([]byte, error) {
	return finish(ctx, log, start, resp, err, done)
}

// IsCustomResource reports whether payload is a CloudFormation custom
// resource request.
func IsCustomResource(payload []byte) bool { return isCustomResource(payload) }

// CustomResourceRequest is a CloudFormation custom resource request, its
// envelope checked, as a CustomResourceFunc sees it.
type CustomResourceRequest struct {
	RequestType           string // Create, Update or Delete
	StackID               string
	RequestID             string
	ResourceType          string
	LogicalResourceID     string
	PhysicalResourceID    string // Update, Delete
	ResourceProperties    json.RawMessage
	OldResourceProperties json.RawMessage // Update
}

// CustomResourceFunc serves one request within ctx's deadline and returns
// the Reason and Data of a SUCCESS answer; an error is answered FAILED with
// the error's code and message as Reason.
type CustomResourceFunc func(ctx context.Context, req CustomResourceRequest) (reason string, data map[string]string, err error)

// ServeCustomResource answers a custom resource request as
// Custom::KubernetesManifest does: the envelope is checked, fn runs until
// shortly before the deadline, and the answer (SUCCESS, or FAILED for an
// error, a panic or work cut at the deadline) is PUT to the ResponseURL
// within 4,096 bytes before the deadline. physicalID names the resource of
// a SUCCESS answer; a FAILED answer keeps the request's PhysicalResourceId
// (that of Create is physicalID's). An error is returned only when no answer
// could be delivered.
func ServeCustomResource(ctx context.Context, payload []byte, log *slog.Logger,
	physicalID func(CustomResourceRequest) string, fn CustomResourceFunc) ([]byte, error) {
	exported := func(raw cfnRequest) CustomResourceRequest {
		return CustomResourceRequest{RequestType: raw.RequestType, StackID: raw.StackID, RequestID: raw.RequestID,
			ResourceType: raw.ResourceType, LogicalResourceID: raw.LogicalResourceID, PhysicalResourceID: raw.PhysicalResourceID,
			ResourceProperties: raw.ResourceProperties, OldResourceProperties: raw.OldResourceProperties}
	}
	plan := func(raw cfnRequest) cfnPlan {
		p := cfnPlan{id: raw.PhysicalResourceID, failedID: raw.PhysicalResourceID}
		if raw.RequestType != requestDelete {
			p.id = physicalID(exported(raw))
			if raw.RequestType == requestCreate || p.failedID == "" {
				p.failedID = p.id
			}
			p.replacement = raw.RequestType == requestUpdate && p.id != raw.PhysicalResourceID
		}
		return p
	}
	serve := func(ctx context.Context, raw cfnRequest, p cfnPlan) cfnResponse {
		reason, data, err := fn(ctx, exported(raw))
		if err != nil {
			return p.failed(raw, err)
		}
		return p.success(raw, reason, data)
	}
	return answerCustomResource(ctx, payload, log, plan, serve)
}

// CustomResourceStackName is the name part of a stack ID, as the manifest
// resource's PhysicalResourceIds start with it.
func CustomResourceStackName(stackID string) string { return stackName(stackID) }
