package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
)

// fakeAutoScaling is moto's side of autoscaling for the tests: one group
// with two hooks; it records the actions it was asked.
type fakeAutoScaling struct {
	mu      sync.Mutex
	actions []string
	keys    []string
}

func (f *fakeAutoScaling) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	f.actions = append(f.actions, form.Get("Action"))
	f.keys = append(f.keys, accessKeyID(r.Header.Get("Authorization")))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	group := form.Get("AutoScalingGroupName")
	switch form.Get("Action") {
	case "DescribeLifecycleHooks":
		var members string
		hook := form.Get("LifecycleHookNames.member.1")
		switch {
		case group == "nodes" && (hook == "terminate" || hook == "launch"):
			members = "<member><LifecycleHookName>" + hook + "</LifecycleHookName><AutoScalingGroupName>nodes</AutoScalingGroupName><HeartbeatTimeout>300</HeartbeatTimeout><DefaultResult>CONTINUE</DefaultResult></member>"
		case group == "nodes" && hook == "short":
			members = "<member><LifecycleHookName>short</LifecycleHookName><AutoScalingGroupName>nodes</AutoScalingGroupName><HeartbeatTimeout>1</HeartbeatTimeout><DefaultResult>ABANDON</DefaultResult></member>"
		}
		_, _ = fmt.Fprintf(w, `<DescribeLifecycleHooksResponse xmlns="%s"><DescribeLifecycleHooksResult><LifecycleHooks>%s</LifecycleHooks></DescribeLifecycleHooksResult></DescribeLifecycleHooksResponse>`, autoscalingNS, members)
	case "DescribeAutoScalingGroups":
		var members string
		if form.Get("AutoScalingGroupNames.member.1") == "nodes" {
			members = "<member><AutoScalingGroupName>nodes</AutoScalingGroupName></member>"
		}
		_, _ = fmt.Fprintf(w, `<DescribeAutoScalingGroupsResponse xmlns="%s"><DescribeAutoScalingGroupsResult><AutoScalingGroups>%s</AutoScalingGroups></DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>`, autoscalingNS, members)
	default:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `<ErrorResponse><Error><Code>InvalidAction</Code><Message>moto: %s</Message></Error></ErrorResponse>`, form.Get("Action"))
	}
}

func autoscalingClient(client *http.Client) *autoscaling.Client {
	return autoscaling.New(autoscaling.Options{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("ASIALIFECYCLE", "secret", "token"),
		HTTPClient:  client,
	})
}

