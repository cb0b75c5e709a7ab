// Package lambdart emulates the AWS Lambda Runtime API on loopback and runs a
// real `provided` runtime binary (bootstrap) against it, so tests and
// local.sh exercise the very binary that is deployed, without Docker.
//
// One Function is one execution environment: the process starts once (cold),
// and each Invoke after the first is a warm invocation of the same process.
// Each invocation gets a deadline of now+timeout when the runtime picks it up,
// as Lambda does; a runtime that misses it is killed.
package lambdart

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
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
	apiVersion  = "/2018-06-01/runtime"
	maxResponse = 6 << 20
	// initTimeout is Lambda's limit for a runtime to start polling.
	initTimeout = 10 * time.Second
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
}

// WithName sets the function name (default lambda-eks).
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithMemory sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE in MB (default 128).
func WithMemory(mb int) Option { return func(o *options) { o.memory = mb } }

// WithLogOutput copies the function's stdout and stderr to w as they come.
func WithLogOutput(w io.Writer) Option { return func(o *options) { o.logs = w } }

// Function is a running bootstrap process behind an emulated Runtime API.
type Function struct {
	timeout time.Duration
	arn     string
	cmd     *exec.Cmd
	srv     *http.Server
	logs    *lockedBuffer

	// waiting carries one channel per pending GET .../next; Invoke answers
	// on it with the invocation, so the deadline starts at pickup.
	waiting chan chan *invocation
	exited  chan struct{}
	exitErr error
	initErr chan *FunctionError
	closed  chan struct{}
	stop    sync.Once

	invokeMu sync.Mutex // one invocation at a time, like one sandbox
	mu       sync.Mutex
	inflight map[string]*invocation
}

type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
	done     chan result
}

type result struct {
	response []byte
	fnErr    *FunctionError
}

// Start serves the Runtime API on a loopback port and starts bin with the
// standard Lambda environment plus env (later entries win). The process does
// not inherit the caller's environment.
func Start(ctx context.Context, bin string, env []string, timeout time.Duration, opts ...Option) (*Function, error) {
	o := options{name: "lambda-eks", memory: 128}
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("function binary: %w", err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	region := "us-east-1"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "AWS_REGION="); ok && v != "" {
			region = v
		}
	}
	f := &Function{
		timeout:  timeout,
		arn:      fmt.Sprintf("arn:aws:lambda:%s:123456789012:function:%s", region, o.name),
		logs:     &lockedBuffer{},
		waiting:  make(chan chan *invocation),
		exited:   make(chan struct{}),
		initErr:  make(chan *FunctionError, 1),
		closed:   make(chan struct{}),
		inflight: map[string]*invocation{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiVersion+"/invocation/next", f.next)
	mux.HandleFunc("POST "+apiVersion+"/invocation/{id}/response", f.response)
	mux.HandleFunc("POST "+apiVersion+"/invocation/{id}/error", f.error)
	mux.HandleFunc("POST "+apiVersion+"/init/error", f.initError)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()

	stream := randomHex(16)
	std := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=en_US.UTF-8",
		"TZ=:UTC",
		"_HANDLER=bootstrap",
		"LAMBDA_TASK_ROOT=" + filepath.Dir(bin),
		"LAMBDA_RUNTIME_DIR=" + filepath.Dir(bin),
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(),
		"AWS_LAMBDA_FUNCTION_NAME=" + o.name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(o.memory),
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + o.name,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + stream,
		"AWS_LAMBDA_LOG_FORMAT=JSON",
		"AWS_LAMBDA_LOG_LEVEL=INFO",
		"AWS_REGION=" + region,
		"AWS_DEFAULT_REGION=" + region,
	}
	var out io.Writer = f.logs
	if o.logs != nil {
		out = io.MultiWriter(f.logs, o.logs)
	}
	f.cmd = exec.Command(bin)
	f.cmd.Env = append(std, env...)
	f.cmd.Dir = filepath.Dir(bin)
	f.cmd.Stdout = out
	f.cmd.Stderr = out
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.cmd.Start(); err != nil {
		_ = f.srv.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		f.exitErr = f.cmd.Wait()
		close(f.exited)
	}()
	return f, nil
}

