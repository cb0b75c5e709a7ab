package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// Response is the function's response contract; decoded strictly.
type Response struct {
	Cluster string   `json:"cluster"`
	Action  string   `json:"action"`
	Objects []Object `json:"objects"`
}

// Object is one entry of Response.Objects.
type Object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Result     string `json:"result"`
}

func deployment(ns, name, result string) Object {
	return Object{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: name, Result: result}
}

// fnOptions describe one execution environment of the function.
type fnOptions struct {
	role, session string
	env           []string
	timeout       time.Duration
}

// startFunction starts the real bootstrap as a fresh (cold) execution
// environment; see startFunctionAs.
func (h *harness) startFunction(tb testing.TB, o fnOptions) *lambdart.Function {
	tb.Helper()
	fn, _ := h.startFunctionAs(tb, o)
	return fn
}

// identity is who a started function is, to the apiserver and to AWS.
type identity struct {
	User        string // the apiserver's username, lambda:<session>
	AccessKeyID string // of the session credentials it signs with
}

// startFunctionAs starts the real bootstrap as a fresh (cold) execution
// environment running as a session of the given role, and returns who it is
// to the apiserver and to AWS. Without a session name it gets a unique
// one, so that the audit log tells its requests from anyone else's on the
// shared replica. It is stopped at the end of the test, after checking that
// its logs leak no token, signature or credential.
func (h *harness) startFunctionAs(tb testing.TB, o fnOptions) (*lambdart.Function, identity) {
	tb.Helper()
	if o.role == "" {
		o.role = stack.ExecRole
	}
	if o.session == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.session = "e2e-" + hex.EncodeToString(b)
	}
	if o.timeout == 0 {
		o.timeout = 30 * time.Second
	}
	ctx := context.Background()
	creds, err := h.stack.AssumeRole(ctx, o.role, o.session)
	if err != nil {
		tb.Fatalf("assume role: %v", err)
	}
	env := append(h.stack.FunctionEnv(creds), "IMAGE=nginx:1.27", "REPLICAS=2")
	env = append(env, o.env...)
	fn, err := lambdart.Start(ctx, h.bootstrap, env, o.timeout)
	if err != nil {
		tb.Fatalf("start function: %v", err)
	}
	tb.Cleanup(func() {
		fn.Stop()
		logs := fn.Logs()
		for _, secret := range []string{"k8s-aws-v1.", "X-Amz-Signature", creds.SecretAccessKey, creds.SessionToken} {
			if bytes.Contains(logs, []byte(secret)) {
				tb.Errorf("function logs contain a secret (%.12s...)", secret)
			}
		}
		if tb.Failed() {
			tb.Logf("function logs:\n%s", logs)
		}
	})
	return fn, identity{User: "lambda:" + o.session, AccessKeyID: creds.AccessKeyID}
}

// invoke sends one event; it fails the test on an emulator error, not on a
// function error.
func invoke(tb testing.TB, fn *lambdart.Function, event string) (Response, *lambdart.FunctionError) {
	tb.Helper()
	resp, fnErr, err := fn.Invoke(context.Background(), []byte(event))
	if err != nil {
		tb.Fatalf("invoke %s: %v", event, err)
	}
	if fnErr != nil {
		return Response{}, fnErr
	}
	var r Response
	dec := json.NewDecoder(bytes.NewReader(resp))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("response %s does not match the contract: %v", resp, err)
	}
	return r, nil
}

// mustSucceed invokes and fails the test on a function error.
func mustSucceed(tb testing.TB, fn *lambdart.Function, event string) Response {
	tb.Helper()
	r, fnErr := invoke(tb, fn, event)
	if fnErr != nil {
		tb.Fatalf("invoke %s: function error %s: %s", event, fnErr.Type, fnErr.Message)
	}
	return r
}

// mustFail invokes and fails the test unless the function answers errorType.
func mustFail(tb testing.TB, fn *lambdart.Function, event, errorType string) *lambdart.FunctionError {
	tb.Helper()
	r, fnErr := invoke(tb, fn, event)
	if fnErr == nil {
		tb.Fatalf("invoke %s: got response %+v, want errorType %s", event, r, errorType)
	}
	if fnErr.Type != errorType {
		tb.Fatalf("invoke %s: errorType %s (%s), want %s", event, fnErr.Type, fnErr.Message, errorType)
	}
	return fnErr
}

// mustDeleteDeployment removes a Deployment as admin and waits until it is gone.
func (h *harness) mustDeleteDeployment(tb testing.TB, ns, name string) {
	tb.Helper()
	ctx := context.Background()
	err := h.admin.AppsV1().Deployments(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		tb.Fatalf("delete deployment %s/%s: %v", ns, name, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := h.admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("deployment %s/%s still there after delete: %v", ns, name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustNamespace creates a namespace as admin if it does not exist.
func (h *harness) mustNamespace(tb testing.TB, name string) {
	tb.Helper()
	_, err := h.admin.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("create namespace %s: %v", name, err)
	}
}

// auditEvent is the part of a kube-apiserver audit event the tests read.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	URI   string `json:"requestURI"`
	User  struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// auditMark is a position in the apiserver's audit log.
type auditMark int64

func (h *harness) auditMark(tb testing.TB) auditMark {
	tb.Helper()
	fi, err := os.Stat(h.stack.Paths.AuditLog())
	if err != nil {
		tb.Fatalf("audit log: %v", err)
	}
	return auditMark(fi.Size())
}

// auditSince returns the completed requests of username logged after mark.
// The apiserver may write an event just after its response reached the
// client, so it reads until the log has been quiet for a moment.
func (h *harness) auditSince(tb testing.TB, mark auditMark, username string) []auditEvent {
	tb.Helper()
	read := func() []auditEvent {
		b, err := os.ReadFile(h.stack.Paths.AuditLog())
		if err != nil {
			tb.Fatalf("audit log: %v", err)
		}
		if int64(len(b)) < int64(mark) {
			tb.Fatalf("audit log shrank: was it rotated?")
		}
		var events []auditEvent
		sc := bufio.NewScanner(bytes.NewReader(b[mark:]))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e auditEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				continue // a line being written
			}
			if e.Stage == "ResponseComplete" && e.User.Username == username {
				events = append(events, e)
			}
		}
		return events
	}
	prev := -1
	var events []auditEvent
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		events = read()
		if len(events) == prev {
			return events
		}
		prev = len(events)
	}
	return events
}

func describe(events []auditEvent) string {
	var b strings.Builder
	for _, e := range events {
		code := 0
		if e.ResponseStatus != nil {
			code = e.ResponseStatus.Code
		}
		b.WriteString("\n  " + e.Verb + " " + e.URI + " -> " + strconv.Itoa(code))
	}
	return b.String()
}

// invokeAtOnce delivers event to every fn at the same time, as Lambda does
// with a duplicate delivery to two execution environments, and returns each
// one's response and its error (an emulator failure or a function error).
func invokeAtOnce(event []byte, fns ...*lambdart.Function) ([][]byte, []error) {
	outs, errs := make([][]byte, len(fns)), make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() {
			out, fnErr, err := fn.Invoke(context.Background(), event)
			switch {
			case err != nil:
				errs[i] = err
			case fnErr != nil:
				errs[i] = fnErr
			default:
				outs[i] = out
			}
		})
	}
	wg.Wait()
	return outs, errs
}
