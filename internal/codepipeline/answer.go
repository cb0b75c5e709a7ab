package codepipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// An Answer's Result.
const (
	Success  = "success"
	Continue = "continue" // success with a continuationToken: CodePipeline invokes the function again
	Failure  = "failure"
)

// Answer is what a function answers CodePipeline for a job.
type Answer struct {
	JobID             string            `json:"jobId"`
	Result            string            `json:"result"` // Success, Continue, Failure
	ContinuationToken string            `json:"continuationToken,omitempty"`
	OutputVariables   map[string]string `json:"outputVariables,omitempty"`
	FailureType       string            `json:"failureType,omitempty"`
	Message           string            `json:"message,omitempty"`
	// Code is a failure's error code, for the metrics (FailureCode).
	Code invoke.Code `json:"code,omitempty"`
}

// Failed is the answer of a job that failed with err: its failureType
// follows the error's code, its message names the code.
func Failed(err error) Answer {
	e := invoke.AsError(err)
	return Answer{Result: Failure, FailureType: failureType(e.Code), Message: Message(string(e.Code) + ": " + e.Message), Code: e.Code}
}

// failureType is CodePipeline's failureDetails.type for an error code.
func failureType(c invoke.Code) string {
	switch c {
	case invoke.InvalidEvent:
		return "ConfigurationError"
	case invoke.Forbidden, invoke.Unauthorized:
		return "PermissionError"
	case invoke.Unavailable:
		return "SystemUnavailable"
	}
	return "JobFailed"
}

// Message fits a message in CodePipeline's 5,000 characters (redacted, as
// every message the functions write).
func Message(s string) string {
	s = invoke.Redact(s)
	if len(s) > 4900 {
		s = s[:4900] + " ..."
	}
	return s
}

// Send sends the answer with the function's own credentials (cfg), retried
// within ctx: CodePipeline waits for it until the action's timeout. It gives
// up invoke.DeadlineMargin before ctx's deadline (as the custom-resource
// engine's answer does), so that an answer that cannot be delivered ends
// as the invocation's Unavailable error, which Lambda retries, not as a
// killed invocation.
func Send(ctx context.Context, cfg aws.Config, log *slog.Logger, a Answer) error {
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-invoke.DeadlineMargin))
		defer cancel()
	}
	op, body := "PutJobSuccessResult", map[string]any{"jobId": a.JobID}
	switch a.Result {
	case Continue:
		body["continuationToken"] = a.ContinuationToken
		body["executionDetails"] = map[string]any{"summary": truncate(a.Message, 2048)}
	case Success:
		body["outputVariables"] = a.OutputVariables
		body["executionDetails"] = map[string]any{"summary": truncate(a.Message, 2048)}
	default:
		op = "PutJobFailureResult"
		body = map[string]any{"jobId": a.JobID, "failureDetails": map[string]any{"type": a.FailureType, "message": a.Message}}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	var last error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				err := fmt.Errorf("answer codepipeline job %s: %w (last: %w)", a.JobID, ctx.Err(), last)
				return &invoke.Error{Code: invoke.Unavailable, Err: err, Message: invoke.Redact(err.Error())}
			case <-time.After(time.Duration(attempt) * 300 * time.Millisecond):
			}
		}
		retry, err := putJobResult(ctx, cfg, op, payload)
		if err == nil {
			log.InfoContext(ctx, "codepipeline answered", "job", a.JobID, "op", op, "result", a.Result)
			return nil
		}
		if errors.Is(err, errJobAnswered) {
			// A duplicate delivery of a job another invocation answered:
			// CodePipeline keeps that answer; this one did the same work.
			log.WarnContext(ctx, "codepipeline job answered already", "job", a.JobID, "op", op, "result", a.Result)
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return &invoke.Error{Code: invoke.Unavailable, Err: last, Message: fmt.Sprintf("answer codepipeline job %s (%s): %v", a.JobID, op, last)}
}

// putJobResult sends one CodePipeline call (AWS JSON 1.1, SigV4) and says
// whether a failure is worth retrying.
func putJobResult(ctx context.Context, cfg aws.Config, op string, payload []byte) (bool, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	region := cfg.Region
	endpoint := "https://codepipeline." + region + ".amazonaws.com/"
	req, err := http.NewRequestWithContext(actx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "CodePipeline_20150709."+op)
	if cfg.Credentials == nil {
		return false, errors.New("aws credentials: none configured")
	}
	creds, err := cfg.Credentials.Retrieve(actx)
	if err != nil {
		return true, fmt.Errorf("aws credentials: %w", err)
	}
	sum := sha256.Sum256(payload)
	if err := v4.NewSigner().SignHTTP(actx, creds, req, hex.EncodeToString(sum[:]), "codepipeline", region, time.Now()); err != nil {
		return false, err
	}
	client := cfg.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return false, nil
	}
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(b, &e)
	if strings.HasSuffix(e.Type, "InvalidJobStateException") {
		return false, fmt.Errorf("%s: %w: %s", op, errJobAnswered, invoke.Redact(e.Message))
	}
	retry := resp.StatusCode >= 500 || strings.Contains(e.Type, "Throttling")
	return retry, fmt.Errorf("%s: %d %s: %s", op, resp.StatusCode, e.Type, invoke.Redact(e.Message))
}

// errJobAnswered is CodePipeline's InvalidJobStateException: the job
// succeeded or failed already.
var errJobAnswered = errors.New("the job was answered already")

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
