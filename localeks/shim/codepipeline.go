package shim

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// CodePipeline's job-worker answers, which moto does not implement: the
// shim answers PutJobSuccessResult and PutJobFailureResult as AWS does
// (AWS JSON 1.1, X-Amz-Target CodePipeline_20150709.*; the same checks of
// the request and the job's state) and records each call, readable at GET
// /__codepipeline (POST /__codepipeline/reset empties it).

// JobCall is one recorded PutJobSuccessResult or PutJobFailureResult.
type JobCall struct {
	JobID             string            `json:"jobId"`
	Result            string            `json:"result"` // success, failure
	ContinuationToken string            `json:"continuationToken,omitempty"`
	OutputVariables   map[string]string `json:"outputVariables,omitempty"`
	FailureDetails    *FailureDetails   `json:"failureDetails,omitempty"`
	ExecutionSummary  string            `json:"executionSummary,omitempty"`
	// Status is the HTTP status the shim answered; Error its __type when
	// it refused the call.
	Status      int       `json:"status"`
	Error       string    `json:"error,omitempty"`
	AccessKeyID string    `json:"accessKeyId"`
	Time        time.Time `json:"time"`
}

// FailureDetails is PutJobFailureResult's failureDetails.
type FailureDetails struct {
	Type                string `json:"type"`
	Message             string `json:"message"`
	ExternalExecutionID string `json:"externalExecutionId,omitempty"`
}

type jobBook struct {
	mu    sync.Mutex
	calls []JobCall
	done  map[string]bool // jobs answered without a continuation token
}

var (
	jobIDPattern      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	outputNamePattern = regexp.MustCompile(`^[A-Za-z0-9@\-_]+$`)
	failureTypes      = map[string]bool{"JobFailed": true, "ConfigurationError": true, "PermissionError": true,
		"RevisionOutOfSync": true, "RevisionUnavailable": true, "SystemUnavailable": true}
)

// JobCalls returns the recorded calls, oldest first.
func (s *Server) JobCalls() []JobCall {
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	return append([]JobCall{}, s.jobs.calls...)
}

// codepipelineAPI serves the shim's /__codepipeline endpoints; it says
// whether r was one.
func (s *Server) codepipelineAPI(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/__codepipeline" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.JobCalls())
	case r.URL.Path == "/__codepipeline/reset" && r.Method == http.MethodPost:
		s.jobs.mu.Lock()
		s.jobs.calls, s.jobs.done = nil, nil
		s.jobs.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		return false
	}
	return true
}

// codepipeline answers a request to codepipeline.<region>.amazonaws.com.
func (s *Server) codepipeline(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "CodePipeline_20150709.")
	if r.Method != http.MethodPost || !ok || (op != "PutJobSuccessResult" && op != "PutJobFailureResult") {
		jobError(w, http.StatusBadRequest, "UnknownOperationException", fmt.Sprintf("localeks shim: codepipeline %s is not played (only PutJobSuccessResult and PutJobFailureResult)", target))
		return
	}
	var in struct {
		JobID             *string                   `json:"jobId"`
		ContinuationToken *string                   `json:"continuationToken"`
		OutputVariables   map[string]string         `json:"outputVariables"`
		FailureDetails    *FailureDetails           `json:"failureDetails"`
		CurrentRevision   json.RawMessage           `json:"currentRevision"`
		ExecutionDetails  *struct{ Summary string } `json:"executionDetails"`
	}
	call := JobCall{Result: "success", AccessKeyID: accessKeyID(r.Header.Get("Authorization")), Time: time.Now().UTC()}
	if op == "PutJobFailureResult" {
		call.Result = "failure"
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	status, errType, msg := http.StatusOK, "", ""
	if err != nil {
		status, errType, msg = http.StatusBadRequest, "SerializationException", err.Error()
	} else {
		if in.JobID != nil {
			call.JobID = *in.JobID
		}
		if in.ContinuationToken != nil {
			call.ContinuationToken = *in.ContinuationToken
		}
		call.OutputVariables, call.FailureDetails = in.OutputVariables, in.FailureDetails
		if in.ExecutionDetails != nil {
			call.ExecutionSummary = in.ExecutionDetails.Summary
		}
		errType, msg = checkJobCall(op, call, in.ContinuationToken != nil)
		if errType == "" {
			s.jobs.mu.Lock()
			if s.jobs.done[call.JobID] {
				errType, msg = "InvalidJobStateException", "Job "+call.JobID+" is in state Succeeded or Failed: it was answered already"
			} else if call.ContinuationToken == "" {
				if s.jobs.done == nil {
					s.jobs.done = map[string]bool{}
				}
				s.jobs.done[call.JobID] = true
			}
			s.jobs.mu.Unlock()
		}
		if errType != "" {
			status = http.StatusBadRequest
		}
	}
	call.Status, call.Error = status, errType
	s.jobs.mu.Lock()
	s.jobs.calls = append(s.jobs.calls, call)
	s.jobs.mu.Unlock()
	slog.Info("codepipeline", "op", op, "job", call.JobID, "status", status, "error", errType)
	if errType != "" {
		jobError(w, status, errType, msg)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", "localeks-"+call.Time.Format("150405.000000000"))
	_, _ = io.WriteString(w, "{}")
}

// checkJobCall applies CodePipeline's checks of the request.
func checkJobCall(op string, c JobCall, hasToken bool) (string, string) {
	switch {
	case !jobIDPattern.MatchString(c.JobID):
		return "ValidationException", fmt.Sprintf("1 validation error detected: Value '%s' at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", c.JobID)
	case hasToken && (len(c.ContinuationToken) < 1 || len(c.ContinuationToken) > 2048):
		return "ValidationException", "continuationToken must be 1 to 2048 characters"
	case len(c.ExecutionSummary) > 2048:
		return "ValidationException", "executionDetails.summary must be at most 2048 characters"
	}
	if op == "PutJobFailureResult" {
		switch {
		case c.FailureDetails == nil:
			return "ValidationException", "1 validation error detected: Value null at 'failureDetails' failed to satisfy constraint: Member must not be null"
		case !failureTypes[c.FailureDetails.Type]:
			return "ValidationException", fmt.Sprintf("Value '%s' at 'failureDetails.type' failed to satisfy constraint: Member must satisfy enum value set: [JobFailed, ConfigurationError, PermissionError, RevisionOutOfSync, RevisionUnavailable, SystemUnavailable]", c.FailureDetails.Type)
		case len(c.FailureDetails.Message) < 1 || len(c.FailureDetails.Message) > 5000:
			return "ValidationException", "failureDetails.message must be 1 to 5000 characters"
		}
		return "", ""
	}
	if hasToken && len(c.OutputVariables) > 0 {
		return "ValidationException", "outputVariables can only be included when there is no continuation token"
	}
	for k, v := range c.OutputVariables {
		if !outputNamePattern.MatchString(k) || len(k) > 128 || len(v) > 1000 {
			return "ValidationException", fmt.Sprintf("output variable %q: a name of [A-Za-z0-9@-_], a value of at most 1000 characters", k)
		}
	}
	return "", ""
}

func jobError(w http.ResponseWriter, status int, errType, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", errType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": errType, "message": msg})
}
