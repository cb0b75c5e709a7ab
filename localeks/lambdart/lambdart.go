// Package lambdart runs a real `provided` runtime binary (bootstrap) under
// AWS's Lambda Runtime Interface Emulator (aws-lambda-rie, the emulator that
// `sam local invoke` runs inside its container), on loopback, without Docker,
// and invokes it through the emulator's Invoke API.
//
// One Function is one execution environment: the emulator starts the
// bootstrap on the first invocation (cold), and each later Invoke is a warm
// invocation of the same process. After a timeout or a crash the emulator
// starts a new process on the next invocation, as Lambda does.
//
// The project's own Runtime API emulator is retired. What the official one
// does not do, this client does around it:
//   - it marks no function error (no X-Amz-Function-Error header; an error
//     payload comes back with 200): an answer that is exactly an error payload
//     (errorType, errorMessage, optional stackTrace) is a FunctionError;
//   - it panics on a second invocation while one is running: Invoke
//     serialises them, like one sandbox;
//   - its deadline is in whole seconds (AWS_LAMBDA_FUNCTION_TIMEOUT): a
//     timeout is rounded up to the next second;
//   - it hands its own environment to the function: the emulator gets only
//     the standard Lambda environment plus the caller's variables.
package lambdart

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// InvokePath is the Lambda Invoke API path the emulator serves.
	InvokePath  = "/2015-03-31/functions/function/invocations"
	maxResponse = 6 << 20
	// startTimeout bounds how long the emulator may take to listen.
	startTimeout = 10 * time.Second
	// RIEVar names the emulator binary when no WithRIE option is given.
	RIEVar = "LOCALEKS_RIE"
)

// FunctionError is the error payload a function reports (or the emulator
// reports for it, as Lambda does for a timeout or a crash).
type FunctionError struct {
	Type       string          `json:"errorType"`
	Message    string          `json:"errorMessage"`
	StackTrace json.RawMessage `json:"stackTrace,omitempty"`
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// Option configures Start.
type Option func(*options)

type options struct {
	name   string
	memory int
	logs   io.Writer
	rie    string
}

// WithName sets the function name (default lambda-eks).
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithMemory sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE in MB (default 128).
func WithMemory(mb int) Option { return func(o *options) { o.memory = mb } }

// WithLogOutput copies the emulator's and the function's output to w as it
// comes.
func WithLogOutput(w io.Writer) Option { return func(o *options) { o.logs = w } }

// WithRIE names the aws-lambda-rie binary (default: $LOCALEKS_RIE).
func WithRIE(path string) Option { return func(o *options) { o.rie = path } }

// Function is a bootstrap behind a running aws-lambda-rie.
type Function struct {
	timeout time.Duration
	url     string
	cmd     *exec.Cmd
	logs    *LockedBuffer
	client  *http.Client
	exited  chan struct{}
	stop    sync.Once

	invokeMu sync.Mutex // the emulator takes one invocation at a time

	asyncMu sync.Mutex
	pending int // asynchronous invocations queued or running
	results []AsyncResult
}

// Start starts aws-lambda-rie on loopback ports with bin as the bootstrap,
// the standard Lambda environment plus env (later entries win), and timeout
// as the function's timeout. Neither inherits the caller's environment.
func Start(ctx context.Context, bin string, env []string, timeout time.Duration, opts ...Option) (*Function, error) {
	o := options{name: "lambda-eks", memory: 128, rie: os.Getenv(RIEVar)}
	for _, opt := range opts {
		opt(&o)
	}
	// A free port found here may be taken by another process before the
	// emulator binds it (it then exits): try again with other ports.
	for attempt := 1; ; attempt++ {
		f, err := startOnce(ctx, bin, env, timeout, o)
		if !errors.Is(err, errExitedAtStart) || attempt == 3 {
			return f, err
		}
	}
}

var errExitedAtStart = errors.New("aws-lambda-rie exited at start")

func startOnce(ctx context.Context, bin string, env []string, timeout time.Duration, o options) (*Function, error) {
	if o.rie == "" {
		return nil, fmt.Errorf("no aws-lambda-rie: set %s or pass WithRIE (localeks/parts/build.sh builds it)", RIEVar)
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("function binary: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	runtimeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	region := "us-east-1"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "AWS_REGION="); ok && v != "" {
			region = v
		}
	}
	seconds := int((timeout + time.Second - 1) / time.Second)
	std := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=en_US.UTF-8",
		"TZ=:UTC",
		"_HANDLER=bootstrap",
		"LAMBDA_TASK_ROOT=" + filepath.Dir(bin),
		"LAMBDA_RUNTIME_DIR=" + filepath.Dir(bin),
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"AWS_LAMBDA_FUNCTION_NAME=" + o.name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(o.memory),
		"AWS_LAMBDA_FUNCTION_TIMEOUT=" + strconv.Itoa(seconds),
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + o.name,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + randomHex(16),
		"AWS_LAMBDA_LOG_FORMAT=JSON",
		"AWS_LAMBDA_LOG_LEVEL=INFO",
		"AWS_REGION=" + region,
		"AWS_DEFAULT_REGION=" + region,
	}
	f := &Function{
		timeout: time.Duration(seconds) * time.Second,
		url:     "http://" + addr + InvokePath,
		logs:    &LockedBuffer{},
		client:  &http.Client{Transport: &http.Transport{Proxy: nil}},
		exited:  make(chan struct{}),
	}
	var out io.Writer = f.logs
	if o.logs != nil {
		out = io.MultiWriter(f.logs, o.logs)
	}
	f.cmd = exec.Command(o.rie, //nolint:gosec // G204: the emulator the caller chose
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", runtimeAddr,
		"--log-level", "error",
		bin)
	f.cmd.Env = append(std, env...)
	f.cmd.Dir = filepath.Dir(bin)
	f.cmd.Stdout = out
	f.cmd.Stderr = out
	// Its own process group; the emulator puts the bootstrap in another.
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.rie, err)
	}
	go func() {
		_ = f.cmd.Wait()
		close(f.exited)
	}()
	if err := f.waitListening(ctx, addr); err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

