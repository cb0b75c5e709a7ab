package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Lambda's Invoke (POST /2015-03-31/functions/NAME/invocations), which the
// functions call on themselves to continue a long task in a new invocation.
// moto would run a function in Docker; the shim forwards the call to a
// Lambda Invoke API on loopback registered with POST /__lambda
// {"endpoint":"http://127.0.0.1:PORT"}, optionally with "functions":[NAMES]
// (only those) and "callers":[ACCESS KEY IDS] (only calls signed with
// those: the credentials of the function the endpoint serves, so that a
// function's Invoke of itself reaches its own sandbox while several run).
// A call goes to the latest registration that names its caller, else to
// the latest for any caller that names its function, else to the latest
// for any function; with none it is answered ResourceNotFoundException,
// as Lambda answers for a function that does not exist. DELETE
// /__lambda?endpoint=URL withdraws an endpoint's registrations. Each
// invocation is recorded: GET /__lambda, POST /__lambda/reset. Every other
// Lambda request goes to moto.

// LambdaCall is one recorded Invoke.
type LambdaCall struct {
	Function       string `json:"function"`
	InvocationType string `json:"invocationType"`
	PayloadBytes   int    `json:"payloadBytes"`
	// Endpoint is where the shim forwarded the call ("" when none was
	// registered); Status the HTTP status the caller got; Error the
	// X-Amzn-ErrorType of a refusal.
	Endpoint    string    `json:"endpoint,omitempty"`
	Status      int       `json:"status"`
	Error       string    `json:"error,omitempty"`
	AccessKeyID string    `json:"accessKeyId"`
	Time        time.Time `json:"time"`
}

// LambdaRecord is what GET /__lambda answers: the registrations, oldest
// first, and the recorded invocations.
type LambdaRecord struct {
	Registrations []LambdaRegistration `json:"registrations"`
	Calls         []LambdaCall         `json:"calls"`
}

// LambdaRegistration is the body of POST /__lambda.
type LambdaRegistration struct {
	Endpoint  string   `json:"endpoint"`
	Functions []string `json:"functions,omitempty"`
	// Callers are access key IDs; none: any caller.
	Callers []string `json:"callers,omitempty"`
}

type lambdaBook struct {
	mu    sync.Mutex
	regs  []LambdaRegistration
	calls []LambdaCall
}

var invokePath = regexp.MustCompile(`^/2015-03-31/functions/([^/]+)/invocations$`)

// Lambda returns the registrations and the recorded invocations.
func (s *Server) Lambda() LambdaRecord {
	b := &s.lambda
	b.mu.Lock()
	defer b.mu.Unlock()
	return LambdaRecord{Registrations: append([]LambdaRegistration{}, b.regs...), Calls: append([]LambdaCall{}, b.calls...)}
}

// RegisterLambda routes the invocations of reg.Functions (none: of any
// function) by reg.Callers (none: by anyone) to reg.Endpoint, an http URL
// on loopback serving the Lambda Invoke API.
func (s *Server) RegisterLambda(reg LambdaRegistration) error {
	u, err := url.Parse(reg.Endpoint)
	if err != nil || u.Scheme != "http" || !isLoopback(u.Hostname()) || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("endpoint %q: want http://127.0.0.1:PORT", reg.Endpoint)
	}
	reg.Endpoint = strings.TrimSuffix(reg.Endpoint, "/")
	b := &s.lambda
	b.mu.Lock()
	defer b.mu.Unlock()
	b.regs = append(b.regs, reg)
	return nil
}

// UnregisterLambda withdraws every registration of endpoint.
func (s *Server) UnregisterLambda(endpoint string) {
	b := &s.lambda
	b.mu.Lock()
	defer b.mu.Unlock()
	b.regs = slices.DeleteFunc(b.regs, func(r LambdaRegistration) bool { return r.Endpoint == strings.TrimSuffix(endpoint, "/") })
}

// lambdaEndpoint is where an Invoke of function by caller goes, "" for
// nowhere.
func (s *Server) lambdaEndpoint(function, caller string) string {
	b := &s.lambda
	b.mu.Lock()
	defer b.mu.Unlock()
	names := func(r LambdaRegistration) bool {
		return len(r.Functions) == 0 || slices.Contains(r.Functions, function)
	}
	for _, match := range []func(LambdaRegistration) bool{
		func(r LambdaRegistration) bool { return caller != "" && slices.Contains(r.Callers, caller) && names(r) },
		func(r LambdaRegistration) bool { return len(r.Callers) == 0 && slices.Contains(r.Functions, function) },
		func(r LambdaRegistration) bool { return len(r.Callers) == 0 && len(r.Functions) == 0 },
	} {
		for i := len(b.regs) - 1; i >= 0; i-- {
			if match(b.regs[i]) {
				return b.regs[i].Endpoint
			}
		}
	}
	return ""
}

