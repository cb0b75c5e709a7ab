package helmrelease

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/handler"
)

func TestHelmProperties(t *testing.T) {
	for _, tc := range []struct {
		name, props string
		want        Event
		problem     string
	}{
		{name: "strings as CloudFormation sends them", props: `{"ServiceToken":"arn","ServiceTimeout":"300","Release":"web","Chart":"demo","Repository":"https://x.example",` +
			`"Version":"1.0.0","Values":{"replicaCount":"2"},"CreateNamespace":"true","Wait":"300","Atomic":"false"}`,
			want: Event{Action: ActionUpgrade, Release: "web", Chart: "demo", Repository: "https://x.example", Version: "1.0.0",
				Values: json.RawMessage(`{"replicaCount":"2"}`), CreateNamespace: true, Wait: &Wait{On: true, Max: 300 * time.Second}}},
		{name: "values as a JSON string", props: `{"Release":"web","Values":"{\"a\":1}","Wait":"true"}`,
			want: Event{Action: ActionUpgrade, Release: "web", Values: json.RawMessage(`{"a":1}`), Wait: &Wait{On: true}}},
		{name: "unknown property", props: `{"Release":"web","Value":{}}`, problem: `unknown field "Value"`},
		{name: "bad bool", props: `{"Release":"web","Atomic":"yes"}`, problem: "Atomic must be true or false"},
		{name: "bad wait", props: `{"Release":"web","Wait":"soon"}`, problem: "Wait"},
		{name: "values not an object", props: `{"Release":"web","Values":"a: 1"}`, problem: "Values must be an object"},
		{name: "no properties", props: ``, problem: "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeHelmProperties(json.RawMessage(tc.props), "ResourceProperties", ActionUpgrade)
			if tc.problem != "" {
				var e *handler.Error
				if err == nil || !strings.Contains(err.Error(), tc.problem) || !asHandlerError(err, &e) || e.Code != handler.InvalidEvent {
					t.Fatalf("got %v, want InvalidEvent saying %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func asHandlerError(err error, e **handler.Error) bool {
	h, ok := err.(*handler.Error) //nolint:errorlint // decodeHelmProperties returns it unwrapped
	*e = h
	return ok
}

// The PhysicalResourceId changes exactly when the release does.
func TestPhysicalID(t *testing.T) {
	h := &Handler{cfg: handler.Config{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "s"}}
	req := func(props string) handler.CustomResourceRequest {
		return handler.CustomResourceRequest{RequestType: "Update", StackID: "arn:aws:cloudformation:us-east-1:1:stack/app/u",
			LogicalResourceID: "Web", PhysicalResourceID: "old", ResourceProperties: json.RawMessage(props)}
	}
	base := h.physicalID(req(`{"Release":"web","Chart":"demo","Repository":"https://x.example","Version":"1.0.0"}`))
	if !strings.HasPrefix(base, "app/Web/") {
		t.Errorf("id %s", base)
	}
	if got := h.physicalID(req(`{"Release":"web","Chart":"demo","Repository":"https://x.example","Version":"2.0.0","Values":{"a":1}}`)); got != base {
		t.Errorf("a new version or values changed the id: %s, %s", got, base)
	}
	for _, props := range []string{`{"Release":"api","Chart":"demo","Repository":"https://x.example"}`,
		`{"Release":"web","Namespace":"apps","Chart":"demo","Repository":"https://x.example"}`,
		`{"Release":"web","Cluster":"other","Chart":"demo","Repository":"https://x.example"}`} {
		if got := h.physicalID(req(props)); got == base {
			t.Errorf("%s kept the id %s", props, got)
		}
	}
	if got := h.physicalID(req(`{"Release":"Bad_Name"}`)); got != "old" {
		t.Errorf("unreadable properties on Update: id %s, want the old one", got)
	}
}

// A Delete whose PhysicalResourceId is not its properties' owner touches
// nothing: the release belongs to another resource (or none).
func TestDeleteOfAnotherOwner(t *testing.T) {
	h := &Handler{cfg: handler.Config{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "s"}}
	req := handler.CustomResourceRequest{RequestType: "Delete", StackID: "arn:aws:cloudformation:us-east-1:1:stack/app/u",
		LogicalResourceID: "Web", ResourceProperties: json.RawMessage(`{"Release":"web","Chart":"demo","Repository":"https://x.example"}`)}
	req.PhysicalResourceID = h.physicalID(req)
	req.ResourceProperties = json.RawMessage(`{"Release":"api","Chart":"demo","Repository":"https://x.example"}`)
	reason, _, err := h.cfnDelete(context.Background(), req)
	if err != nil || !strings.Contains(reason, "names no release of these properties") {
		t.Errorf("got %q, %v; want nothing to delete", reason, err)
	}
}
