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
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// serve keeps the functions warm behind the Lambda Invoke API on loopback
// until interrupted, one function name each, so that any Lambda client
// works:
//
//	aws lambda invoke --endpoint-url http://127.0.0.1:9000 --no-sign-request --region us-east-1 \
//	    --function-name lambda-eks --payload fileb://events/ensure-nginx.json out.json
//
// The main function (--bootstrap) answers as lambda-eks and as function
// (aws-lambda-rie's own name for it); the Helm function (--helm-bootstrap,
// when given) as lambda-eks-helm.
//
// aws-lambda-rie serves the same path, but marks no function error and
// panics on overlapping invocations: in front of it, serve queues each
// function's invocations (one sandbox, like a function with reserved
// concurrency 1) and answers as the Lambda service does
// (X-Amz-Function-Error, 200).
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var ff functionFlags
	ff.register(fs, 30*time.Second)
	helmBootstrap := fs.String("helm-bootstrap", "", "the Helm function's binary (./cmd/helm), served as lambda-eks-helm; none: only the main function")
	port := fs.Int("port", 9000, "loopback `port` of the Invoke API")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer func() { _ = ln.Close() }()
	s, cfg, err := ff.up(ctx, *helmBootstrap != "")
	if err != nil {
		return err
	}
	fns := map[string]*lambdart.Function{}
	mainFn, err := ff.startFunction(ctx, s, cfg, mainFunction, ff.bootstrap)
	if err != nil {
		return err
	}
	defer mainFn.Stop()
	fns[mainFunction.name], fns["function"] = mainFn, mainFn
	if *helmBootstrap != "" {
		helm := ff
		helm.helm = true
		helm.parsed(fs)
		helmFn, err := helm.startFunction(ctx, s, cfg, helmFunction, *helmBootstrap)
		if err != nil {
			return err
		}
		defer helmFn.Stop()
		fns[helmFunction.name] = helmFn
	}
	srv := &http.Server{Handler: invokeAPI(fns), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	names := slices.Sorted(maps.Keys(fns))
	slog.Info("serving the functions (Ctrl-C to stop; the replica keeps running)", "endpoint", "http://"+addr,
		"functions", strings.Join(names, ","),
		"try", "aws lambda invoke --endpoint-url http://"+addr+" --no-sign-request --region "+stack.Region+
			" --function-name "+mainFunction.name+" --payload fileb://events/ensure-nginx.json out.json")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// functionName is the function an Invoke path names: a name, or a function
// ARN (with or without a version), as the Lambda service accepts.
func functionName(name string) string {
	if fields := strings.Split(name, ":"); len(fields) >= 7 && fields[0] == "arn" && fields[5] == "function" {
		return fields[6]
	}
	return name
}

// invokeAPI answers the Lambda Invoke API
// (POST /2015-03-31/functions/NAME/invocations) for the functions by name
// (an unknown one is ResourceNotFoundException, 404): RequestResponse, Event (202, run in the background) and DryRun (204),
// with the log tail when asked (X-Amz-Log-Type: Tail, `aws lambda invoke
// --log-type Tail`).
func invokeAPI(fns map[string]*lambdart.Function) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
		name := functionName(r.PathValue("name"))
		fn, ok := fns[name]
		if !ok {
			lambdaError(w, http.StatusNotFound, "ResourceNotFoundException",
				"Function not found: arn:aws:lambda:"+stack.Region+":"+stack.Account+":function:"+strings.ToValidUTF8(name, "?"))
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
