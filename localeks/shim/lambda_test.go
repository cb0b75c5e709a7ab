package shim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLambdaInvokeForwarded: a function's Invoke of itself reaches the
// Invoke API registered at /__lambda (per function, else the default one),
// with its invocation type and payload; without one it is Lambda's
// ResourceNotFoundException; every call is recorded.
func TestLambdaInvokeForwarded(t *testing.T) {
	t.Parallel()
	_, client, proxy := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		// moto: only the caller's identity, for the refusal's ARN.
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::210987654321:assumed-role/lambda-eks-lifecycle/s</Arn></GetCallerIdentityResult></GetCallerIdentityResponse>`)
	})
	type got struct{ Path, Type, Payload string }
	var mu sync.Mutex
	var seenBy = map[string][]got{}
	api := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			seenBy[name] = append(seenBy[name], got{r.URL.Path, r.Header.Get("X-Amz-Invocation-Type"), string(b)})
			mu.Unlock()
			if r.Header.Get("X-Amz-Invocation-Type") == "Event" {
				w.WriteHeader(http.StatusAccepted)
				return
			}
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			_, _ = io.WriteString(w, `{"errorType":"Timeout","errorMessage":"x"}`)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	invoke := func(name, typ, payload string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/"+name+"/invocations", strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		if typ != "" {
			req.Header.Set("X-Amz-Invocation-Type", typ)
		}
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=ASIASELF/20261206/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=x")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp, string(b)
	}

	resp, body := invoke("lambda-eks-lifecycle", "Event", `{"a":1}`)
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Amzn-Errortype") != "ResourceNotFoundException" ||
		!strings.Contains(body, "Function not found: arn:aws:lambda:us-east-1:210987654321:function:lambda-eks-lifecycle") {
		t.Errorf("unregistered: %d %q %s", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"), body)
	}

	for _, bad := range []string{`{"endpoint":"http://10.0.0.1:9000"}`, `{"endpoint":"https://127.0.0.1:9000"}`, `{"endpoint":"http://127.0.0.1"}`, `{"url":"x"}`} {
		if got := postJSON(t, proxy+"/__lambda", bad); got != http.StatusBadRequest {
			t.Errorf("registration %s: %d, want 400", bad, got)
		}
	}
	def, own := api("default"), api("own")
	if got := postJSON(t, proxy+"/__lambda", `{"endpoint":"`+def.URL+`"}`); got != http.StatusNoContent {
		t.Fatalf("register default: %d", got)
	}
	if got := postJSON(t, proxy+"/__lambda", `{"endpoint":"`+own.URL+`","functions":["lambda-eks-lifecycle"]}`); got != http.StatusNoContent {
		t.Fatalf("register own: %d", got)
	}
	if resp, _ := invoke("arn:aws:lambda:us-east-1:123456789012:function:lambda-eks-lifecycle", "Event", `{"b":2}`); resp.StatusCode != http.StatusAccepted {
		t.Errorf("event: %d", resp.StatusCode)
	}
	if resp, body := invoke("lambda-eks", "", `{}`); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(body, "Timeout") {
		t.Errorf("request-response: %d %q %s", resp.StatusCode, resp.Header.Get("X-Amz-Function-Error"), body)
	}
	mu.Lock()
	wantOwn := []got{{"/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:lambda-eks-lifecycle/invocations", "Event", `{"b":2}`}}
	if diff := cmp.Diff(wantOwn, seenBy["own"]); diff != "" {
		t.Errorf("own endpoint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]got{{"/2015-03-31/functions/lambda-eks/invocations", "", `{}`}}, seenBy["default"]); diff != "" {
		t.Errorf("default endpoint (-want +got):\n%s", diff)
	}
	mu.Unlock()

	req, _ := http.NewRequest(http.MethodDelete, proxy+"/__lambda?endpoint="+own.URL, nil)
	if resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("unregister: %v %v", resp, err)
	}
	if resp, _ := invoke("lambda-eks-lifecycle", "Event", `{}`); resp.StatusCode != http.StatusAccepted {
		t.Errorf("after unregistering its own endpoint: %d", resp.StatusCode)
	}

	var rec LambdaRecord
	getJSON(t, proxy+"/__lambda", &rec)
	if diff := cmp.Diff([]LambdaRegistration{{Endpoint: def.URL}}, rec.Registrations); diff != "" {
		t.Errorf("registrations (-want +got):\n%s", diff)
	}
	type brief struct {
		Function, Type string
		Bytes, Status  int
		Error, Key     string
	}
	var briefs []brief
	for _, c := range rec.Calls {
		if c.Time.IsZero() {
			t.Errorf("call without a time: %+v", c)
		}
		briefs = append(briefs, brief{c.Function, c.InvocationType, c.PayloadBytes, c.Status, c.Error, c.AccessKeyID})
	}
	want := []brief{
		{"lambda-eks-lifecycle", "Event", 7, 404, "ResourceNotFoundException", "ASIASELF"},
		{"lambda-eks-lifecycle", "Event", 7, 202, "", "ASIASELF"},
		{"lambda-eks", "RequestResponse", 2, 200, "", "ASIASELF"},
		{"lambda-eks-lifecycle", "Event", 2, 202, "", "ASIASELF"},
	}
	if diff := cmp.Diff(want, briefs); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if got := postJSON(t, proxy+"/__lambda/reset", ""); got != http.StatusNoContent {
		t.Errorf("reset: %d", got)
	}
	getJSON(t, proxy+"/__lambda", &rec)
	if len(rec.Calls) != 0 || len(rec.Registrations) != 1 {
		t.Errorf("after reset: %+v", rec)
	}
}

func TestLambdaFunctionName(t *testing.T) {
	for in, want := range map[string]string{
		"lambda-eks-lifecycle":                                                     "lambda-eks-lifecycle",
		"lambda-eks-lifecycle:$LATEST":                                             "lambda-eks-lifecycle",
		"123456789012:function:lambda-eks-lifecycle":                               "lambda-eks-lifecycle",
		"arn:aws:lambda:us-east-1:123456789012:function:lambda-eks-lifecycle":      "lambda-eks-lifecycle",
		"arn:aws:lambda:us-east-1:123456789012:function:lambda-eks-lifecycle:prod": "lambda-eks-lifecycle",
	} {
		if got := lambdaFunctionName(in); got != want {
			t.Errorf("lambdaFunctionName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLambdaRouting: a registration for a caller's access key wins for
// that caller; among the rest the latest wins, and withdrawing it brings
// the earlier one back, so that functions served side by side each get
// their own invocations.
func TestLambdaRouting(t *testing.T) {
	t.Parallel()
	s := &Server{} // the routing table alone
	for _, r := range []LambdaRegistration{
		{Endpoint: "http://127.0.0.1:1001"},
		{Endpoint: "http://127.0.0.1:1002", Functions: []string{"f"}},
		{Endpoint: "http://127.0.0.1:1003", Functions: []string{"f"}, Callers: []string{"ASIAONE"}},
		{Endpoint: "http://127.0.0.1:1004", Functions: []string{"f"}},
		{Endpoint: "http://127.0.0.1:1005", Callers: []string{"ASIATWO"}},
	} {
		if err := s.RegisterLambda(r); err != nil {
			t.Fatal(err)
		}
	}
	route := func() map[string]string {
		got := map[string]string{}
		for _, c := range []struct{ fn, caller string }{{"f", "ASIAONE"}, {"f", "ASIATWO"}, {"f", "ASIAOTHER"}, {"g", "ASIAONE"}, {"g", "ASIATWO"}, {"g", ""}} {
			got[c.fn+" "+c.caller] = s.lambdaEndpoint(c.fn, c.caller)
		}
		return got
	}
	want := map[string]string{"f ASIAONE": "http://127.0.0.1:1003", "f ASIATWO": "http://127.0.0.1:1005", "f ASIAOTHER": "http://127.0.0.1:1004",
		"g ASIAONE": "http://127.0.0.1:1001", "g ASIATWO": "http://127.0.0.1:1005", "g ": "http://127.0.0.1:1001"}
	if diff := cmp.Diff(want, route()); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	s.UnregisterLambda("http://127.0.0.1:1004")
	s.UnregisterLambda("http://127.0.0.1:1003/")
	want["f ASIAONE"], want["f ASIAOTHER"] = "http://127.0.0.1:1002", "http://127.0.0.1:1002"
	if diff := cmp.Diff(want, route()); diff != "" {
		t.Errorf("routes after withdrawals (-want +got):\n%s", diff)
	}
}
