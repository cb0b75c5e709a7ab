package invoke

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/lambda-eks/lambda-eks/auth"
)

// Defaults are the deployment facts every function reads from its
// environment, once at cold start: the cluster it manages unless an event
// names another, and the identity it reaches it with.
type Defaults struct {
	Cluster     string // CLUSTER_NAME
	Region      string // CLUSTER_REGION, falling back to AWS_REGION
	Namespace   string // NAMESPACE, default "default"
	RoleARN     string // ROLE_ARN: a role to assume for the cluster
	ExternalID  string // EXTERNAL_ID for ROLE_ARN
	SessionName string // ROLE_SESSION_NAME for ROLE_ARN, default lambda-eks
}

// DefaultSessionName is ROLE_SESSION_NAME's default.
const DefaultSessionName = "lambda-eks"

// DefaultsFromEnv reads the Defaults with getenv (os.Getenv in main) and
// checks them as an event's target is checked, so that a bad deployment
// fails at cold start instead of on every call. The cluster may come from
// each event instead.
func DefaultsFromEnv(getenv func(string) string) (Defaults, error) {
	d := Defaults{
		Cluster:     getenv("CLUSTER_NAME"),
		Region:      Or(getenv("CLUSTER_REGION"), getenv("AWS_REGION")),
		Namespace:   Or(getenv("NAMESPACE"), "default"),
		RoleARN:     getenv("ROLE_ARN"),
		ExternalID:  getenv("EXTERNAL_ID"),
		SessionName: Or(getenv("ROLE_SESSION_NAME"), DefaultSessionName),
	}
	if err := CheckControls("CLUSTER_NAME", d.Cluster, "CLUSTER_REGION", d.Region, "NAMESPACE", d.Namespace,
		"ROLE_ARN", d.RoleARN, "EXTERNAL_ID", d.ExternalID, "ROLE_SESSION_NAME", d.SessionName); err != nil {
		return Defaults{}, fmt.Errorf("environment: %s", AsError(err).Message)
	}
	check := d.Target("", "", "", "")
	if check.Cluster == "" {
		check.Cluster = "placeholder"
	}
	if err := check.Validate(); err != nil {
		return Defaults{}, fmt.Errorf("environment: %w", err)
	}
	if errs := validation.IsDNS1123Label(d.Namespace); len(errs) > 0 {
		return Defaults{}, fmt.Errorf("environment: NAMESPACE %q is not a valid DNS-1123 label: %s", d.Namespace, errs[0])
	}
	return d, nil
}

// Target is the target an event names, the defaults filling its gaps. An
// event's role comes with its own external ID, never the default's.
// Validate it before use.
func (d Defaults) Target(cluster, region, roleARN, externalID string) auth.Target {
	t := auth.Target{Cluster: Or(cluster, d.Cluster), Region: Or(region, d.Region), RoleARN: Or(roleARN, d.RoleARN),
		ExternalID: Or(externalID, d.ExternalID), SessionName: d.SessionName}
	if roleARN != "" {
		t.ExternalID = externalID
	}
	return t
}

// Or is v, or fallback when v is empty.
func Or(v, fallback string) string {
	if v != "" {
		return v
	}
	return fallback
}
