package shim

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Auto Scaling's lifecycle actions, which moto 5.2.1 does not implement:
// it keeps groups and lifecycle hooks, but has no CompleteLifecycleAction
// or RecordLifecycleActionHeartbeat. The shim answers both as AWS does
// (Query protocol, XML), against the lifecycle actions registered with
// POST /__lifecycle/actions: the body is exactly the detail of an
// EventBridge "EC2 Instance-terminate Lifecycle Action" (or -launch) event,
// so whoever plays the Auto Scaling group that sent the event registers
// the action it waits on, until a completion or, without a heartbeat
// within the hook's heartbeat timeout, the hook's default result. Each
// call of the two operations is recorded;
// GET /__lifecycle lists actions and calls, POST /__lifecycle/reset
// empties both, POST /__lifecycle/reset?token=T forgets one action and
// its calls. Every other autoscaling request goes to moto.

// autoscalingNS is the namespace of Auto Scaling's XML answers.
const autoscalingNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

// Lifecycle action states.
const (
	ActionPending   = "pending"
	ActionCompleted = "completed"
	// ActionTimedOut: no heartbeat nor completion within the hook's
	// heartbeat timeout; Result is the hook's default result. The shim
	// notices it when the next call names the hook.
	ActionTimedOut = "timed-out"
)

// LifecycleAction is one instance's wait in a lifecycle hook.
type LifecycleAction struct {
	Token                string `json:"token"`
	AutoScalingGroupName string `json:"autoScalingGroupName"`
	LifecycleHookName    string `json:"lifecycleHookName"`
	InstanceID           string `json:"instanceId"`
	LifecycleTransition  string `json:"lifecycleTransition"`
	// State is ActionPending until a CompleteLifecycleAction, then
	// ActionCompleted with its Result (CONTINUE or ABANDON); or
	// ActionTimedOut with the hook's default result.
	State      string     `json:"state"`
	Result     string     `json:"result,omitempty"`
	Heartbeats int        `json:"heartbeats"`
	Registered time.Time  `json:"registered"`
	Completed  *time.Time `json:"completed,omitempty"`
	// lastBeat is the registration's or the last heartbeat's time.
	lastBeat time.Time
}

// LifecycleCall is one recorded CompleteLifecycleAction or
// RecordLifecycleActionHeartbeat.
type LifecycleCall struct {
	Op                   string `json:"op"`
	AutoScalingGroupName string `json:"autoScalingGroupName,omitempty"`
	LifecycleHookName    string `json:"lifecycleHookName,omitempty"`
	InstanceID           string `json:"instanceId,omitempty"`
	Token                string `json:"token,omitempty"`
	Result               string `json:"result,omitempty"`
	// Status is the HTTP status the shim answered; Error the error code
	// when it refused the call (ValidationError).
	Status      int       `json:"status"`
	Error       string    `json:"error,omitempty"`
	AccessKeyID string    `json:"accessKeyId"`
	Time        time.Time `json:"time"`
}

// LifecycleRecord is what GET /__lifecycle answers.
type LifecycleRecord struct {
	Actions []LifecycleAction `json:"actions"`
	Calls   []LifecycleCall   `json:"calls"`
}

// LifecycleDetail is the detail of an EventBridge lifecycle action event,
// the body of POST /__lifecycle/actions. Other fields of the detail
// (Origin, Destination, NotificationMetadata) are ignored.
type LifecycleDetail struct {
	LifecycleActionToken string `json:"LifecycleActionToken"`
	AutoScalingGroupName string `json:"AutoScalingGroupName"`
	LifecycleHookName    string `json:"LifecycleHookName"`
	EC2InstanceID        string `json:"EC2InstanceId"`
	LifecycleTransition  string `json:"LifecycleTransition"`
}

type lifecycleBook struct {
	mu      sync.Mutex
	actions []*LifecycleAction
	calls   []LifecycleCall
}

// Lifecycle returns the registered actions and the recorded calls, oldest
// first.
func (s *Server) Lifecycle() LifecycleRecord {
	b := &s.lifecycle
	b.mu.Lock()
	defer b.mu.Unlock()
	rec := LifecycleRecord{Actions: []LifecycleAction{}, Calls: append([]LifecycleCall{}, b.calls...)}
	for _, a := range b.actions {
		rec.Actions = append(rec.Actions, *a)
	}
	return rec
}