// lambdaAPI serves the shim's /__lambda endpoints; it says whether r was
// one.
func (s *Server) lambdaAPI(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/__lambda" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Lambda())
	case r.URL.Path == "/__lambda" && r.Method == http.MethodPost:
		var reg LambdaRegistration
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&reg); err != nil {
			http.Error(w, "localeks shim: lambda: "+err.Error(), http.StatusBadRequest)
			return true
		}
		if err := s.RegisterLambda(reg); err != nil {
			http.Error(w, "localeks shim: lambda: "+err.Error(), http.StatusBadRequest)
			return true
		}
		slog.Info("lambda endpoint registered", "endpoint", reg.Endpoint, "functions", reg.Functions, "callers", reg.Callers)
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/__lambda" && r.Method == http.MethodDelete:
		s.UnregisterLambda(r.URL.Query().Get("endpoint"))
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/__lambda/reset" && r.Method == http.MethodPost:
		s.lambda.mu.Lock()
		s.lambda.calls = nil
		s.lambda.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		return false
	}
	return true
}

// lambdaFunctionName is the function an Invoke path names: a name, a
// partial or full ARN (with or without a version or alias).
func lambdaFunctionName(name string) string {
	fields := strings.Split(name, ":")
	for i, f := range fields {
		if f == "function" && i+1 < len(fields) {
			return fields[i+1]
		}
	}
	if len(fields) == 2 { // NAME:QUALIFIER
		return fields[0]
	}
	return name
}

// lambdaInvoke forwards an Invoke to the registered endpoint, and says
// whether r was one.
func (s *Server) lambdaInvoke(w http.ResponseWriter, r *http.Request) bool {
	m := invokePath.FindStringSubmatch(r.URL.Path)
	if r.Method != http.MethodPost || m == nil {
		return false
	}
	name := lambdaFunctionName(m[1])
	typ := r.Header.Get("X-Amz-Invocation-Type")
	if typ == "" {
		typ = "RequestResponse"
	}
	call := LambdaCall{Function: name, InvocationType: typ, AccessKeyID: accessKeyID(r.Header.Get("Authorization")), Time: time.Now().UTC()}
	record := func() {
		s.lambda.mu.Lock()
		s.lambda.calls = append(s.lambda.calls, call)
		s.lambda.mu.Unlock()
		slog.Info("lambda invoke", "function", name, "type", typ, "payloadBytes", call.PayloadBytes, "endpoint", call.Endpoint,
			"status", call.Status, "error", call.Error)
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, 6<<20+1))
	if err != nil {
		http.Error(w, "localeks shim: read request", http.StatusBadRequest)
		return true
	}
	call.PayloadBytes = len(payload)
	endpoint := s.lambdaEndpoint(name, call.AccessKeyID)
	if endpoint == "" {
		call.Status, call.Error = http.StatusNotFound, "ResourceNotFoundException"
		record()
		account := "123456789012"
		if arn := s.callerARN(r); strings.Count(arn, ":") >= 5 {
			account = strings.Split(arn, ":")[4]
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-Errortype", call.Error)
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"Type": "User",
			"message": "Function not found: arn:aws:lambda:" + regionOf(r.Host) + ":" + account + ":function:" + name})
		return true
	}
	call.Endpoint = endpoint
	// The endpoint is on loopback, checked at registration; only the
	// path comes from the client.
	out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, endpoint+r.URL.EscapedPath(), bytes.NewReader(payload)) //nolint:gosec // G704: see above
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return true
	}
	for _, k := range []string{"Content-Type", "X-Amz-Invocation-Type", "X-Amz-Log-Type", "X-Amz-Client-Context"} {
		if v := r.Header.Get(k); v != "" {
			out.Header.Set(k, v)
		}
	}
	// No client timeout: a RequestResponse invocation lasts as long as the
	// function's own timeout, and the caller's context bounds it.
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(out) //nolint:gosec // G704: loopback endpoint only
	if err != nil {
		call.Status, call.Error = http.StatusInternalServerError, "ServiceException"
		record()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-Errortype", call.Error)
		w.WriteHeader(call.Status)
		msg := "localeks shim: the Invoke API at " + endpoint + " did not answer"
		if errors.Is(err, r.Context().Err()) {
			msg = "localeks shim: the caller gave up"
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"Type": "Service", "message": msg})
		return true
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 7<<20))
	if err != nil {
		http.Error(w, "localeks shim: read the Invoke API's answer", http.StatusBadGateway)
		return true
	}
	call.Status, call.Error = resp.StatusCode, resp.Header.Get("X-Amzn-Errortype")
	record()
	for k, vs := range resp.Header {
		if hopByHop(k) || strings.EqualFold(k, "Content-Length") {
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
	return true
}

// regionOf returns the region part of an AWS host name:
// lambda.us-east-1.amazonaws.com -> us-east-1.
func regionOf(host string) string {
	if parts := strings.Split(host, "."); len(parts) >= 4 {
		return parts[1]
	}
	return "us-east-1"
}
