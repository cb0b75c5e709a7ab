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
	DeadlineLeft bool              `json:"deadlineLeft"`
	Env          map[string]string `json:"env"`
}

func start(t *testing.T, timeout time.Duration, env ...string) *Function {
	t.Helper()
	if os.Getenv(RIEVar) == "" {
		t.Skipf("%s is not set: this test runs aws-lambda-rie (localeks/parts/build.sh builds it; make e2e sets it)", RIEVar)
	}
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
			Event: json.RawMessage(fmt.Sprintf(`{"echo":%d}`, i)),
			PID:   got.PID,
			// The emulator's own account and region, whatever the function's.
			ARN:          "arn:aws:lambda:us-east-1:012345678912:function:lambda-eks",
			DeadlineLeft: true,
			Env: map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "lambda-eks", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
				"AWS_LAMBDA_LOG_FORMAT": "JSON", "_HANDLER": "bootstrap", "EXTRA": "x", "HOME": ""},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("invoke %d (-want +got):\n%s", i, diff)
		}
	}
	if pids[0] != pids[1] || pids[1] != pids[2] || pids[0] != fn.PID() || fn.PID() == fn.EmulatorPID() {
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
		wantType    string
		wantMessage string // a part of the message
	}{
		{"function error", `{"fail":"Forbidden"}`, 5 * time.Second, nil, "Forbidden", "it failed"},
		// The emulator's deadline is in whole seconds: 300 ms is 1 s.
		{"timeout", `{"sleep":2500}`, 300 * time.Millisecond, nil, "Sandbox.Timedout", "Task timed out after 1.00 seconds"},
		{"exit", `{"exit":7}`, 5 * time.Second, nil, "Runtime.ExitError", "Runtime exited with error: exit status 7"},
		{"init error", `{}`, 5 * time.Second, []string{"FAKE_INIT_ERROR=1"}, "InitBroken", "no config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := start(t, tc.timeout, tc.env...)
			resp, fnErr, err := fn.Invoke(context.Background(), []byte(tc.event))
			if err != nil {
				t.Fatal(err)
			}
			if fnErr == nil || fnErr.Type != tc.wantType || !strings.Contains(fnErr.Message, tc.wantMessage) {
				t.Fatalf("function error %+v (response %s), want %s containing %q", fnErr, resp, tc.wantType, tc.wantMessage)
			}
		})
	}
}

// After a timeout or a crash the emulator starts a new process for the next
// invocation, as Lambda does.
func TestNewProcessAfterFailure(t *testing.T) {
	for _, tc := range []struct{ name, event string }{
		{"timeout", `{"sleep":2500}`},
		{"exit", `{"exit":3}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := start(t, time.Second)
			first := mustEcho(t, fn)
			if _, fnErr, err := fn.Invoke(context.Background(), []byte(tc.event)); err != nil || fnErr == nil {
				t.Fatalf("invoke %s: %v %v, want a function error", tc.event, err, fnErr)
			}
			if second := mustEcho(t, fn); second.PID == first.PID {
				t.Errorf("pid %d after the %s, want a new process", second.PID, tc.name)
			}
		})
	}
}

func mustEcho(t *testing.T, fn *Function) echo {
	t.Helper()
	resp, fnErr, err := fn.Invoke(context.Background(), []byte(`{"echo":1}`))
	if err != nil || fnErr != nil {
		t.Fatalf("invoke: %v %v", err, fnErr)
	}
	var got echo
	if err := json.Unmarshal(resp, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestClassify(t *testing.T) {
	type result struct {
		Response string
		FnErr    *FunctionError
		Err      bool
	}
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   result
	}{
		{"response", 200, `{"cluster":"demo","objects":[]}`, result{Response: `{"cluster":"demo","objects":[]}`}},
		{"error payload", 200, `{"errorMessage":"bad","errorType":"InvalidEvent"}`, result{FnErr: &FunctionError{Type: "InvalidEvent", Message: "bad"}}},
		{"error with a stack trace", 200, `{"errorMessage":"x","errorType":"T","stackTrace":[]}`, result{FnErr: &FunctionError{Type: "T", Message: "x", StackTrace: json.RawMessage(`[]`)}}},
		{"a response that also has errorType", 200, `{"errorType":"T","result":"ok"}`, result{Response: `{"errorType":"T","result":"ok"}`}},
		{"no errorType", 200, `{"errorMessage":"x"}`, result{Response: `{"errorMessage":"x"}`}},
		{"not JSON", 200, `null`, result{Response: `null`}},
		{"timeout", 200, `Task timed out after 3.00 seconds`, result{FnErr: &FunctionError{Type: "Sandbox.Timedout", Message: "Task timed out after 3.00 seconds"}}},
		{"crash", 502, `{"errorType":"Runtime.ExitError","errorMessage":"RequestId: 1 Error: Runtime exited"}`, result{FnErr: &FunctionError{Type: "Runtime.ExitError", Message: "RequestId: 1 Error: Runtime exited"}}},
		{"crash without payload", 502, ``, result{FnErr: &FunctionError{Type: "Runtime.Unknown"}}},
		{"emulator refusal", 400, ``, result{Err: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, fnErr, err := Classify(tc.status, []byte(tc.body))
			got := result{Response: string(resp), FnErr: fnErr, Err: err != nil}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Classify(%d, %s) (-want +got):\n%s", tc.status, tc.body, diff)
			}
		})
	}
}
