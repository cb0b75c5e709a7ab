package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
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
	start := time.Now()
	raw, err := decodeRequest(payload)
	if err != nil {
		e := appError(err)
		log.ErrorContext(ctx, "custom resource request cannot be answered", "code", string(e.Code), "error", e.Message)
		return nil, e
	}
	req := CustomResourceRequest{RequestType: raw.RequestType, StackID: raw.StackID, RequestID: raw.RequestID,
		ResourceType: raw.ResourceType, LogicalResourceID: raw.LogicalResourceID, PhysicalResourceID: raw.PhysicalResourceID,
		ResourceProperties: raw.ResourceProperties, OldResourceProperties: raw.OldResourceProperties}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = start.Add(maxWait)
	}
	answerBy := deadline.Add(-deadlineMargin)
	reserve := min(putReserve, time.Until(answerBy)/3)
	workCtx, cancel := context.WithDeadline(ctx, answerBy.Add(-reserve))
	defer cancel()

	plan := cfnPlan{id: raw.PhysicalResourceID, failedID: raw.PhysicalResourceID}
	if raw.RequestType != requestDelete {
		plan.id = physicalID(req)
		if raw.RequestType == requestCreate || plan.failedID == "" {
			plan.failedID = plan.id
		}
		plan.replacement = raw.RequestType == requestUpdate && plan.id != raw.PhysicalResourceID
	}
	log.InfoContext(ctx, "custom resource", "requestType", raw.RequestType, "resourceType", raw.ResourceType,
		"logicalResourceId", raw.LogicalResourceID, "physicalResourceId", plan.id, "replacement", plan.replacement)

	done := make(chan cfnResponse, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				log.ErrorContext(ctx, "custom resource panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- plan.failed(raw, &Error{Code: Internal, Message: fmt.Sprintf("the function panicked: %v; see its logs", p)})
			}
		}()
		if err := raw.check(); err != nil {
			done <- plan.failed(raw, err)
			return
		}
		reason, data, err := fn(workCtx, req)
		if err != nil {
			done <- plan.failed(raw, err)
			return
		}
		done <- plan.success(raw, reason, data)
	}()
	var resp cfnResponse
	select {
	case resp = <-done:
	case <-workCtx.Done():
		select {
		case resp = <-done:
		case <-time.After(cutGrace):
			resp = plan.failed(raw, &Error{Code: Timeout, Message: fmt.Sprintf(
				"the work did not end within the function's deadline (%s after the start, less %s to answer); raise the function's Timeout",
				time.Since(start).Round(time.Millisecond), reserve+deadlineMargin)})
		}
	}

	body, err := encodeResponse(resp)
	if err != nil {
		return nil, &Error{Code: Internal, Message: "encode the response: " + err.Error(), Err: err}
	}
	putCtx, putCancel := context.WithDeadline(ctx, answerBy)
	defer putCancel()
	put, err := putResponse(putCtx, responseClient, raw.ResponseURL, body)
	var sent cfnResponse
	_ = json.Unmarshal(body, &sent)
	attrs := []any{"requestType", raw.RequestType, "logicalResourceId", raw.LogicalResourceID,
		"physicalResourceId", sent.PhysicalResourceID, "status", sent.Status, "reason", sent.Reason,
		"dataKeys", len(sent.Data), "bytes", len(body), "attempts", put.Attempts, "httpStatus", put.StatusCode,
		"responseURL", safeURL(raw.ResponseURL), "duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		log.ErrorContext(ctx, "custom resource answer not delivered", append(attrs, "error", err.Error())...)
		return nil, &Error{Code: Unavailable, Err: err, Message: fmt.Sprintf(
			"the answer (%s) could not be delivered to CloudFormation: %s; Lambda retries the invocation", sent.Status, err.Error())}
	}
	log.InfoContext(ctx, "custom resource answered", attrs...)
	return body, nil
}

// CustomResourceStackName is the name part of a stack ID, as the manifest
// resource's PhysicalResourceIds start with it.
func CustomResourceStackName(stackID string) string { return stackName(stackID) }
