package cfnresource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/cfn"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// CloudFormation's limits on a response.
const (
	MaxResponseBytes   = 4096
	MaxPhysicalIDBytes = 1024
)

// trimmedMark ends a Reason that was cut to fit the body's limit.
const trimmedMark = " [trimmed]"

// encodeResponse returns the body of r within CloudFormation's 4,096 bytes:
// the Reason is trimmed (never the ids); Data too large to fit with an empty
// Reason turns the answer into FAILED saying so.
func encodeResponse(r cfn.Response) ([]byte, error) {
	if r.Status == cfn.StatusFailed && r.Reason == "" {
		r.Reason = "failed" // CloudFormation requires a Reason on FAILED
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) <= MaxResponseBytes {
		return b, nil
	}
	bare := r
	bare.Reason = ""
	if b, err = json.Marshal(bare); err != nil {
		return nil, err
	}
	if len(b)+len(`,"Reason":""`)+len(trimmedMark) > MaxResponseBytes && len(r.Data) > 0 {
		r = cfn.Response{Status: cfn.StatusFailed, PhysicalResourceID: r.PhysicalResourceID, StackID: r.StackID,
			RequestID: r.RequestID, LogicalResourceID: r.LogicalResourceID,
			Reason: fmt.Sprintf("%s: the outputs (Data) take %d bytes of JSON, more than a response of at most %d bytes can hold; read fewer or shorter values",
				invoke.InvalidEvent, dataBytes(r.Data), MaxResponseBytes)}
		return encodeResponse(r)
	}
	// Binary search for the longest prefix of the Reason that fits; JSON
	// escaping makes the encoded length of a prefix hard to predict.
	runes := []rune(r.Reason)
	lo, hi := 0, len(runes) // lo fits (an empty Reason fits), hi may not
	var best []byte
	for lo < hi {
		mid := (lo + hi + 1) / 2
		r.Reason = string(runes[:mid]) + trimmedMark
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		if len(b) <= MaxResponseBytes {
			lo, best = mid, b
		} else {
			hi = mid - 1
		}
	}
	if best == nil {
		r.Reason = strings.TrimSpace(trimmedMark)
		if best, err = json.Marshal(r); err != nil {
			return nil, err
		}
	}
	return best, nil
}

func dataBytes(d map[string]any) int {
	b, _ := json.Marshal(d)
	return len(b)
}

// putResult is what became of a response PUT.
type putResult struct {
	Attempts   int
	StatusCode int // of the last attempt; 0 if none answered
}

// put PUTs body to the presigned responseURL, with no Content-Type
// (CloudFormation's presigned URL is signed for an empty one). Connection
// errors and 5xx answers are retried until ctx ends, pausing backoff(n)
// before the n-th retry; any other answer but 2xx is final. Errors never
// contain the URL's query.
func (s *Server) put(ctx context.Context, responseURL string, body []byte) (putResult, error) {
	var res putResult
	for {
		res.Attempts++
		code, err := s.putOnce(ctx, responseURL, body)
		res.StatusCode = code
		switch {
		case err == nil && code >= 200 && code < 300:
			return res, nil
		case err == nil && code < 500:
			return res, fmt.Errorf("PUT %s: answered %d", SafeURL(responseURL), code)
		case err == nil:
			err = fmt.Errorf("PUT %s: answered %d", SafeURL(responseURL), code)
		}
		t := time.NewTimer(s.backoff(res.Attempts))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("%w (gave up after %d attempts: %w)", err, res.Attempts, ctx.Err())
		case <-t.C:
		}
	}
}

func (s *Server) putOnce(ctx context.Context, responseURL string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.putAttempt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, responseURL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("PUT %s: %s", SafeURL(responseURL), invoke.Redact(err.Error()))
	}
	req.ContentLength = int64(len(body))
	resp, err := s.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its message repeats the URL with the signature
		}
		return 0, &putError{url: SafeURL(responseURL), err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// putError is a PUT that got no answer; its text names the URL without its
// query and its cause redacted, and the cause stays in the chain.
type putError struct {
	url string
	err error
}

func (e *putError) Error() string { return "PUT " + e.url + ": " + invoke.Redact(e.err.Error()) }

func (e *putError) Unwrap() error { return e.err }

// defaultBackoff is the pause before each retry of the PUT, the last repeated.
func defaultBackoff(attempt int) time.Duration {
	steps := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	return steps[min(max(attempt, 1), len(steps))-1]
}
