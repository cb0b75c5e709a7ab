package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// localeks lifecycle EVENT_FILE|-
//
// runs the lifecycle function for one EventBridge event (aws.autoscaling,
// aws.ec2, aws.health) as EventBridge and the services behind it would:
//   - for an EC2 Instance-terminate or -launch Lifecycle Action, the
//     replica plays the Auto Scaling group that sent it: the event's detail
//     is registered at the shim as the pending lifecycle action
//     (/__lifecycle/actions), which CompleteLifecycleAction and
//     RecordLifecycleActionHeartbeat then act on;
//   - the function is served behind a Lambda Invoke API on loopback,
//     registered at the shim's /__lambda for its name, so that its Invoke
//     of itself (X-Amz-Invocation-Type: Event, a continuation of a long
//     drain) runs, queued after the running invocation as Lambda does;
//   - the first invocation's response is printed on stdout; then it waits,
//     at most --wait, until no asynchronous invocation is queued or
//     running, logging each continuation's result and finally the
//     lifecycle action's state on stderr.
//
// Exit status: 0 when every invocation succeeded, 1 when one failed (the
// first one's error payload is printed), 2 usage, 4 harness failure (also
// when continuations still run at --wait). Flags as for invoke, and --wait.

// maxContinuationWait bounds the wait for continuations by default.
const maxContinuationWait = 15 * time.Minute

func lifecycleInvoke(ctx context.Context, args []string) int {
	c := eventCommand{name: "lifecycle"}
	c.lifecycle = true
	wait := maxContinuationWait
	if code := c.parse(args, lifecycleTimeout, func(fs *flag.FlagSet) {
		fs.DurationVar(&wait, "wait", maxContinuationWait, "how long to wait for the function's continuations")
	}); code != 0 {
		return code
	}
	s, cfg, err := c.up(ctx, false)
	if err != nil {
		return c.fail(err)
	}
	token, err := registerLifecycleAction(ctx, s, c.event)
	if err != nil {
		return c.fail(err)
	}
	fn, key, err := c.startFunctionAs(ctx, s, cfg, lifecycleFunction, c.bootstrap)
	if err != nil {
		return c.fail(err)
	}
	defer fn.Stop()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return c.fail(err)
	}
	srv := &http.Server{Handler: lambdart.InvokeAPI(map[string]*lambdart.Function{lifecycleFunction.name: fn}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	// For this function's calls only: another run may serve the same name.
	unregister, err := registerInvokeAPI(ctx, s, "http://"+ln.Addr().String(), []string{key}, lifecycleFunction.name)
	if err != nil {
		return c.fail(err)
	}
	defer unregister()

	code := 0
	resp, fnErr, took, err := timedInvoke(ctx, fn, c.event)
	if err != nil {
		return c.fail(err)
	}
	if fnErr != nil {
		code = functionFailed("invocation failed", fnErr, took.Round(time.Microsecond))
	} else {
		slog.Info("invocation succeeded", "took", took.Round(time.Microsecond))
		fmt.Println(string(bytes.TrimSpace(resp)))
	}
	if err := waitContinuations(ctx, fn, wait); err != nil {
		return c.fail(err)
	}
	for _, r := range fn.AsyncResults() {
		if r.Err != nil || r.Error != nil {
			code = 1
		}
	}
	if token != "" {
		logLifecycleAction(ctx, s, token)
	}
	return code
}

// waitContinuations waits, at most wait, until fn has no asynchronous
// invocation queued or running, logging progress.
func waitContinuations(ctx context.Context, fn *lambdart.Function, wait time.Duration) error {
	if fn.Pending() == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	for {
		slog.Info("waiting for the function's continuations", "queued or running", fn.Pending(),
			"finished", len(fn.AsyncResults()), "waited", time.Since(start).Round(time.Second))
		step, stop := context.WithTimeout(ctx, 10*time.Second)
		err := fn.WaitAsync(step)
		stop()
		if err == nil {
			slog.Info("no continuation queued or running", "continuations", len(fn.AsyncResults()), "waited", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("continuations still queued or running after %s: %d", wait, fn.Pending())
		}
	}
}

// registerLifecycleAction registers an EC2 Instance-terminate or -launch
// Lifecycle Action event's detail at the shim, as the group that sent it
// would wait on it, and returns its token; "" for any other event.
func registerLifecycleAction(ctx context.Context, s *stack.Stack, event []byte) (string, error) {
	var ev struct {
		DetailType string          `json:"detail-type"`
		Source     string          `json:"source"`
		Detail     json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(event, &ev) != nil || ev.Source != "aws.autoscaling" ||
		(ev.DetailType != "EC2 Instance-terminate Lifecycle Action" && ev.DetailType != "EC2 Instance-launch Lifecycle Action") {
		return "", nil
	}
	var d shim.LifecycleDetail
	if json.Unmarshal(ev.Detail, &d) != nil || d.LifecycleActionToken == "" {
		return "", nil // a test notification: no action waits
	}
	added, err := s.RegisterLifecycleAction(ctx, d)
	if err != nil {
		return "", err
	}
	if added {
		slog.Info("lifecycle action pending", "asg", d.AutoScalingGroupName, "hook", d.LifecycleHookName, "instance", d.EC2InstanceID, "token", d.LifecycleActionToken)
	} else {
		slog.Info("lifecycle action already registered (left as it is)", "token", d.LifecycleActionToken)
	}
	return d.LifecycleActionToken, nil
}

// logLifecycleAction logs the state of the lifecycle action of token and
// the calls that named it.
func logLifecycleAction(ctx context.Context, s *stack.Stack, token string) {
	rec, err := s.Lifecycle(ctx)
	if err != nil {
		slog.Warn("read the lifecycle action", "err", err)
		return
	}
	for _, c := range rec.Calls {
		if c.Token == token {
			slog.Info("lifecycle call", "op", c.Op, "result", c.Result, "status", c.Status, "error", c.Error)
		}
	}
	for _, a := range rec.Actions {
		if a.Token == token {
			slog.Info("lifecycle action", "instance", a.InstanceID, "hook", a.LifecycleHookName, "state", a.State, "result", a.Result, "heartbeats", a.Heartbeats)
		}
	}
}

// registerInvokeAPI registers endpoint at the shim's /__lambda for the
// named functions (none: for any) called by callers (access key IDs; none:
// by anyone), and returns what withdraws it. A shim
// that predates it is warned about: the function's Invoke of itself fails.
func registerInvokeAPI(ctx context.Context, s *stack.Stack, endpoint string, callers []string, functions ...string) (func(), error) {
	unregister, err := s.RegisterInvokeAPIFrom(ctx, endpoint, callers, functions...)
	if errors.Is(err, stack.ErrShimOutdated) {
		slog.Warn("the replica's shim predates Lambda Invoke forwarding: a function's Invoke of itself will fail (run `localeks up` with this build)")
		return func() {}, nil
	}
	return unregister, err
}
