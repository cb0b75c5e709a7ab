package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTargetValidate(t *testing.T) {
	const role = "arn:aws:iam::210987654321:role/ops/eks-admin"
	base := Target{Cluster: "demo", Region: "us-east-1"}
	with := func(f func(*Target)) Target {
		t := base
		f(&t)
		return t
	}
	tests := []struct {
		name   string
		target Target
		want   *TargetError // nil: valid
	}{
		{"cluster and region", base, nil},
		{"everything", Target{Cluster: "prod_1", Region: "eu-west-1", RoleARN: role, ExternalID: "ext-42", SessionName: "lambda-eks"}, nil},
		{"cluster of 100 characters", with(func(t *Target) { t.Cluster = "a" + strings.Repeat("b", 99) }), nil},
		{"cluster starting with a digit", with(func(t *Target) { t.Cluster = "1-demo" }), nil},
		{"GovCloud region", with(func(t *Target) { t.Region = "us-gov-west-1" }), nil},
		{"China partition role", with(func(t *Target) { t.RoleARN = "arn:aws-cn:iam::210987654321:role/r" }), nil},
		{"role with the characters IAM allows", with(func(t *Target) { t.RoleARN = "arn:aws:iam::210987654321:role/a+b=c,d.e@f_g-h/i" }), nil},
		{"external ID of 2 characters", with(func(t *Target) { t.RoleARN, t.ExternalID = role, "ab" }), nil},
		{"external ID of 1224 characters", with(func(t *Target) { t.RoleARN, t.ExternalID = role, strings.Repeat("x", 1224) }), nil},
		{"external ID with the characters STS allows", with(func(t *Target) { t.RoleARN, t.ExternalID = role, "a_B+=,.@:/-9" }), nil},
		{"session name of 64 characters", with(func(t *Target) { t.SessionName = strings.Repeat("s", 64) }), nil},

		{"no cluster", with(func(t *Target) { t.Cluster = "" }),
			&TargetError{"cluster", "no cluster: set CLUSTER_NAME or the event's cluster"}},
		{"cluster with a space", with(func(t *Target) { t.Cluster = "my cluster" }),
			&TargetError{"cluster", `cluster "my cluster" is not a valid EKS cluster name`}},
		{"cluster starting with a hyphen", with(func(t *Target) { t.Cluster = "-demo" }),
			&TargetError{"cluster", `cluster "-demo" is not a valid EKS cluster name`}},
		{"cluster of 101 characters", with(func(t *Target) { t.Cluster = strings.Repeat("c", 101) }),
			&TargetError{"cluster", `cluster "` + strings.Repeat("c", 101) + `" is not a valid EKS cluster name`}},
		{"cluster with a newline", with(func(t *Target) { t.Cluster = "demo\n" }),
			&TargetError{"cluster", `cluster "demo\n" is not a valid EKS cluster name`}},
		{"no region", with(func(t *Target) { t.Region = "" }),
			&TargetError{"region", "no region: set CLUSTER_REGION or AWS_REGION, or the event's region"}},
		{"region not AWS's", with(func(t *Target) { t.Region = "mars" }),
			&TargetError{"region", `region "mars" is not an AWS region name`}},
		{"region in capitals", with(func(t *Target) { t.Region = "US-EAST-1" }),
			&TargetError{"region", `region "US-EAST-1" is not an AWS region name`}},
		{"region without its number", with(func(t *Target) { t.Region = "us-east" }),
			&TargetError{"region", `region "us-east" is not an AWS region name`}},
		{"a user, not a role", with(func(t *Target) { t.RoleARN = "arn:aws:iam::123456789012:user/bob" }),
			&TargetError{"roleArn", `roleArn "arn:aws:iam::123456789012:user/bob" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`}},
		{"account of 11 digits", with(func(t *Target) { t.RoleARN = "arn:aws:iam::12345678901:role/r" }),
			&TargetError{"roleArn", `roleArn "arn:aws:iam::12345678901:role/r" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`}},
		{"role with a tab", with(func(t *Target) { t.RoleARN = "arn:aws:iam::123456789012:role/a\t" }),
			&TargetError{"roleArn", `roleArn "arn:aws:iam::123456789012:role/a\t" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`}},
		{"external ID of 1 character", with(func(t *Target) { t.RoleARN, t.ExternalID = role, "x" }),
			&TargetError{"externalId", "externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-"}},
		{"external ID of 1225 characters", with(func(t *Target) { t.RoleARN, t.ExternalID = role, strings.Repeat("x", 1225) }),
			&TargetError{"externalId", "externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-"}},
		{"external ID with a space", with(func(t *Target) { t.RoleARN, t.ExternalID = role, "ext 42" }),
			&TargetError{"externalId", "externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-"}},
		{"external ID without a role", with(func(t *Target) { t.ExternalID = "ext-42" }),
			&TargetError{"externalId", "externalId is only used with roleArn"}},
		{"a malformed external ID is named before the missing role", with(func(t *Target) { t.ExternalID = "x" }),
			&TargetError{"externalId", "externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-"}},
		{"session name of 1 character", with(func(t *Target) { t.SessionName = "s" }),
			&TargetError{"sessionName", `ROLE_SESSION_NAME="s": want 2 to 64 letters, digits and +=,.@-`}},
		{"session name of 65 characters", with(func(t *Target) { t.SessionName = strings.Repeat("s", 65) }),
			&TargetError{"sessionName", `ROLE_SESSION_NAME="` + strings.Repeat("s", 65) + `": want 2 to 64 letters, digits and +=,.@-`}},
		{"session name with a slash", with(func(t *Target) { t.SessionName = "lambda/eks" }),
			&TargetError{"sessionName", `ROLE_SESSION_NAME="lambda/eks": want 2 to 64 letters, digits and +=,.@-`}},
		{"the first bad field is named", Target{Cluster: "my cluster", Region: "mars", RoleARN: "r"},
			&TargetError{"cluster", `cluster "my cluster" is not a valid EKS cluster name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.target.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var got *TargetError
			if !errors.As(err, &got) {
				t.Fatalf("Validate() = %v (%T), want a *TargetError", err, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if got.Error() != tt.want.Message {
				t.Errorf("Error() = %q, want the message %q", got.Error(), tt.want.Message)
			}
		})
	}
}
