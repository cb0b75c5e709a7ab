package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestAssumeRoleExternalID covers what moto does not enforce: a trust
// policy whose sts:ExternalId condition the request must match. A wrong or
// missing external ID is AccessDenied, returned as an *AssumeRoleError that
// names the caller (canonical: the execution role, not its session) and the
// target.
func TestAssumeRoleExternalID(t *testing.T) {
	const target = "arn:aws:iam::210987654321:role/eks-ops"
	tests := []struct {
		name       string
		externalID string
		wantErr    *AssumeRoleError // nil: success
	}{
		{"matching external ID", "choose-one", nil},
		{"wrong external ID", "guess", &AssumeRoleError{Caller: "arn:aws:iam::111122223333:role/lambda-eks-exec", Target: target}},
		{"no external ID", "", &AssumeRoleError{Caller: "arn:aws:iam::111122223333:role/lambda-eks-exec", Target: target}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sts := newFakeSTS(t, time.Hour, "choose-one", time.Now)
			cfg := ForTarget(sts.config(), Target{Cluster: "demo", Region: "us-east-1", RoleARN: target, ExternalID: tt.externalID})
			ts, err := NewTokenSource(cfg, "demo")
			if err != nil {
				t.Fatal(err)
			}
			err = ts.Prepare(context.Background())
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("prepare: %v", err)
				}
				return
			}
			var got *AssumeRoleError
			if !errors.As(err, &got) {
				t.Fatalf("prepare: %v (%T), want an *AssumeRoleError", err, err)
			}
			if diff := cmp.Diff(tt.wantErr, got, cmpopts.IgnoreFields(AssumeRoleError{}, "Err")); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if assumes, _ := sts.counts(); assumes != 1 {
				t.Errorf("AssumeRole called %d times, want 1 (a refusal is not retried)", assumes)
			}
		})
	}
}

// TestAssumeRoleCallerFromIdentity: an AccessDenied whose message does not
// name the caller still names it, from GetCallerIdentity.
func TestAssumeRoleCallerFromIdentity(t *testing.T) {
	sts := newFakeSTS(t, time.Hour, "", time.Now)
	p := newAssumeRoleProvider(sts.config(), Target{RoleARN: "arn:aws:iam::210987654321:role/eks-ops"})
	err := p.wrap(context.Background(), &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access denied"})
	var got *AssumeRoleError
	if !errors.As(err, &got) {
		t.Fatalf("wrap: %v, want an *AssumeRoleError", err)
	}
	if want := "arn:aws:iam::111122223333:role/lambda-eks-exec"; got.Caller != want {
		t.Errorf("caller %q, want %q", got.Caller, want)
	}
}
