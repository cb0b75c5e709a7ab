package cfnresource

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func TestIs(t *testing.T) {
	tests := []struct {
		payload string
		want    bool
	}{
		{`{"RequestType":"Create","ResponseURL":"https://example.com/x","StackId":"s"}`, true},
		{`{"ResponseURL":"https://example.com/x","RequestType":"Delete"}`, true},
		{`{"RequestType":"","ResponseURL":""}`, true},                             // answered FAILED, or refused, by Serve
		{`{"requestType":"Create","responseURL":"https://example.com/x"}`, false}, // names are case-sensitive
		{`{"RequestType":"Create"}`, false},
		{`{"action":"apply","manifest":"RequestType: ResponseURL"}`, false},
		{`{"a":{"RequestType":"Create","ResponseURL":"u"}}`, false}, // only the top level counts
		{`{"RequestType":1,"ResponseURL":"u"}`, false},
		{`{"RequestType":null,"ResponseURL":"u"}`, false},
		{`not json "RequestType" "ResponseURL"`, false},
	}
	for _, tt := range tests {
		if got := Is([]byte(tt.payload)); got != tt.want {
			t.Errorf("Is(%s) = %v, want %v", tt.payload, got, tt.want)
		}
	}
}

func TestRequestCheck(t *testing.T) {
	ok := Request{RequestType: cfn.RequestUpdate, StackID: "s", RequestID: "r", LogicalResourceID: "l", PhysicalResourceID: "p"}
	with := func(f func(*Request)) Request {
		r := ok
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		req     Request
		wantErr string // the whole InvalidEvent message; "" for none
	}{
		{"update", ok, ""},
		{"delete", with(func(r *Request) { r.RequestType = cfn.RequestDelete }), ""},
		{"create without PhysicalResourceId", with(func(r *Request) { r.RequestType, r.PhysicalResourceID = cfn.RequestCreate, "" }), ""},
		{"update without PhysicalResourceId", with(func(r *Request) { r.PhysicalResourceID = "" }),
			"custom resource request lacks PhysicalResourceId"},
		{"delete without PhysicalResourceId", with(func(r *Request) { r.RequestType, r.PhysicalResourceID = cfn.RequestDelete, "" }),
			"custom resource request lacks PhysicalResourceId"},
		{"no ids at all", Request{RequestType: cfn.RequestDelete},
			"custom resource request lacks StackId, RequestId, LogicalResourceId, PhysicalResourceId"},
		{"no RequestId", with(func(r *Request) { r.RequestID = "" }), "custom resource request lacks RequestId"},
		{"unknown type", with(func(r *Request) { r.RequestType = "Upsert" }), `RequestType "Upsert": want Create, Update or Delete`},
		{"type in another case", with(func(r *Request) { r.RequestType = "create" }), `RequestType "create": want Create, Update or Delete`},
		{"no type", with(func(r *Request) { r.RequestType = "" }), `RequestType "": want Create, Update or Delete`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.req.check()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			var e *invoke.Error
			if !errors.As(err, &e) || e.Code != invoke.InvalidEvent || e.Message != tt.wantErr {
				t.Errorf("check = %v, want InvalidEvent: %s", err, tt.wantErr)
			}
		})
	}
}

func TestResponseURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/arn%3Aaws?X-Amz-Signature=abc": true,
		"https://bucket.s3.cn-north-1.amazonaws.com.cn/key":                                                      true,
		"https://bucket.s3.amazonaws.com:443/key":                                                                true,
		"http://bucket.s3.amazonaws.com/key":                                                                     false,
		"https://169.254.169.254/latest":                                                                         false,
		"https://amazonaws.com.evil.example/k":                                                                   false,
		"https://evilamazonaws.com/k":                                                                            false,
		"https:///k":                                                                                             false,
		"https://bucket.s3.amazonaws.com\x00/k":                                                                  false,
		"":                                                                                                       false,
	} {
		err := checkResponseURL(raw)
		if (err == nil) != ok {
			t.Errorf("checkResponseURL(%q) = %v, want ok %v", raw, err, ok)
		}
		var e *invoke.Error
		if err != nil && (!errors.As(err, &e) || e.Code != invoke.InvalidEvent) {
			t.Errorf("checkResponseURL(%q) = %v, want InvalidEvent", raw, err)
		}
	}
	for raw, want := range map[string]string{
		"https://b.s3.amazonaws.com/arn%3Aaws%3Acloudformation/req?X-Amz-Signature=secret&X-Amz-Credential=AKIA": "https://b.s3.amazonaws.com/arn%3Aaws%3Acloudformation/req",
		"https://user:password@b.s3.amazonaws.com/k#frag":                                                        "https://b.s3.amazonaws.com/k",
		"https://b.s3.amazonaws.com/%zz?X-Amz-Signature=secret":                                                  "(unparsable URL)",
	} {
		if got := SafeURL(raw); got != want {
			t.Errorf("SafeURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestStackName(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:cloudformation:us-east-1:123456789012:stack/my-stack/1c2fa620-982a-11e3-aff7-50e2416294e0": "my-stack",
		"arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/s":                                         "s",
		"not-an-arn": "not-an-arn",
		"arn:aws:cloudformation:us-east-1:1:stack/" + strings.Repeat("n", 200) + "/u": strings.Repeat("n", 128),
		strings.Repeat("x", 300): strings.Repeat("x", 128),
		"":                       "",
	} {
		if got := StackName(in); got != want {
			t.Errorf("StackName(%.60q...) = %q, want %q", in, got, want)
		}
	}
}

// idResource is a Resource whose PhysicalID is the "ID" of its properties,
// or an error when they have none. Planning does no work.
type idResource struct{}

func (idResource) PhysicalID(req Request) (string, error) {
	var p struct{ ID string }
	if err := json.Unmarshal(req.ResourceProperties, &p); err != nil || p.ID == "" {
		return "", errors.New("no ID")
	}
	return p.ID, nil
}

func (idResource) Apply(context.Context, Request, Plan) (string, map[string]string, error) {
	return "", nil, errors.New("planning applied")
}

func (idResource) Delete(context.Context, Request, Plan) (string, error) {
	return "", errors.New("planning deleted")
}

func TestPlan(t *testing.T) {
	const stack = "arn:aws:cloudformation:us-east-1:123456789012:stack/s/u"
	req := func(typ cfn.RequestType, phys, props string) Request {
		return Request{RequestType: typ, StackID: stack, RequestID: "q", LogicalResourceID: "R", PhysicalResourceID: phys,
			ResourceProperties: json.RawMessage(props)}
	}
	tests := []struct {
		name string
		req  Request
		want Plan
	}{
		{"create", req(cfn.RequestCreate, "", `{"ID":"s/R/1"}`),
			Plan{ID: "s/R/1", Owner: "s/R/1", failedID: "s/R/1/create-failed"}},
		{"update, same id", req(cfn.RequestUpdate, "s/R/1", `{"ID":"s/R/1"}`),
			Plan{ID: "s/R/1", Owner: "s/R/1", failedID: "s/R/1"}},
		{"update to a new id replaces", req(cfn.RequestUpdate, "s/R/1", `{"ID":"s/R/2"}`),
			Plan{ID: "s/R/2", Owner: "s/R/2", Replacement: true, failedID: "s/R/1"}},
		{"update to unreadable properties keeps the id", req(cfn.RequestUpdate, "s/R/1", `{"Bad":1}`),
			Plan{ID: "s/R/1", Owner: "s/R/1", failedID: "s/R/1"}},
		{"delete", req(cfn.RequestDelete, "s/R/1", `{"ID":"s/R/2"}`),
			Plan{ID: "s/R/1", Owner: "s/R/1", failedID: "s/R/1"}},
		{"delete after a failed create", req(cfn.RequestDelete, "s/R/1/create-failed", `{"ID":"s/R/1"}`),
			Plan{ID: "s/R/1/create-failed", Owner: "s/R/1", AfterFailedCreate: true, failedID: "s/R/1/create-failed"}},
		{"delete of an unknown type is planned as a delete", req("Upsert", "p", `{}`),
			Plan{ID: "p", Owner: "p", failedID: "p"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, plan(tt.req, idResource{}), cmp.AllowUnexported(Plan{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}

	// A Create whose properties cannot be read gets an id made from the
	// request: the stack's name, the logical id and a hash of the request id.
	bad := plan(req(cfn.RequestCreate, "", `{"Bad":1}`), idResource{})
	if !regexp.MustCompile(`^s/R/[0-9a-f]{16}$`).MatchString(bad.ID) || bad.Owner != bad.ID || bad.failedID != bad.ID+FailedCreateSuffix {
		t.Errorf("plan of a create with bad properties = %+v, want s/R/<16 hex>, owning itself, and %s", bad, FailedCreateSuffix)
	}
	again := plan(req(cfn.RequestCreate, "", `{"Bad":2}`), idResource{})
	other := req(cfn.RequestCreate, "", `{"Bad":1}`)
	other.RequestID = "q2"
	if again.ID != bad.ID || plan(other, idResource{}).ID == bad.ID {
		t.Errorf("the made id must follow the request id only: %s, %s, %s", bad.ID, again.ID, plan(other, idResource{}).ID)
	}
}

func TestDecodeRequest(t *testing.T) {
	const url = "https://cfn.s3.amazonaws.com/r?X-Amz-Signature=s"
	got, err := decodeRequest([]byte(`{"RequestType":"Update","ResponseURL":"` + url + `","StackId":"s","RequestId":"r",
		"ResourceType":"Custom::X","LogicalResourceId":"L","PhysicalResourceId":"p","ResourceProperties":{"A":1},
		"OldResourceProperties":{"A":0},"ServiceToken":"arn:aws:lambda:us-east-1:1:function:f","NewEnvelopeField":true}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Request{RequestType: cfn.RequestUpdate, ResponseURL: url, StackID: "s", RequestID: "r", ResourceType: "Custom::X",
		LogicalResourceID: "L", PhysicalResourceID: "p", ResourceProperties: json.RawMessage(`{"A":1}`), OldResourceProperties: json.RawMessage(`{"A":0}`)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	for payload, wantErr := range map[string]string{
		`{"RequestType":"Create","ResponseURL":"http://cfn.s3.amazonaws.com/x"}`:    "ResponseURL is not an https URL",
		`{"RequestType":"Create","ResponseURL":"https://169.254.169.254/x"}`:        `ResponseURL host "169.254.169.254" is not an AWS host (*.amazonaws.com)`,
		`{"RequestType":"Create","ResponseURL":7}`:                                  "custom resource request: ",
		`{"RequestType":"Create","responseURL":"https://cfn.s3.amazonaws.com/x"}`:   "ResponseURL is not an https URL",
		`{"RequestType":"Create","ResponseURL":"https://cfn.s3.amazonaws.com/x"} x`: "custom resource request: ",
		`[]`: "custom resource request: ",
		`{"RequestType":"Create","ResponseURL":"https://cfn.s3.amazonaws.com/x","ResourceProperties":` + strings.Repeat(" ", invoke.MaxEventBytes) + `{}}`: "at most 6291456 are accepted",
	} {
		_, err := decodeRequest([]byte(payload))
		var e *invoke.Error
		if !errors.As(err, &e) || e.Code != invoke.InvalidEvent || !strings.Contains(e.Message, wantErr) {
			t.Errorf("decodeRequest(%.80s) = %v, want InvalidEvent with %q", payload, err, wantErr)
		}
	}
}
