// Package cfnresource is the CloudFormation custom-resource engine every
// lambda-eks resource type runs on: it decodes the request's envelope,
// decides the PhysicalResourceIds before any work, runs the resource's work
// until shortly before the invocation's deadline (a panic or an overrun is
// answered FAILED), and PUTs the answer, within CloudFormation's 4,096
// bytes, to the presigned ResponseURL before the deadline, retrying what
// may be retried. An answer is always sent when one can be.
//
// aws-lambda-go's cfn.LambdaWrap does the same in outline, but without the
// invocation's context, a retry, the size limit or strict decoding of the
// properties, so only its types are used here.
package cfnresource

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/aws/aws-lambda-go/cfn"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Request is a CloudFormation custom resource request. The envelope is
// CloudFormation's and decoded leniently (it may grow fields); the
// properties are the resource's to decode, strictly.
type Request struct {
	RequestType           cfn.RequestType `json:"RequestType"`
	ResponseURL           string          `json:"ResponseURL"`
	StackID               string          `json:"StackId"`
	RequestID             string          `json:"RequestId"`
	ResourceType          string          `json:"ResourceType"`
	LogicalResourceID     string          `json:"LogicalResourceId"`
	PhysicalResourceID    string          `json:"PhysicalResourceId,omitempty"`
	ResourceProperties    json.RawMessage `json:"ResourceProperties,omitempty"`
	OldResourceProperties json.RawMessage `json:"OldResourceProperties,omitempty"`
}

// Is reports whether payload is a CloudFormation custom resource request: a
// JSON object with RequestType and ResponseURL (names matched
// case-sensitively). Only the top level is looked at.
func Is(payload []byte) bool {
	if !bytes.Contains(payload, []byte(`"RequestType"`)) || !bytes.Contains(payload, []byte(`"ResponseURL"`)) {
		return false
	}
	var probe struct {
		RequestType *string `json:"RequestType"`
		ResponseURL *string `json:"ResponseURL"`
	}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(payload, &probe); err != nil {
		return false
	}
	return probe.RequestType != nil && probe.ResponseURL != nil
}

// decodeRequest decodes the envelope. An error here means no answer can be
// sent (no usable ResponseURL); a request that can be answered but not
// served is refused by check.
func decodeRequest(payload []byte) (Request, error) {
	if len(payload) > invoke.MaxEventBytes {
		return Request{}, invoke.Invalid("event is %d bytes; at most %d are accepted", len(payload), invoke.MaxEventBytes)
	}
	var r Request
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(payload, &r); err != nil {
		return Request{}, invoke.Invalid("custom resource request: %s", err.Error())
	}
	if err := checkResponseURL(r.ResponseURL); err != nil {
		return Request{}, err
	}
	// The answer copies these ids: longer ones than CloudFormation sends, or
	// ones JSON would escape, could not fit its 4,096 bytes.
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"StackId", r.StackID, maxStackIDBytes}, {"RequestId", r.RequestID, maxRequestIDBytes},
		{"LogicalResourceId", r.LogicalResourceID, maxLogicalIDBytes}, {"PhysicalResourceId", r.PhysicalResourceID, MaxPhysicalIDBytes},
	} {
		if len(f.v) > f.max {
			return Request{}, invoke.Invalid("custom resource request: %s is %d bytes; CloudFormation sends at most %d", f.name, len(f.v), f.max)
		}
		if i := strings.IndexFunc(f.v, func(c rune) bool { return c < 0x20 || c == '"' || c == '\\' || c > 0x7e }); i >= 0 {
			return Request{}, invoke.Invalid("custom resource request: %s has a character CloudFormation never sends, at byte %d", f.name, i)
		}
	}
	return r, nil
}

// Bounds of the ids a request carries (CloudFormation's own: a stack ARN,
// a UUID, a template's logical id), so that the answer that copies them
// always fits.
const (
	maxStackIDBytes   = 1024
	maxRequestIDBytes = 256
	maxLogicalIDBytes = 256
)

// check refuses a request that names no stack, request or resource, or an
// unknown request type: it is answered FAILED.
func (r Request) check() error {
	switch r.RequestType {
	case cfn.RequestCreate, cfn.RequestUpdate, cfn.RequestDelete:
	default:
		return invoke.Invalid("RequestType %q: want Create, Update or Delete", r.RequestType)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"StackId", r.StackID}, {"RequestId", r.RequestID}, {"LogicalResourceId", r.LogicalResourceID},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if r.RequestType != cfn.RequestCreate && r.PhysicalResourceID == "" {
		missing = append(missing, "PhysicalResourceId")
	}
	if len(missing) > 0 {
		return invoke.Invalid("custom resource request lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

// checkResponseURL accepts only an https URL of an AWS host: the function
// PUTs a body there, and nothing else should be reachable that way.
func checkResponseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return invoke.Invalid("ResponseURL is not an https URL")
	}
	host := u.Hostname()
	if !strings.HasSuffix(host, ".amazonaws.com") && !strings.HasSuffix(host, ".amazonaws.com.cn") {
		return invoke.Invalid("ResponseURL host %q is not an AWS host (*.amazonaws.com)", host)
	}
	return nil
}

// SafeURL is a presigned URL fit for logs and messages: without its query,
// which holds the signature and credentials.
func SafeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// StackName is the name part of a stack ARN
// (arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/UUID), or the whole
// ID, cut to 128 bytes, when it is not one. Every PhysicalResourceId starts
// with it, so that kubectl and helm show which stack owns what.
func StackName(stackID string) string {
	name := stackID
	if _, rest, ok := strings.Cut(stackID, ":stack/"); ok {
		name, _, _ = strings.Cut(rest, "/")
	}
	if len(name) > 128 {
		name = name[:128]
	}
	return name
}