func postJSON(t *testing.T, target, body string) int {
	t.Helper()
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Post(target, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func getJSON(t *testing.T, target string, out any) {
	t.Helper()
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// errorCode is the AWS error code of err, "" for none.
func errorCode(err error) (code, msg string) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	if err != nil {
		return "not an API error", err.Error()
	}
	return "", ""
}

// TestLifecycleActions: with the real SDK client, the shim completes and
// heartbeats the lifecycle actions registered at /__lifecycle/actions as
// Auto Scaling does, refuses what Auto Scaling refuses in its words, and
// records every call.
func TestLifecycleActions(t *testing.T) {
	t.Parallel()
	moto := &fakeAutoScaling{}
	_, client, proxy := startShim(t, moto.serve)
	detail := func(token, hook, instance string) string {
		return `{"Origin":"AutoScalingGroup","Destination":"EC2","LifecycleActionToken":"` + token + `","AutoScalingGroupName":"nodes",` +
			`"LifecycleHookName":"` + hook + `","EC2InstanceId":"` + instance + `","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING"}`
	}
	for i, reg := range []struct {
		body string
		want int
	}{
		{detail("tok-a", "terminate", "i-a"), http.StatusCreated},
		{detail("tok-a", "terminate", "i-a"), http.StatusOK}, // a second delivery
		{detail("tok-b", "terminate", "i-b"), http.StatusCreated},
		{detail("tok-c", "launch", "i-c"), http.StatusCreated},
		{`{"LifecycleActionToken":"tok-d","AutoScalingGroupName":"nodes"}`, http.StatusBadRequest},
		{`not json`, http.StatusBadRequest},
	} {
		if got := postJSON(t, proxy+"/__lifecycle/actions", reg.body); got != reg.want {
			t.Errorf("registration %d: %d, want %d", i, got, reg.want)
		}
	}

	as := autoscalingClient(client)
	ctx := context.Background()
	complete := func(token, instance, hook, result string) error {
		in := &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("nodes"), LifecycleHookName: aws.String(hook),
			LifecycleActionResult: aws.String(result)}
		if token != "" {
			in.LifecycleActionToken = aws.String(token)
		}
		if instance != "" {
			in.InstanceId = aws.String(instance)
		}
		_, err := as.CompleteLifecycleAction(ctx, in)
		return err
	}
	heartbeat := func(token, instance string) error {
		in := &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("nodes"), LifecycleHookName: aws.String("terminate")}
		if token != "" {
			in.LifecycleActionToken = aws.String(token)
		}
		if instance != "" {
			in.InstanceId = aws.String(instance)
		}
		_, err := as.RecordLifecycleActionHeartbeat(ctx, in)
		return err
	}
	steps := []struct {
		name      string
		err       error
		code, msg string
	}{
		{"heartbeat by token", heartbeat("tok-a", ""), "", ""},
		{"heartbeat by instance", heartbeat("", "i-a"), "", ""},
		{"complete by token", complete("tok-a", "", "terminate", "CONTINUE"), "", ""},
		{"complete again", complete("tok-a", "", "terminate", "CONTINUE"), "ValidationError", "No active Lifecycle Action found with token tok-a"},
		{"heartbeat after completion", heartbeat("tok-a", ""), "ValidationError", "No active Lifecycle Action found with token tok-a"},
		{"unknown token", complete("tok-x", "", "terminate", "CONTINUE"), "ValidationError", "No active Lifecycle Action found with token tok-x"},
		{"token of another hook", complete("tok-c", "", "terminate", "CONTINUE"), "ValidationError", "No active Lifecycle Action found with token tok-c"},
		{"unknown hook", complete("tok-b", "", "drain", "CONTINUE"), "ValidationError", "No Lifecycle Hook found with name: drain for AutoScalingGroup: nodes"},
		{"bad result", complete("tok-b", "", "terminate", "RETRY"), "ValidationError", "Invalid value for LifecycleActionResult: RETRY. Valid values are: CONTINUE, ABANDON"},
		{"neither token nor instance", complete("", "", "terminate", "CONTINUE"), "ValidationError", "Either LifecycleActionToken or InstanceId must be specified"},
		{"complete by instance", complete("", "i-b", "terminate", "ABANDON"), "", ""},
		{"instance done", complete("", "i-b", "terminate", "ABANDON"), "ValidationError", "No active Lifecycle Action found with instance ID i-b"},
		{"launch by token and instance", complete("tok-c", "i-c", "launch", "CONTINUE"), "", ""},
	}
	for _, s := range steps {
		code, msg := errorCode(s.err)
		if code != s.code || msg != s.msg {
			t.Errorf("%s: %q %q, want %q %q", s.name, code, msg, s.code, s.msg)
		}
	}
	// A group that does not exist, asked directly.
	_, err := as.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("gone"),
		LifecycleHookName: aws.String("terminate"), LifecycleActionResult: aws.String("CONTINUE"), InstanceId: aws.String("i-a")})
	if code, msg := errorCode(err); code != "ValidationError" || msg != "AutoScalingGroup name not found - AutoScalingGroup gone not found" {
		t.Errorf("unknown group: %q %q", code, msg)
	}

	var rec LifecycleRecord
	getJSON(t, proxy+"/__lifecycle", &rec)
	type actionBrief struct {
		Token, Hook, Instance, State, Result string
		Heartbeats                           int
	}
	var actions []actionBrief
	for _, a := range rec.Actions {
		actions = append(actions, actionBrief{a.Token, a.LifecycleHookName, a.InstanceID, a.State, a.Result, a.Heartbeats})
	}
	wantActions := []actionBrief{
		{"tok-a", "terminate", "i-a", ActionCompleted, "CONTINUE", 2},
		{"tok-b", "terminate", "i-b", ActionCompleted, "ABANDON", 0},
		{"tok-c", "launch", "i-c", ActionCompleted, "CONTINUE", 0},
	}
	if diff := cmp.Diff(wantActions, actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	if len(rec.Calls) != len(steps)+1 {
		t.Fatalf("%d calls recorded, want %d", len(rec.Calls), len(steps)+1)
	}
	for i, s := range steps {
		c := rec.Calls[i]
		wantStatus := http.StatusOK
		if s.code != "" {
			wantStatus = http.StatusBadRequest
		}
		if c.Status != wantStatus || c.Error != s.code || c.AccessKeyID != "ASIALIFECYCLE" || c.Time.IsZero() {
			t.Errorf("call %d (%s) recorded as %+v", i, s.name, c)
		}
	}
	if c := rec.Calls[2]; c.Op != "CompleteLifecycleAction" || c.Token != "tok-a" || c.Result != "CONTINUE" || c.AutoScalingGroupName != "nodes" || c.LifecycleHookName != "terminate" {
		t.Errorf("complete by token recorded as %+v", c)
	}
	if c := rec.Calls[1]; c.Op != "RecordLifecycleActionHeartbeat" || c.InstanceID != "i-a" {
		t.Errorf("heartbeat by instance recorded as %+v", c)
	}
	// moto was asked about hooks as the caller, never to complete.
	moto.mu.Lock()
	for i, a := range moto.actions {
		if a != "DescribeLifecycleHooks" && a != "DescribeAutoScalingGroups" {
			t.Errorf("moto got %s", a)
		}
		if moto.keys[i] != "ASIALIFECYCLE" {
			t.Errorf("moto asked with key %q", moto.keys[i])
		}
	}
	moto.mu.Unlock()

	if got := postJSON(t, proxy+"/__lifecycle/reset?token=tok-a", ""); got != http.StatusNoContent {
		t.Errorf("reset of one token: %d", got)
	}
	getJSON(t, proxy+"/__lifecycle", &rec)
	if len(rec.Actions) != 2 || rec.Actions[0].Token != "tok-b" || len(rec.Calls) != len(steps)+1-4 {
		t.Errorf("after forgetting tok-a: %d actions (first %s), %d calls", len(rec.Actions), rec.Actions[0].Token, len(rec.Calls))
	}
	if got := postJSON(t, proxy+"/__lifecycle/actions", detail("tok-a", "terminate", "i-a")); got != http.StatusCreated {
		t.Errorf("tok-a registered again: %d, want 201", got)
	}
	if got := postJSON(t, proxy+"/__lifecycle/reset", ""); got != http.StatusNoContent {
		t.Errorf("reset: %d", got)
	}
	getJSON(t, proxy+"/__lifecycle", &rec)
	if len(rec.Actions) != 0 || len(rec.Calls) != 0 {
		t.Errorf("after reset: %+v", rec)
	}
}

