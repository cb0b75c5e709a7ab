package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// knownCodes are the errorTypes a caller may see.
var knownCodes = []string{string(invoke.InvalidEvent), string(invoke.ClusterNotFound), string(invoke.Unauthorized), string(invoke.Forbidden),
	string(invoke.NotFound), string(invoke.Conflict), string(invoke.Timeout), string(invoke.Unavailable), string(invoke.Internal)}

// FuzzInvoke feeds raw payloads to the Lambda handler, as Lambda would,
// against a fake cluster. Whatever the bytes, the answer is a JSON
// response of the documented shape or a Lambda error with a known
// errorType; a payload that DecodeEvent or Resolve refuses is invoke.InvalidEvent
// and sends no request at all.
func FuzzInvoke(f *testing.F) {
	for _, seed := range []string{
		``, `null`, `{}`, ` {} `, `{"replicas":3}`,
		`{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012",` +
			`"time":"2026-11-22T12:00:00Z","region":"us-east-1","resources":[],"detail":{}}`,
		// The hostile cases.
		`{"action":"status","kind":"Deployment","name":"web","action":"delete"}`,
		`{"action":"restart","name":"web","dryRun":true,"DRYRUN":false}`,
		`{"Replicas":3}`,
		`{"action":"status"}{"action":"delete"}`,
		`{"action":"status"} trailing`,
		`not json`, `[]`, `"x"`, `3`, `true`,
		`{"a":` + strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000) + `}`,
		`{"action":"scale","selector":"app=web\u0000","replicas":0}`,
		`{"image":"nginx\u0000"}`, `{"name":"web\u0000"}`,
		`{"name":"a\xff"}`,
		// The actions.
		`{"action":"apply","manifest":"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n","force":true}`,
		`{"action":"apply","manifest":"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n","dryRun":true}`,
		`{"action":"scale","name":"web","replicas":0}`, `{"action":"scale","selector":"app=web","replicas":"restore"}`,
		`{"action":"restart","name":"web"}`, `{"action":"status","name":"web"}`,
		`{"action":"delete","kind":"ConfigMap","name":"a","propagation":"Foreground"}`,
		`{"action":"status","manifest":"apiVersion: v1\nkind: List\nitems: []\n"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if cfnresource.Is(payload) {
			t.Skip("CloudFormation requests answer to their ResponseURL; customResource has its own tests")
		}
		ev, err := DecodeEvent(payload)
		if err == nil {
			_, err = Resolve(ev, testConfig)
		}
		refused := err != nil

		api := newFakeAPI(t, deployment("web", 2))
		h := New(testConfig, api.connector(), discardLogger())
		// A second leaves no time to wait for a rollout (deadlineMargin and
		// waitMargin take it), so an event with a wait costs no more than
		// one without.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		out, err := h.Invoke(ctx, payload)

		if err != nil {
			var le messages.InvokeResponse_Error
			if !errors.As(err, &le) {
				t.Fatalf("error %v (%T) is not a Lambda error response", err, err)
			}
			if !slices.Contains(knownCodes, le.Type) || le.Message == "" {
				t.Fatalf("errorType %q (%q) is not a known one", le.Type, le.Message)
			}
			if refused && le.Type != string(invoke.InvalidEvent) {
				t.Fatalf("a refused payload ended as %s: %s", le.Type, le.Message)
			}
			if n, reqs := api.connects.Load(), api.Requests(); refused && (n != 0 || len(reqs) != 0) {
				t.Fatalf("a refused payload connected %d times and sent %d requests", n, len(reqs))
			}
			return
		}
		if refused {
			t.Fatalf("a payload DecodeEvent or Resolve refuses succeeded: %s", out)
		}
		var resp Response
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil || dec.More() {
			t.Fatalf("response %s is not one Response: %v", out, err)
		}
		if resp.Cluster == "" || !slices.Contains(actions, resp.Action) || resp.Objects == nil {
			t.Fatalf("response %s lacks its cluster, action or objects", out)
		}
	})
}
