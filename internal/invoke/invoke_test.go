package invoke_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// response has the shapes of a function's response: omitted fields,
// pointers, nested objects, text that HTML escaping would change.
type response struct {
	Cluster string   `json:"cluster"`
	DryRun  bool     `json:"dryRun,omitempty"`
	Objects []object `json:"objects"`
}

type object struct {
	Name    string `json:"name"`
	From    *int32 `json:"from,omitempty"`
	To      *int32 `json:"to,omitempty"`
	Message string `json:"message,omitempty"`
}

// TestResponseBytesAsBefore: a function that returns raw bytes writes its
// response byte for byte as aws-lambda-go writes a typed handler's value.
func TestResponseBytesAsBefore(t *testing.T) {
	t.Parallel()
	from, to := int32(3), int32(0)
	for _, resp := range []*response{
		{Cluster: "demo", DryRun: true, Objects: []object{{Name: "d", From: &from, To: &to, Message: `<b>&"quoted"</b> ünïcode` + "\u2028"}}},
		{Cluster: "demo"},
		nil,
	} {
		typed := lambda.NewHandler(func(context.Context, json.RawMessage) (*response, error) { return resp, nil })
		want, err := typed.Invoke(t.Context(), []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		got, err := invoke.MarshalResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("response bytes (-aws-lambda-go +MarshalResponse):\n%s", diff)
		}
	}
}

func TestFinish(t *testing.T) {
	t.Parallel()
	done := func(r *response) []any { return []any{"cluster", r.Cluster} }
	tests := []struct {
		name     string
		resp     *response
		err      error
		wantOut  string
		wantErr  *messages.InvokeResponse_Error
		wantLogs []string
	}{
		{name: "response", resp: &response{Cluster: "demo"}, wantOut: `{"cluster":"demo","objects":null}`,
			wantLogs: []string{`msg="invocation done"`, "cluster=demo", "duration_ms="}},
		{name: "an *Error keeps its code", err: invoke.Invalid("replicas %d out of range", -1),
			wantErr:  &messages.InvokeResponse_Error{Type: "InvalidEvent", Message: "replicas -1 out of range"},
			wantLogs: []string{`msg="invocation failed"`, "code=InvalidEvent", `error="replicas -1 out of range"`}},
		{name: "another error is Internal, redacted", err: errors.New("token k8s-aws-v1.c2VjcmV0 refused"),
			wantErr:  &messages.InvokeResponse_Error{Type: "Internal", Message: "token k8s-aws-v1.REDACTED refused"},
			wantLogs: []string{"code=Internal", "k8s-aws-v1.REDACTED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			out, err := invoke.Finish(t.Context(), log, time.Now(), tt.resp, tt.err, done)
			if tt.wantErr == nil {
				if err != nil || string(out) != tt.wantOut {
					t.Errorf("Finish = %s, %v; want %s", out, err, tt.wantOut)
				}
			} else {
				var got messages.InvokeResponse_Error
				if !errors.As(err, &got) || out != nil {
					t.Fatalf("Finish = %s, %v (%T); want a Lambda error response", out, err, err)
				}
				if diff := cmp.Diff(*tt.wantErr, got); diff != "" {
					t.Errorf("Lambda error (-want +got):\n%s", diff)
				}
			}
			for _, s := range tt.wantLogs {
				if !strings.Contains(logs.String(), s) {
					t.Errorf("log lacks %q:\n%s", s, logs.String())
				}
			}
			if strings.Contains(logs.String(), "c2VjcmV0") {
				t.Errorf("log leaks the token:\n%s", logs.String())
			}
		})
	}
}

func TestWithMargin(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(time.Minute)
	parent, cancel := context.WithDeadline(t.Context(), deadline)
	defer cancel()
	ctx, cancel := invoke.WithMargin(parent)
	defer cancel()
	if got, _ := ctx.Deadline(); !got.Equal(deadline.Add(-invoke.DeadlineMargin)) {
		t.Errorf("deadline %v, want Lambda's less %v (%v)", got, invoke.DeadlineMargin, deadline.Add(-invoke.DeadlineMargin))
	}
	before := time.Now()
	ctx, cancel = invoke.WithMargin(t.Context())
	defer cancel()
	if got, ok := ctx.Deadline(); !ok || got.Before(before.Add(invoke.MaxWait)) || got.After(time.Now().Add(invoke.MaxWait)) {
		t.Errorf("without a deadline: %v, %v; want now plus %v", got, ok, invoke.MaxWait)
	}
}
