// Package codepipeline is the job protocol of CodePipeline's Lambda invoke
// action, shared by the functions: the CodePipeline.job event, decoded
// strictly; the input artifact, read with the job's own credentials; and
// the answer, PutJobSuccessResult (with a continuationToken while the work
// goes on) or PutJobFailureResult. What a job does is the function's.
package codepipeline

import (
	"bytes"
	"encoding/base64"
	"encoding/json"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Event is what CodePipeline's Lambda invoke action sends. Our own type:
// aws-lambda-go's events.CodePipelineJobEvent lacks expirationTime.
type Event struct {
	Job Job `json:"CodePipeline.job"`
}

// Job is the job of an Event.
type Job struct {
	ID        string  `json:"id"`
	AccountID string  `json:"accountId"`
	Data      JobData `json:"data"`
}

// JobData is the job's data.
type JobData struct {
	ActionConfiguration struct {
		Configuration struct {
			FunctionName   string `json:"FunctionName"`
			UserParameters string `json:"UserParameters,omitempty"`
		} `json:"configuration"`
	} `json:"actionConfiguration"`
	InputArtifacts      []Artifact  `json:"inputArtifacts"`
	OutputArtifacts     []Artifact  `json:"outputArtifacts"`
	ArtifactCredentials Credentials `json:"artifactCredentials"`
	ContinuationToken   string      `json:"continuationToken,omitempty"`
	EncryptionKey       *struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"encryptionKey,omitempty"`
}

// Artifact is an input or output artifact: a zip in S3.
type Artifact struct {
	Name     string  `json:"name"`
	Revision *string `json:"revision"`
	Location struct {
		Type       string `json:"type"`
		S3Location struct {
			BucketName string `json:"bucketName"`
			ObjectKey  string `json:"objectKey"`
		} `json:"s3Location"`
	} `json:"location"`
}

// Credentials are the job's temporary credentials for its artifacts.
// Never logged; String hides them.
type Credentials struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken"`
	ExpirationTime  int64  `json:"expirationTime"`
}

// String keeps the credentials out of any message.
func (Credentials) String() string { return "(artifact credentials)" }

// maxDepth bounds how deeply an event's JSON may nest.
const maxDepth = 32

// Is reports a CodePipeline job event: a JSON object whose one member is
// CodePipeline.job.
func Is(payload []byte) bool {
	if !bytes.Contains(payload, []byte(`"CodePipeline.job"`)) {
		return false // every other event, without parsing it twice
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(payload, &probe) != nil {
		return false
	}
	_, ok := probe["CodePipeline.job"]
	return ok
}

// Decode decodes a CodePipeline.job event strictly.
func Decode(raw []byte) (Event, error) {
	trimmed, err := invoke.Trim(raw)
	if err != nil {
		return Event{}, err
	}
	if err := invoke.CheckObject(trimmed, maxDepth); err != nil {
		return Event{}, err
	}
	var ev Event
	if err := invoke.Strict(trimmed, &ev, "CodePipeline.job"); err != nil {
		return Event{}, err
	}
	if ev.Job.ID == "" {
		return Event{}, invoke.Invalid("CodePipeline.job has no id")
	}
	return ev, nil
}

// JobID reads the job id of a payload Decode refused, leniently, so that
// the refusal can still be answered: a job left unanswered hangs its
// pipeline until the action's timeout, and Lambda's retries of the same
// payload would fail the same way. "" when the payload names none.
func JobID(raw []byte) string {
	if len(raw) > invoke.MaxEventBytes {
		return ""
	}
	var probe struct {
		Job struct {
			ID string `json:"id"`
		} `json:"CodePipeline.job"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	return probe.Job.ID
}

// PickArtifact returns the input artifact named name, or the first.
func PickArtifact(arts []Artifact, name string) (Artifact, error) {
	for _, a := range arts {
		if name == "" || a.Name == name {
			if a.Location.Type != "S3" || a.Location.S3Location.BucketName == "" || a.Location.S3Location.ObjectKey == "" {
				return a, invoke.Invalid("input artifact %q is not in S3", a.Name)
			}
			return a, nil
		}
	}
	if name == "" {
		return Artifact{}, invoke.Invalid("the action has no input artifact; give it the artifact that holds the manifests")
	}
	return Artifact{}, invoke.Invalid("no input artifact named %q", name)
}

// Continuation is the state a continued job carries in its token.
type Continuation struct {
	Start int64 `json:"start"` // when the first invocation of the job began (unix s)
	// Revision is the Helm release revision the job wrote and waits on
	// (the Helm function's; 0 for the main function's).
	Revision int `json:"revision,omitempty"`
}

// Token is c as a continuationToken.
func (c Continuation) Token() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseContinuation reads a continuationToken that Token gave.
func ParseContinuation(tok string) (Continuation, error) {
	var c Continuation
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Start == 0 {
		return Continuation{}, invoke.Invalid("continuationToken %.40q is not one this function gave", tok)
	}
	return c, nil
}
