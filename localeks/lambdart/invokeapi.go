package lambdart

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// The replica's region and account, as ARNs in the Invoke API's refusals
// name them (localeks/stack's Region and Account).
const (
	region  = "us-east-1"
	account = "123456789012"
)

// AsyncResult is the outcome of one asynchronous (Event) invocation.
type AsyncResult struct {
	Payload  []byte
	Response []byte
	// Error is the function's error; Err a failure of the emulator.
	Error  *FunctionError
	Err    error
	Queued time.Time
	Done   time.Time
}

// InvokeAsync queues an asynchronous invocation with payload, as Lambda's
// queue does for an Event invocation: it runs after any running or queued
// one, and its outcome is kept (AsyncResults) and logged. ctx's values
// reach it, not its cancellation.
func (f *Function) InvokeAsync(ctx context.Context, name string, payload []byte) {
	f.asyncMu.Lock()
	f.pending++
	f.asyncMu.Unlock()
	queued := time.Now()
	go func() {
		resp, fnErr, err := f.Invoke(context.WithoutCancel(ctx), payload)
		r := AsyncResult{Payload: payload, Response: resp, Error: fnErr, Err: err, Queued: queued, Done: time.Now()}
		took := r.Done.Sub(queued).Round(time.Millisecond)
		switch {
		case err != nil:
			slog.Warn("asynchronous invocation failed", "function", name, "err", err, "took", took)
		case fnErr != nil:
			slog.Warn("asynchronous invocation failed", "function", name, "errorType", fnErr.Type, "errorMessage", fnErr.Message, "took", took)
		default:
			slog.Info("asynchronous invocation succeeded", "function", name, "response", string(resp), "took", took)
		}
		f.asyncMu.Lock()
		f.results = append(f.results, r)
		f.pending--
		f.asyncMu.Unlock()
	}()
}

// Pending is how many asynchronous invocations are queued or running.
func (f *Function) Pending() int {
	f.asyncMu.Lock()
	defer f.asyncMu.Unlock()
	return f.pending
}

// AsyncResults returns the outcomes of the finished asynchronous
// invocations, in the order they finished.
func (f *Function) AsyncResults() []AsyncResult {
	f.asyncMu.Lock()
	defer f.asyncMu.Unlock()
	return append([]AsyncResult{}, f.results...)
}

// WaitAsync waits until no asynchronous invocation is queued or running,
// or ctx is done. An invocation that queues another keeps it waiting.
func (f *Function) WaitAsync(ctx context.Context) error {
	for f.Pending() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// FunctionARN is the ARN of a function of the replica's account.
func FunctionARN(name string) string {
	return "arn:aws:lambda:" + region + ":" + account + ":function:" + name
}

// FunctionName is the function an Invoke path names: a name, or a function
// ARN (with or without a version), as the Lambda service accepts.
func FunctionName(name string) string {
	if fields := strings.Split(name, ":"); len(fields) >= 7 && fields[0] == "arn" && fields[5] == "function" {
		return fields[6]
	}
	return name
}

// InvokeAPI answers the Lambda Invoke API
// (POST /2015-03-31/functions/NAME/invocations) for the functions by name
// (an unknown one is ResourceNotFoundException, 404): RequestResponse,
// Event (202, queued: InvokeAsync) and DryRun (204), with the log tail when
// asked (X-Amz-Log-Type: Tail, `aws lambda invoke --log-type Tail`).
//
// aws-lambda-rie serves the same path, but marks no function error and
// panics on overlapping invocations: in front of it, InvokeAPI queues each
// function's invocations (one sandbox, like a function with reserved
// concurrency 1) and answers as the Lambda service does
// (X-Amz-Function-Error, 200).
func InvokeAPI(fns map[string]*Function) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
		name := FunctionName(r.PathValue("name"))
		fn, ok := fns[name]
		if !ok {
			lambdaError(w, http.StatusNotFound, "ResourceNotFoundException",
				"Function not found: "+FunctionARN(strings.ToValidUTF8(name, "?")))
			return
		}
		payload, err := io.ReadAll(io.LimitReader(r.Body, 6<<20+1))
		if err != nil {
			lambdaError(w, http.StatusBadRequest, "InvalidRequestContentException", err.Error())
			return
		}
		if len(payload) > 6<<20 {
			lambdaError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "request payload exceeds 6 MB")
			return
		}
		if len(payload) == 0 {
			payload = []byte("{}")
		}
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		switch typ := r.Header.Get("X-Amz-Invocation-Type"); typ {
		case "", "RequestResponse":
		case "DryRun":
			w.WriteHeader(http.StatusNoContent)
			return
		case "Event":
			// Queued before the answer: whoever waits for the queue to
			// drain once the caller returns sees it.
			fn.InvokeAsync(r.Context(), name, payload)
			w.WriteHeader(http.StatusAccepted)
			return
		default:
			lambdaError(w, http.StatusBadRequest, "InvalidParameterValueException", "unknown X-Amz-Invocation-Type "+strings.ToValidUTF8(typ, "?"))
			return
		}
		start := time.Now()
		logStart := len(fn.Logs())
		resp, fnErr, err := fn.Invoke(r.Context(), payload)
		if err != nil {
			lambdaError(w, http.StatusBadGateway, "ServiceException", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("X-Amz-Log-Type") == "Tail" {
			// As Lambda: the last 4 KB of this invocation's log, base64. The
			// emulator's END line closes it; its output may trail the answer.
			logs := fn.Logs()[logStart:]
			for wait := 0; wait < 20 && !bytes.Contains(logs, []byte("END RequestId")); wait++ {
				time.Sleep(25 * time.Millisecond)
				logs = fn.Logs()[logStart:]
			}
			if len(logs) > 4096 {
				logs = logs[len(logs)-4096:]
			}
			w.Header().Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString(logs))
		}
		if fnErr != nil {
			slog.Info("invocation failed", "function", name, "errorType", fnErr.Type, "took", time.Since(start).Round(time.Microsecond))
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			resp, _ = json.Marshal(fnErr)
		} else {
			slog.Info("invocation succeeded", "function", name, "took", time.Since(start).Round(time.Microsecond))
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(resp)
	})
	return mux
}

// lambdaError answers as the Lambda service does when it refuses a call.
func lambdaError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"Type": "User", "message": msg})
}