// RegisterLifecycleAction registers the action an event's detail
// describes, as pending. A known token is left as it is, completed or not:
// an event delivered twice is one action. It says whether it added one.
func (s *Server) RegisterLifecycleAction(d LifecycleDetail) (bool, error) {
	for name, v := range map[string]string{"LifecycleActionToken": d.LifecycleActionToken, "AutoScalingGroupName": d.AutoScalingGroupName,
		"LifecycleHookName": d.LifecycleHookName, "EC2InstanceId": d.EC2InstanceID, "LifecycleTransition": d.LifecycleTransition} {
		if v == "" {
			return false, fmt.Errorf("%s missing: want the detail of an EC2 Instance-terminate or -launch Lifecycle Action event", name)
		}
	}
	b := &s.lifecycle
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range b.actions {
		if a.Token == d.LifecycleActionToken {
			return false, nil
		}
	}
	now := time.Now().UTC()
	b.actions = append(b.actions, &LifecycleAction{Token: d.LifecycleActionToken, AutoScalingGroupName: d.AutoScalingGroupName,
		LifecycleHookName: d.LifecycleHookName, InstanceID: d.EC2InstanceID, LifecycleTransition: d.LifecycleTransition,
		State: ActionPending, Registered: now, lastBeat: now})
	return true, nil
}

// ForgetLifecycle forgets the action of token and the calls that named
// it, so that it can be registered afresh; "" forgets every action and
// call (on a shared replica, other runs' too).
func (s *Server) ForgetLifecycle(token string) {
	b := &s.lifecycle
	b.mu.Lock()
	defer b.mu.Unlock()
	if token == "" {
		b.actions, b.calls = nil, nil
		return
	}
	b.actions = slices.DeleteFunc(b.actions, func(a *LifecycleAction) bool { return a.Token == token })
	b.calls = slices.DeleteFunc(b.calls, func(c LifecycleCall) bool { return c.Token == token })
}

// lifecycleAPI serves the shim's /__lifecycle endpoints; it says whether r
// was one.
func (s *Server) lifecycleAPI(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/__lifecycle" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Lifecycle())
	case r.URL.Path == "/__lifecycle/reset" && r.Method == http.MethodPost:
		s.ForgetLifecycle(r.URL.Query().Get("token"))
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/__lifecycle/actions" && r.Method == http.MethodPost:
		var d LifecycleDetail
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&d); err != nil {
			http.Error(w, "localeks shim: lifecycle action: "+err.Error(), http.StatusBadRequest)
			return true
		}
		added, err := s.RegisterLifecycleAction(d)
		if err != nil {
			http.Error(w, "localeks shim: lifecycle action: "+err.Error(), http.StatusBadRequest)
			return true
		}
		slog.Info("lifecycle action registered", "token", d.LifecycleActionToken, "asg", d.AutoScalingGroupName,
			"hook", d.LifecycleHookName, "instance", d.EC2InstanceID, "new", added)
		if added {
			w.WriteHeader(http.StatusCreated)
		} else {
			w.WriteHeader(http.StatusOK)
		}
	default:
		return false
	}
	return true
}

