package auth

import (
	"fmt"
	"regexp"
)

var (
	clusterNameRE = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9_-]*$`) // and at most 100 bytes
	regionRE      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	roleARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/([\w+=,.@/-]+)$`) // path+name at most 512
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]+$`) // and 2 to 64 bytes
)

// TargetError is a Target that names no reachable cluster or identity; its
// message says which field and what is wanted.
type TargetError struct {
	Field   string // cluster, region, roleArn, externalId or sessionName
	Message string
}

func (e *TargetError) Error() string { return e.Message }

// Validate checks t as EKS, STS and IAM will, before any call is made: the
// cluster name and region are set and well formed, the role is an IAM role
// ARN, an external ID goes with a role and has STS's form, and the session
// name (when set) is STS's RoleSessionName. Every function checks its
// targets here, so that an event is accepted by all of them or by none.
func (t Target) Validate() error {
	switch {
	case t.Cluster == "":
		return &TargetError{"cluster", "no cluster: set CLUSTER_NAME or the event's cluster"}
	case len(t.Cluster) > 100 || !clusterNameRE.MatchString(t.Cluster):
		return &TargetError{"cluster", fmt.Sprintf("cluster %q is not a valid EKS cluster name", t.Cluster)}
	case t.Region == "":
		return &TargetError{"region", "no region: set CLUSTER_REGION or AWS_REGION, or the event's region"}
	case !regionRE.MatchString(t.Region):
		return &TargetError{"region", fmt.Sprintf("region %q is not an AWS region name", t.Region)}
	case t.RoleARN != "" && !validRoleARN(t.RoleARN):
		return &TargetError{"roleArn", fmt.Sprintf("roleArn %q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", t.RoleARN)}
	case t.ExternalID != "" && (len(t.ExternalID) < 2 || len(t.ExternalID) > 1224 || !externalIDRE.MatchString(t.ExternalID)):
		return &TargetError{"externalId", "externalId must be 2 to 1224 characters of letters, digits and +=,.@:/-"}
	case t.ExternalID != "" && t.RoleARN == "":
		return &TargetError{"externalId", "externalId is only used with roleArn"}
	case t.SessionName != "" && (len(t.SessionName) < 2 || len(t.SessionName) > 64 || !sessionNameRE.MatchString(t.SessionName)):
		return &TargetError{"sessionName", fmt.Sprintf("ROLE_SESSION_NAME=%q: want 2 to 64 letters, digits and +=,.@-", t.SessionName)}
	}
	return nil
}

// validRoleARN is roleARNRE with the role's path and name at most 512 bytes
// (IAM's bound), checked apart: as a counted repeat in the pattern it
// compiled to 512 states at every cold start.
func validRoleARN(s string) bool {
	m := roleARNRE.FindStringSubmatch(s)
	return m != nil && len(m[1]) <= 512
}