// TestAutoScalingForwarded: any other autoscaling action goes to moto with
// its body intact.
func TestAutoScalingForwarded(t *testing.T) {
	t.Parallel()
	var got []byte
	_, client, _ := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/xml")
		_, _ = fmt.Fprintf(w, `<DescribeLifecycleHooksResponse xmlns="%s"><DescribeLifecycleHooksResult><LifecycleHooks><member><LifecycleHookName>terminate</LifecycleHookName><HeartbeatTimeout>300</HeartbeatTimeout></member></LifecycleHooks></DescribeLifecycleHooksResult></DescribeLifecycleHooksResponse>`, autoscalingNS)
	})
	out, err := autoscalingClient(client).DescribeLifecycleHooks(context.Background(), &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String("nodes")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.LifecycleHooks) != 1 || aws.ToInt32(out.LifecycleHooks[0].HeartbeatTimeout) != 300 {
		t.Errorf("hooks %+v", out.LifecycleHooks)
	}
	if !bytes.Contains(got, []byte("Action=DescribeLifecycleHooks")) || !bytes.Contains(got, []byte("AutoScalingGroupName=nodes")) {
		t.Errorf("moto got %q", got)
	}
}

// TestAutoScalingFaults: the faults apply to autoscaling as to the other
// services: a closed connection fails the SDK's call, with no answer
// recorded, and clearing the fault heals it.
func TestAutoScalingFaults(t *testing.T) {
	t.Parallel()
	moto := &fakeAutoScaling{}
	srv, client, proxy := startShim(t, moto.serve)
	if got := postJSON(t, proxy+"/__lifecycle/actions", `{"LifecycleActionToken":"tok","AutoScalingGroupName":"nodes","LifecycleHookName":"terminate","EC2InstanceId":"i-a","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING"}`); got != http.StatusCreated {
		t.Fatalf("register: %d", got)
	}
	if got := postJSON(t, proxy+"/__faults", `{"autoscaling":"close"}`); got != http.StatusNoContent {
		t.Fatalf("set faults: %d", got)
	}
	as := autoscaling.New(autoscaling.Options{Region: "us-east-1", HTTPClient: client, RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("ASIALIFECYCLE", "secret", "token")})
	in := &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("nodes"), LifecycleHookName: aws.String("terminate"),
		LifecycleActionToken: aws.String("tok"), LifecycleActionResult: aws.String("CONTINUE")}
	if _, err := as.CompleteLifecycleAction(context.Background(), in); err == nil {
		t.Error("CompleteLifecycleAction succeeded with autoscaling closed")
	}
	if n := len(srv.Lifecycle().Calls); n != 0 {
		t.Errorf("%d calls recorded while closed", n)
	}
	srv.SetFaults(Faults{})
	if _, err := as.CompleteLifecycleAction(context.Background(), in); err != nil {
		t.Errorf("after clearing the fault: %v", err)
	}
}