// autoscaling answers CompleteLifecycleAction and
// RecordLifecycleActionHeartbeat, and says whether it answered r. For any
// other action it leaves r's body readable for forwarding to moto.
func (s *Server) autoscaling(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "localeks shim: read request", http.StatusBadRequest)
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return false
	}
	op := form.Get("Action")
	if op != "CompleteLifecycleAction" && op != "RecordLifecycleActionHeartbeat" {
		return false
	}
	call := LifecycleCall{Op: op, AutoScalingGroupName: form.Get("AutoScalingGroupName"), LifecycleHookName: form.Get("LifecycleHookName"),
		InstanceID: form.Get("InstanceId"), Token: form.Get("LifecycleActionToken"), Result: form.Get("LifecycleActionResult"),
		AccessKeyID: accessKeyID(r.Header.Get("Authorization")), Time: time.Now().UTC()}
	msg := checkLifecycleCall(call)
	var hook hookSettings
	if msg == "" {
		hook, msg = s.checkHook(r, call.AutoScalingGroupName, call.LifecycleHookName)
	}
	if msg == "" {
		msg = s.actOnLifecycle(call, hook)
	}
	call.Status = http.StatusOK
	if msg != "" {
		call.Status, call.Error = http.StatusBadRequest, "ValidationError"
	}
	s.lifecycle.mu.Lock()
	s.lifecycle.calls = append(s.lifecycle.calls, call)
	s.lifecycle.mu.Unlock()
	slog.Info("autoscaling", "op", op, "asg", call.AutoScalingGroupName, "hook", call.LifecycleHookName,
		"instance", call.InstanceID, "result", call.Result, "status", call.Status, "error", call.Error)
	requestID := "localeks-" + call.Time.Format("150405.000000000")
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", requestID)
	if msg != "" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `<ErrorResponse xmlns="%s"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
			autoscalingNS, xmlEscape(msg), requestID)
		return true
	}
	_, _ = fmt.Fprintf(w, `<%sResponse xmlns="%s"><%sResult/><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>`,
		op, autoscalingNS, op, requestID, op)
	return true
}

// checkLifecycleCall applies Auto Scaling's checks of the parameters.
func checkLifecycleCall(c LifecycleCall) string {
	null := func(member string) string {
		return "1 validation error detected: Value null at '" + member + "' failed to satisfy constraint: Member must not be null"
	}
	switch {
	case c.AutoScalingGroupName == "":
		return null("autoScalingGroupName")
	case c.LifecycleHookName == "":
		return null("lifecycleHookName")
	case c.Op == "CompleteLifecycleAction" && c.Result == "":
		return null("lifecycleActionResult")
	case c.Op == "CompleteLifecycleAction" && c.Result != "CONTINUE" && c.Result != "ABANDON":
		return "Invalid value for LifecycleActionResult: " + c.Result + ". Valid values are: CONTINUE, ABANDON"
	case c.Token == "" && c.InstanceID == "":
		return "Either LifecycleActionToken or InstanceId must be specified"
	}
	return ""
}

// hookSettings is what a lifecycle hook says about its actions' end.
type hookSettings struct {
	Name             string `xml:"LifecycleHookName"`
	HeartbeatTimeout int    `xml:"HeartbeatTimeout"`
	DefaultResult    string `xml:"DefaultResult"`
}

// checkHook asks moto, as the caller, whether the group and its hook exist,
// and returns the hook's settings.
func (s *Server) checkHook(r *http.Request, group, hook string) (hookSettings, string) {
	form := url.Values{"Action": {"DescribeLifecycleHooks"}, "Version": {"2011-01-01"},
		"AutoScalingGroupName": {group}, "LifecycleHookNames.member.1": {hook}}
	var hooks struct {
		Hooks []hookSettings `xml:"DescribeLifecycleHooksResult>LifecycleHooks>member"`
	}
	if err := s.askMoto(r, form, &hooks); err != nil {
		return hookSettings{}, "localeks shim: ask moto for the lifecycle hook: " + err.Error()
	}
	for _, h := range hooks.Hooks {
		if h.Name == hook {
			return h, ""
		}
	}
	form = url.Values{"Action": {"DescribeAutoScalingGroups"}, "Version": {"2011-01-01"}, "AutoScalingGroupNames.member.1": {group}}
	var groups struct {
		Names []string `xml:"DescribeAutoScalingGroupsResult>AutoScalingGroups>member>AutoScalingGroupName"`
	}
	if err := s.askMoto(r, form, &groups); err == nil && len(groups.Names) == 0 {
		return hookSettings{}, "AutoScalingGroup name not found - AutoScalingGroup " + group + " not found"
	}
	return hookSettings{}, "No Lifecycle Hook found with name: " + hook + " for AutoScalingGroup: " + group
}

// askMoto sends an autoscaling query to moto signed as r (moto tells
// accounts apart by the access key) and decodes its XML answer into out.
func (s *Server) askMoto(r *http.Request, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, s.upstream.String()+"/", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Host = r.Host
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, k := range []string{"Authorization", "X-Amz-Security-Token", "X-Amz-Date"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.client.Do(req) //nolint:gosec // G704: loopback upstream only
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", form.Get("Action"), resp.Status, bytes.TrimSpace(b))
	}
	return xml.Unmarshal(b, out)
}

// actOnLifecycle completes or heartbeats the pending action c names, or
// says why there is none, in Auto Scaling's words. A pending action of the
// hook whose last heartbeat (or registration) is older than the hook's
// heartbeat timeout ends first, with the hook's default result, as Auto
// Scaling ends it.
func (s *Server) actOnLifecycle(c LifecycleCall, hook hookSettings) string {
	b := &s.lifecycle
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now().UTC()
	for _, a := range b.actions {
		if a.State == ActionPending && a.AutoScalingGroupName == c.AutoScalingGroupName && a.LifecycleHookName == c.LifecycleHookName &&
			hook.HeartbeatTimeout > 0 && now.Sub(a.lastBeat) > time.Duration(hook.HeartbeatTimeout)*time.Second {
			a.State, a.Result, a.Completed = ActionTimedOut, hook.DefaultResult, &now
		}
	}
	var found *LifecycleAction
	for _, a := range b.actions {
		if a.State != ActionPending || a.AutoScalingGroupName != c.AutoScalingGroupName || a.LifecycleHookName != c.LifecycleHookName {
			continue
		}
		if (c.Token == "" || a.Token == c.Token) && (c.InstanceID == "" || a.InstanceID == c.InstanceID) {
			found = a
			break
		}
	}
	if found == nil {
		if c.Token != "" {
			return "No active Lifecycle Action found with token " + c.Token
		}
		return "No active Lifecycle Action found with instance ID " + c.InstanceID
	}
	if c.Op == "RecordLifecycleActionHeartbeat" {
		found.Heartbeats++
		found.lastBeat = now
		return ""
	}
	found.State, found.Result, found.Completed = ActionCompleted, c.Result, &now
	return ""
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
