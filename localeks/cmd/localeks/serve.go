package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
)

// serve keeps one warm function behind the Lambda Invoke API on loopback
// until interrupted, so that any Lambda client works:
//
//	aws lambda invoke --endpoint-url http://127.0.0.1:9000 --function-name function --payload '{}' out.json
//
// aws-lambda-rie serves the same path, but marks no function error and
// panics on overlapping invocations: in front of it, serve queues
// invocations (one sandbox, like a function with reserved concurrency 1) and
// answers as the Lambda service does (X-Amz-Function-Error, 200).
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var ff functionFlags
	ff.register(fs, 30*time.Second)
	port := fs.Int("port", 9000, "loopback `port` of the Invoke API")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	fn, _, err := ff.start(ctx)
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer fn.Stop()
	srv := &http.Server{Handler: invokeAPI(fn), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	slog.Info("serving the function (Ctrl-C to stop; the replica keeps running)", "endpoint", "http://"+addr,
		"try", "aws lambda invoke --endpoint-url http://"+addr+" --function-name function --payload '{}' out.json")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// invokeAPI answers the Lambda Invoke API
// (POST /2015-03-31/functions/NAME/invocations) for one function, whatever
// NAME: RequestResponse, Event (202, run in the background) and DryRun (204),
// with the log tail when asked (X-Amz-Log-Type: Tail, `aws lambda invoke
// --log-type Tail`).
func invokeAPI(fn *lambdart.Function) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
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
			go func() {
				// Queued behind any running invocation, as Lambda's async queue.
				if _, fnErr, err := fn.Invoke(context.WithoutCancel(r.Context()), payload); err != nil || fnErr != nil {
					slog.Warn("asynchronous invocation failed", "err", err, "functionError", fnErr)
				}
			}()
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
			slog.Info("invocation failed", "function", r.PathValue("name"), "errorType", fnErr.Type, "took", time.Since(start).Round(time.Microsecond))
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			resp, _ = json.Marshal(fnErr)
		} else {
			slog.Info("invocation succeeded", "function", r.PathValue("name"), "took", time.Since(start).Round(time.Microsecond))
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