func (f *Function) waitListening(ctx context.Context, addr string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-f.exited:
			return fmt.Errorf("%w:\n%s", errExitedAtStart, f.logs.Bytes())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("aws-lambda-rie not listening on %s after %s: %w", addr, startTimeout, err)
		}
	}
}

// Invoke delivers one event and waits for the function's answer. fnErr is
// the function's error payload (or Sandbox.Timedout / Runtime.ExitError, as
// the emulator reports them); err is a failure of the emulator or of ctx.
// The payload goes as it is: like the emulator, and unlike the Lambda
// service, Invoke does not refuse a payload that is not JSON.
func (f *Function) Invoke(ctx context.Context, event []byte) (response []byte, fnErr *FunctionError, err error) {
	f.invokeMu.Lock()
	defer f.invokeMu.Unlock()
	select {
	case <-f.exited:
		return nil, nil, errors.New("aws-lambda-rie is not running")
	default:
	}
	// The emulator answers by the function's deadline; the margin covers a
	// cold start and a slow machine.
	ctx, cancel := context.WithTimeout(ctx, f.timeout+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(event))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("invoke through aws-lambda-rie: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer of aws-lambda-rie: %w", err)
	}
	response, fnErr, err = Classify(resp.StatusCode, body)
	return response, fnErr, err
}

// Classify tells the emulator's answers apart: a response, a function error
// (the emulator reports both with 200), a timeout (200 with a text), a crash
// (502 with an error payload), or a failure of the emulator itself.
func Classify(status int, body []byte) ([]byte, *FunctionError, error) {
	switch {
	case len(body) > maxResponse:
		return nil, &FunctionError{Type: "Function.ResponseSizeTooLarge", Message: "response payload exceeds 6 MB"}, nil
	case status == http.StatusOK && bytes.HasPrefix(body, []byte("Task timed out after ")):
		return nil, &FunctionError{Type: "Sandbox.Timedout", Message: strings.TrimSpace(string(body))}, nil
	case status == http.StatusOK:
		if fe := errorPayload(body); fe != nil {
			return nil, fe, nil
		}
		return body, nil, nil
	case status == http.StatusBadGateway:
		if fe := errorPayload(body); fe != nil {
			return nil, fe, nil
		}
		return nil, &FunctionError{Type: "Runtime.Unknown", Message: strings.TrimSpace(string(body))}, nil
	default:
		return nil, nil, fmt.Errorf("aws-lambda-rie answered %d: %.200s", status, body)
	}
}

// errorPayload returns the error a body is exactly the payload of, or nil.
func errorPayload(body []byte) *FunctionError {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil
	}
	for k := range fields {
		switch k {
		case "errorType", "errorMessage", "stackTrace":
		default:
			return nil
		}
	}
	var fe FunctionError
	if err := json.Unmarshal(body, &fe); err != nil || fe.Type == "" {
		return nil
	}
	return &fe
}

// Logs returns what the emulator and the function wrote so far; after Stop,
// everything they wrote.
func (f *Function) Logs() []byte { return f.logs.Bytes() }

// EmulatorPID is the emulator's process id.
func (f *Function) EmulatorPID() int { return f.cmd.Process.Pid }

// PID is the id of the function process the emulator runs now, or 0 before
// the first invocation (the emulator starts it then).
func (f *Function) PID() int {
	kids := children(f.cmd.Process.Pid)
	if len(kids) == 0 {
		return 0
	}
	return kids[0]
}

// Stop ends the function process and the emulator.
func (f *Function) Stop() {
	f.stop.Do(func() {
		// The bootstrap runs in its own process group: end it first, or it
		// outlives the emulator until its next poll fails.
		for _, pid := range children(f.cmd.Process.Pid) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
		<-f.exited
	})
}

// children lists the child processes of pid from /proc.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t) //nolint:gosec // G304: a /proc path
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// LockedBuffer is a bytes.Buffer safe for a process's writers and its
// readers (a function's logs, read while it runs).
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written so far.
func (b *LockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