// TestLifecycleActionTimesOut: an action without a heartbeat within its
// hook's heartbeat timeout ends with the hook's default result, as Auto
// Scaling ends it; a heartbeat keeps it waiting.
func TestLifecycleActionTimesOut(t *testing.T) {
	t.Parallel()
	moto := &fakeAutoScaling{}
	srv, client, proxy := startShim(t, moto.serve)
	for _, tok := range []string{"beating", "silent"} {
		if got := postJSON(t, proxy+"/__lifecycle/actions", `{"LifecycleActionToken":"`+tok+`","AutoScalingGroupName":"nodes","LifecycleHookName":"short","EC2InstanceId":"i-`+tok+`","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING"}`); got != http.StatusCreated {
			t.Fatalf("register %s: %d", tok, got)
		}
	}
	as := autoscalingClient(client)
	ctx := context.Background()
	for range 3 {
		time.Sleep(600 * time.Millisecond)
		if _, err := as.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("nodes"),
			LifecycleHookName: aws.String("short"), LifecycleActionToken: aws.String("beating")}); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	for tok, want := range map[string]string{"beating": "", "silent": "No active Lifecycle Action found with token silent"} {
		_, err := as.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("nodes"),
			LifecycleHookName: aws.String("short"), LifecycleActionToken: aws.String(tok), LifecycleActionResult: aws.String("CONTINUE")})
		if _, msg := errorCode(err); msg != want {
			t.Errorf("complete %s: %v, want %q", tok, err, want)
		}
	}
	states := map[string]string{}
	for _, a := range srv.Lifecycle().Actions {
		states[a.Token] = a.State + " " + a.Result
	}
	if diff := cmp.Diff(map[string]string{"beating": "completed CONTINUE", "silent": "timed-out ABANDON"}, states); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
}
