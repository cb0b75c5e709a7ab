package handler

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// ServeCustomResource answers for another function's work as
// customResource does for the manifest resource: SUCCESS with the planned
// id and Data, FAILED with the error's code, a panic or a cut at the
// deadline answered FAILED, Delete keeping the request's id.
func TestServeCustomResource(t *testing.T) {
	rec := &recorder{codes: []int{200}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	prev := responseClient
	responseClient = &http.Client{Transport: toServer{srv}}
	defer func() { responseClient = prev }()

	id := func(r CustomResourceRequest) string { return "stack/" + r.LogicalResourceID + "/planned" }
	for _, tc := range []struct {
		name, requestType string
		timeout           time.Duration
		fn                CustomResourceFunc
		status, physical  string
		reason            string
		data              map[string]string
	}{
		{"create succeeds", "Create", 10 * time.Second,
			func(context.Context, CustomResourceRequest) (string, map[string]string, error) {
				return "installed", map[string]string{"Revision": "1"}, nil
			}, "SUCCESS", "stack/Web/planned", "installed", map[string]string{"Revision": "1"}},
		{"create fails with a code", "Create", 10 * time.Second,
			func(context.Context, CustomResourceRequest) (string, map[string]string, error) {
				return "", nil, &Error{Code: NotFound, Message: "no such chart"}
			}, "FAILED", "stack/Web/planned", "NotFound: no such chart", nil},
		{"update keeps the old id on failure", "Update", 10 * time.Second,
			func(context.Context, CustomResourceRequest) (string, map[string]string, error) {
				return "", nil, errors.New("boom")
			}, "FAILED", "old-id", "Internal: boom", nil},
		{"delete keeps the request's id", "Delete", 10 * time.Second,
			func(_ context.Context, r CustomResourceRequest) (string, map[string]string, error) {
				return "deleted " + r.PhysicalResourceID, nil, nil
			}, "SUCCESS", "old-id", "deleted old-id", nil},
		{"panic", "Create", 10 * time.Second,
			func(context.Context, CustomResourceRequest) (string, map[string]string, error) { panic("oops") },
			"FAILED", "stack/Web/planned", "panicked: oops", nil},
		{"work past the deadline", "Create", 1500 * time.Millisecond,
			func(ctx context.Context, _ CustomResourceRequest) (string, map[string]string, error) {
				time.Sleep(3 * time.Second)
				return "too late", nil, nil
			}, "FAILED", "stack/Web/planned", "Timeout", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := map[string]any{"RequestType": tc.requestType, "ResponseURL": "https://cfn.s3.amazonaws.com/r?X-Amz-Signature=s",
				"StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/stack/u", "RequestId": "r1",
				"LogicalResourceId": "Web", "ResourceType": "Custom::HelmRelease", "ResourceProperties": map[string]any{"Release": "web"}}
			if tc.requestType != "Create" {
				req["PhysicalResourceId"] = "old-id"
			}
			payload, _ := json.Marshal(req)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			out, err := ServeCustomResource(ctx, payload, discardLogger(), id, tc.fn)
			if err != nil {
				t.Fatal(err)
			}
			var got cfnResponse
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.status || got.PhysicalResourceID != tc.physical || !strings.Contains(got.Reason, tc.reason) ||
				len(got.Data) != len(tc.data) || got.RequestID != "r1" || got.LogicalResourceID != "Web" {
				t.Errorf("answer %+v, want %s %s %q %v", got, tc.status, tc.physical, tc.reason, tc.data)
			}
			rec.mu.Lock()
			last := rec.bodies[len(rec.bodies)-1]
			rec.mu.Unlock()
			if last != string(out) {
				t.Errorf("CloudFormation received %s, the invocation returned %s", last, out)
			}
		})
	}
}
