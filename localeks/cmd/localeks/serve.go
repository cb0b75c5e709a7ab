package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
// when given) as lambda-eks-helm; the lifecycle function
// (--lifecycle-bootstrap, when given) as lambda-eks-lifecycle. serve
// registers itself at the shim's /__lambda, so that a function's Invoke of
// itself (or of another) through AWS's endpoint reaches it
// (lambdart.InvokeAPI answers as the Lambda service does).
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var ff functionFlags
	ff.register(fs, 30*time.Second)
	helmBootstrap := fs.String("helm-bootstrap", "", "the Helm function's binary (./cmd/helm), served as lambda-eks-helm; none: no Helm function")
	lifecycleBootstrap := fs.String("lifecycle-bootstrap", "", "the lifecycle function's binary (./cmd/lifecycle), served as lambda-eks-lifecycle; none: no lifecycle function")
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
	if *lifecycleBootstrap != "" {
		lc := ff
		lc.lifecycle = true
		lc.parsed(fs)
		lcFn, err := lc.startFunction(ctx, s, cfg, lifecycleFunction, *lifecycleBootstrap)
		if err != nil {
			return err
		}
		defer lcFn.Stop()
		fns[lifecycleFunction.name] = lcFn
	}
	srv := &http.Server{Handler: lambdart.InvokeAPI(fns), ReadHeaderTimeout: 10 * time.Second}
	unregister, err := registerInvokeAPI(ctx, s, "http://"+addr, nil)
	if err != nil {
		return err
	}
	defer unregister()
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