// Invoke delivers one event and waits for the function's answer. fnErr is
// the function's error payload (or Sandbox.Timedout / Runtime.ExitError, as
// Lambda reports them); err is a failure of the emulator or of ctx.
func (f *Function) Invoke(ctx context.Context, event []byte) (response []byte, fnErr *FunctionError, err error) {
	if !json.Valid(event) {
		return nil, nil, errors.New("event is not valid JSON")
	}
	f.invokeMu.Lock()
	defer f.invokeMu.Unlock()

	var req chan *invocation
	pickup := time.NewTimer(initTimeout)
	defer pickup.Stop()
	select {
	case req = <-f.waiting:
	case e := <-f.initErr:
		f.initErr <- e // keep reporting it
		return nil, e, nil
	case <-f.exited:
		return nil, f.exitError(), nil
	case <-pickup.C:
		return nil, nil, fmt.Errorf("runtime did not ask for an invocation within %s", initTimeout)
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	inv := &invocation{
		id:       newRequestID(),
		payload:  event,
		deadline: time.Now().Add(f.timeout),
		done:     make(chan result, 1),
	}
	f.mu.Lock()
	f.inflight[inv.id] = inv
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.inflight, inv.id)
		f.mu.Unlock()
	}()
	req <- inv

	timer := time.NewTimer(time.Until(inv.deadline))
	defer timer.Stop()
	select {
	case r := <-inv.done:
		return r.response, r.fnErr, nil
	case <-timer.C:
		// Lambda ends the sandbox of a function that misses its deadline.
		f.kill()
		return nil, &FunctionError{Type: "Sandbox.Timedout", Message: fmt.Sprintf("task timed out after %s", f.timeout)}, nil
	case <-f.exited:
		return nil, f.exitError(), nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// Logs returns what the function wrote to stdout and stderr so far; after
// Stop, everything it wrote.
func (f *Function) Logs() []byte { return f.logs.Bytes() }

// PID is the function process's id.
func (f *Function) PID() int { return f.cmd.Process.Pid }

// Stop ends the function process and the Runtime API server.
func (f *Function) Stop() {
	f.stop.Do(func() {
		close(f.closed)
		f.kill()
		<-f.exited
		_ = f.srv.Close()
	})
}

func (f *Function) kill() {
	if f.cmd.Process != nil {
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (f *Function) exitError() *FunctionError {
	select {
	case e := <-f.initErr: // the runtime said why before it exited
		f.initErr <- e
		return e
	default:
	}
	msg := "runtime exited"
	if f.exitErr != nil {
		msg = "runtime exited: " + f.exitErr.Error()
	}
	return &FunctionError{Type: "Runtime.ExitError", Message: msg}
}

func (f *Function) next(w http.ResponseWriter, r *http.Request) {
	req := make(chan *invocation, 1)
	select {
	case f.waiting <- req:
	case <-r.Context().Done():
		return
	case <-f.closed:
		http.Error(w, "shutting down", http.StatusGone)
		return
	}
	inv := <-req
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", f.arn)
	h.Set("Lambda-Runtime-Trace-Id", fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", time.Now().Unix(), randomHex(12), randomHex(8)))
	h.Set("Content-Type", "application/json")
	_, _ = w.Write(inv.payload)
}

func (f *Function) lookup(w http.ResponseWriter, r *http.Request) *invocation {
	f.mu.Lock()
	inv := f.inflight[r.PathValue("id")]
	f.mu.Unlock()
	if inv == nil {
		writeStatus(w, http.StatusBadRequest, "InvalidRequestID", "unknown or finished request id")
	}
	return inv
}

func (f *Function) response(w http.ResponseWriter, r *http.Request) {
	inv := f.lookup(w, r)
	if inv == nil {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxResponse+1))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	var res result
	switch {
	case r.Trailer.Get("Lambda-Runtime-Function-Error-Type") != "":
		// aws-lambda-go reports an error met while streaming the body here.
		res.fnErr = decodeError(r.Trailer.Get("Lambda-Runtime-Function-Error-Type"), r.Trailer.Get("Lambda-Runtime-Function-Error-Body"), true)
	case len(body) > maxResponse:
		res.fnErr = &FunctionError{Type: "Function.ResponseSizeTooLarge", Message: "response payload exceeds 6 MB"}
	default:
		res.response = body
	}
	f.finish(inv, res)
	writeStatus(w, http.StatusAccepted, "", "")
}

func (f *Function) error(w http.ResponseWriter, r *http.Request) {
	inv := f.lookup(w, r)
	if inv == nil {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxResponse))
	f.finish(inv, result{fnErr: decodeError(r.Header.Get("Lambda-Runtime-Function-Error-Type"), string(body), false)})
	writeStatus(w, http.StatusAccepted, "", "")
}

func (f *Function) initError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxResponse))
	select {
	case f.initErr <- decodeError(r.Header.Get("Lambda-Runtime-Function-Error-Type"), string(body), false):
	default:
	}
	writeStatus(w, http.StatusAccepted, "", "")
}

func (f *Function) finish(inv *invocation, res result) {
	select {
	case inv.done <- res:
	default: // already answered: the first answer wins, as in Lambda
	}
}

func decodeError(typ, body string, b64 bool) *FunctionError {
	if b64 {
		if raw, err := base64.StdEncoding.DecodeString(body); err == nil {
			body = string(raw)
		}
	}
	var fe FunctionError
	if err := json.Unmarshal([]byte(body), &fe); err != nil || fe.Type == "" && fe.Message == "" {
		fe = FunctionError{Type: typ, Message: body}
	}
	if fe.Type == "" {
		fe.Type = typ
	}
	return &fe
}

func writeStatus(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if typ == "" {
		_, _ = io.WriteString(w, `{"status":"OK"}`)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"errorType": typ, "errorMessage": msg})
}

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockedBuffer is a bytes.Buffer safe for the process's writers and readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
