package lambdart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as a minimal `provided` runtime: run with
// LAMBDART_FAKE_RUNTIME=1 it loops on the Runtime API like a bootstrap does.
func TestMain(m *testing.M) {
	if os.Getenv("LAMBDART_FAKE_RUNTIME") == "1" {
		fakeRuntime()
		return
	}
	os.Exit(m.Run())
}

// fakeRuntime answers each event by what it asks for: {"echo":...} returns
// the event and what the runtime saw, {"fail":"T"} reports an error of type
// T, {"sleep":ms} sleeps first, {"exit":n} exits.
func fakeRuntime() {
	base := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime"
	if os.Getenv("FAKE_INIT_ERROR") != "" {
		_, _ = http.Post(base+"/init/error", "application/json", strings.NewReader(`{"errorType":"InitBroken","errorMessage":"no config"}`))
		os.Exit(1)
	}
	for {
		resp, err := http.Get(base + "/invocation/next")
		if err != nil {
			os.Exit(3)
		}
		payload, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		var ev struct {
			Sleep int    `json:"sleep"`
			Fail  string `json:"fail"`
			Exit  *int   `json:"exit"`
		}
		_ = json.Unmarshal(payload, &ev)
		time.Sleep(time.Duration(ev.Sleep) * time.Millisecond)
		if ev.Exit != nil {
			os.Exit(*ev.Exit)
		}
		if ev.Fail != "" {
			_, _ = http.Post(base+"/invocation/"+id+"/error", "application/json",
				strings.NewReader(fmt.Sprintf(`{"errorType":%q,"errorMessage":"it failed"}`, ev.Fail)))
			continue
		}
		deadline, _ := strconv.ParseInt(resp.Header.Get("Lambda-Runtime-Deadline-Ms"), 10, 64)
		fmt.Fprintf(os.Stderr, "{\"msg\":\"handled\",\"requestId\":%q}\n", id)
		out, _ := json.Marshal(map[string]any{
			"event":        json.RawMessage(payload),
			"pid":          os.Getpid(),
			"arn":          resp.Header.Get("Lambda-Runtime-Invoked-Function-Arn"),
			"traced":       resp.Header.Get("Lambda-Runtime-Trace-Id") != "",
			"deadlineLeft": time.Until(time.UnixMilli(deadline)) > 0,
			"env": map[string]string{
				"AWS_LAMBDA_FUNCTION_NAME":        os.Getenv("AWS_LAMBDA_FUNCTION_NAME"),
				"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": os.Getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
				"AWS_LAMBDA_LOG_FORMAT":           os.Getenv("AWS_LAMBDA_LOG_FORMAT"),
				"_HANDLER":                        os.Getenv("_HANDLER"),
				"EXTRA":                           os.Getenv("EXTRA"),
				"HOME":                            os.Getenv("HOME"),
			},
		})
		r, err := http.Post(base+"/invocation/"+id+"/response", "application/json", bytes.NewReader(out))
		if err != nil {
			os.Exit(4)
		}
		_ = r.Body.Close()
	}
}

type echo struct {
	Event        json.RawMessage   `json:"event"`
	PID          int               `json:"pid"`
	ARN          string            `json:"arn"`
	Traced       bool              `json:"traced"`
	DeadlineLeft bool              `json:"deadlineLeft"`
	Env          map[string]string `json:"env"`
}

func start(t *testing.T, timeout time.Duration, env ...string) *Function {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fn, err := Start(context.Background(), self, append([]string{"LAMBDART_FAKE_RUNTIME=1", "AWS_REGION=eu-west-1"}, env...), timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Stop)
	return fn
}

func TestInvokeWarm(t *testing.T) {
	fn := start(t, 5*time.Second, "EXTRA=x")
	var pids []int
	for i := range 3 {
		resp, fnErr, err := fn.Invoke(context.Background(), []byte(fmt.Sprintf(`{"echo":%d}`, i)))
		if err != nil || fnErr != nil {
			t.Fatalf("invoke %d: %v %v", i, err, fnErr)
		}
		var got echo
		if err := json.Unmarshal(resp, &got); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, got.PID)
		want := echo{
			Event:        json.RawMessage(fmt.Sprintf(`{"echo":%d}`, i)),
			PID:          got.PID,
			ARN:          "arn:aws:lambda:eu-west-1:123456789012:function:lambda-eks",
			Traced:       true,
			DeadlineLeft: true,
			Env: map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "lambda-eks", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
				"AWS_LAMBDA_LOG_FORMAT": "JSON", "_HANDLER": "bootstrap", "EXTRA": "x", "HOME": ""},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("invoke %d (-want +got):\n%s", i, diff)
		}
	}
	if pids[0] != pids[1] || pids[1] != pids[2] || pids[0] != fn.PID() {
		t.Errorf("pids %v, want one process %d for warm invocations", pids, fn.PID())
	}
	fn.Stop() // logs are copied asynchronously until the process is gone
	if n := bytes.Count(fn.Logs(), []byte(`"msg":"handled"`)); n != 3 {
		t.Errorf("captured %d log lines, want 3:\n%s", n, fn.Logs())
	}
}

func TestInvokeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, event string
		timeout     time.Duration
		env         []string
		want        *FunctionError
	}{
		{"function error", `{"fail":"Forbidden"}`, 5 * time.Second, nil, &FunctionError{Type: "Forbidden", Message: "it failed"}},
		{"timeout", `{"sleep":2000}`, 300 * time.Millisecond, nil, &FunctionError{Type: "Sandbox.Timedout", Message: "task timed out after 300ms"}},
		{"exit", `{"exit":7}`, 5 * time.Second, nil, &FunctionError{Type: "Runtime.ExitError", Message: "runtime exited: exit status 7"}},
		{"init error", `{}`, 5 * time.Second, []string{"FAKE_INIT_ERROR=1"}, &FunctionError{Type: "InitBroken", Message: "no config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := start(t, tc.timeout, tc.env...)
			start := time.Now()
			resp, fnErr, err := fn.Invoke(context.Background(), []byte(tc.event))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, fnErr); diff != "" {
				t.Errorf("function error (-want +got):\n%s (response %s)", diff, resp)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}
