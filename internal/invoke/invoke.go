package invoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
)

// DeadlineMargin is kept between a function's own deadline and Lambda's, so
// that a slow request ends in a Timeout error, not a killed invocation.
const DeadlineMargin = 500 * time.Millisecond

// MaxWait is Lambda's 15-minute cap; a wait is further bounded by the
// function's own timeout.
const MaxWait = 15 * time.Minute

// WithMargin returns ctx whose deadline is Lambda's less DeadlineMargin, or
// now plus MaxWait when ctx has none (a test, a local run).
func WithMargin(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(MaxWait + DeadlineMargin)
	}
	return context.WithDeadline(ctx, deadline.Add(-DeadlineMargin))
}

// Finish ends an invocation that began at start: resp as JSON, logged as
// "invocation done" with what done says of it; or err, logged as
// "invocation failed" and returned as Lambda reports it (errorType is its
// code). Both records carry ctx's request id, and the invocation's
// metrics record (metrics.go) follows them.
func Finish[T any](ctx context.Context, log *slog.Logger, start time.Time, resp T, err error, done func(T) []any) ([]byte, error) {
	var out []byte
	if err == nil {
		out, err = MarshalResponse(resp)
	}
	if err != nil {
		e := AsError(err)
		log.ErrorContext(ctx, "invocation failed", "code", string(e.Code), "error", e.Message,
			"duration_ms", time.Since(start).Milliseconds())
		observe(ctx, start, nil, nil, e.Code)
		return nil, e.LambdaError()
	}
	attrs := done(resp)
	log.InfoContext(ctx, "invocation done", append(attrs, "duration_ms", time.Since(start).Milliseconds())...)
	observe(ctx, start, resp, attrs, "")
	return out, nil
}

// MarshalResponse writes resp as aws-lambda-go writes a handler's value: no
// HTML escaping, no trailing newline.
func MarshalResponse(resp any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(resp); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
