package handler

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
)

// CloudFormation's limits on a response.
const (
	maxResponseBytes   = 4096
	maxPhysicalIDBytes = 1024
)

// Response statuses.
const (
	statusSuccess = "SUCCESS"
	statusFailed  = "FAILED"
)

// cfnResponse is the body PUT to the ResponseURL.
type cfnResponse struct {
	Status             string            `json:"Status"`
	Reason             string            `json:"Reason,omitempty"`
	PhysicalResourceID string            `json:"PhysicalResourceId"`
	StackID            string            `json:"StackId"`
	RequestID          string            `json:"RequestId"`
	LogicalResourceID  string            `json:"LogicalResourceId"`
	NoEcho             bool              `json:"NoEcho,omitempty"`
	Data               map[string]string `json:"Data,omitempty"`
}

// trimmedMark ends a Reason that was cut to fit the body's limit.
const trimmedMark = " [trimmed]"

// encodeResponse returns the body of r within CloudFormation's 4,096 bytes:
// the Reason is trimmed (never the ids); Data too large to fit with an empty
// Reason turns the answer into FAILED saying so.
func encodeResponse(r cfnResponse) ([]byte, error) {
	if r.Status == statusFailed && r.Reason == "" {
		r.Reason = "failed" // CloudFormation requires a Reason on FAILED
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) <= maxResponseBytes {
		return b, nil
	}
	bare := r
	bare.Reason = ""
	if b, err = json.Marshal(bare); err != nil {
		return nil, err
	}
	if len(b)+len(`,"Reason":""`)+len(trimmedMark) > maxResponseBytes && len(r.Data) > 0 {
		r = cfnResponse{Status: statusFailed, PhysicalResourceID: r.PhysicalResourceID, StackID: r.StackID,
			RequestID: r.RequestID, LogicalResourceID: r.LogicalResourceID,
			Reason: fmt.Sprintf("%s: the outputs (Data) take %d bytes of JSON, more than a response of at most %d bytes can hold; read fewer or shorter values",
				InvalidEvent, dataBytes(r.Data), maxResponseBytes)}
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
		if len(b) <= maxResponseBytes {
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

func dataBytes(d map[string]string) int {
	b, _ := json.Marshal(d)
	return len(b)
}

// checkResponseURL accepts only an https URL of an AWS host: the function
// PUTs a body there, and nothing else should be reachable that way.
func checkResponseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return invalid("ResponseURL is not an https URL")
	}
	host := u.Hostname()
	if !strings.HasSuffix(host, ".amazonaws.com") && !strings.HasSuffix(host, ".amazonaws.com.cn") {
		return invalid("ResponseURL host %q is not an AWS host (*.amazonaws.com)", host)
	}
	return nil
}

// safeURL is a ResponseURL fit for logs and messages: without its query,
// which holds the presigned signature and credentials.
func safeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// putResult is what became of a response PUT.
type putResult struct {
	Attempts   int
	StatusCode int // of the last attempt; 0 if none answered
}

// putBackoff is the pause before each retry of the PUT, the last repeated.
var putBackoff = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}

// putResponse PUTs body to the presigned responseURL, with no Content-Type
// (CloudFormation's presigned URL is signed for an empty one). Connection
// errors and 5xx answers are retried until ctx ends; any other answer but
// 2xx is final. Errors never contain the URL's query.
func putResponse(ctx context.Context, client *http.Client, responseURL string, body []byte) (putResult, error) {
	var res putResult
	for {
		res.Attempts++
		code, err := putOnce(ctx, client, responseURL, body)
		res.StatusCode = code
		switch {
		case err == nil && code >= 200 && code < 300:
			return res, nil
		case err == nil && code < 500:
			return res, fmt.Errorf("PUT %s: answered %d", safeURL(responseURL), code)
		case err == nil:
			err = fmt.Errorf("PUT %s: answered %d", safeURL(responseURL), code)
		}
		pause := putBackoff[min(res.Attempts-1, len(putBackoff)-1)]
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("%w (gave up after %d attempts: %w)", err, res.Attempts, ctx.Err())
		case <-time.After(pause):
		}
	}
}

// putAttempt bounds one PUT, so that a stalled connection leaves time to
// try another within the deadline.
const putAttempt = 5 * time.Second

func putOnce(ctx context.Context, client *http.Client, responseURL string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, putAttempt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, responseURL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("PUT %s: %s", safeURL(responseURL), redact(err.Error()))
	}
	req.ContentLength = int64(len(body))
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its message repeats the URL with the signature
		}
		return 0, fmt.Errorf("PUT %s: %s", safeURL(responseURL), redact(err.Error()))
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
