package handler

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/lambda-eks/lambda-eks/kube"
)

// Config holds the deployment facts from the function's environment, parsed
// once at cold start. An event may override any of them for one call.
type Config struct {
	DefaultAction string // DEFAULT_ACTION, default ensure-nginx
	Cluster       string // CLUSTER_NAME
	Region        string // CLUSTER_REGION, falling back to AWS_REGION
	Namespace     string // NAMESPACE, default "default"
	Name          string // NAME, default "nginx"
	Image         string // IMAGE, default nginx:1.27
	Replicas      int32  // REPLICAS, default 2
	RoleARN       string // ROLE_ARN: a role to assume for the cluster
	ExternalID    string // EXTERNAL_ID for ROLE_ARN
	SessionName   string // ROLE_SESSION_NAME for ROLE_ARN, default lambda-eks
	MaxDocuments  int    // MAX_DOCUMENTS: objects of one manifest, default 500
}

// Defaults for what the environment leaves unset.
const (
	DefaultImage       = "nginx:1.27"
	DefaultReplicas    = 2
	DefaultSessionName = "lambda-eks"
)

// sessionNameRE is STS's RoleSessionName.
var sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

// ConfigFromEnv reads the configuration with getenv (os.Getenv in main).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var vars []string
	for _, name := range []string{"DEFAULT_ACTION", "CLUSTER_NAME", "CLUSTER_REGION", "AWS_REGION", "NAMESPACE", "NAME", "IMAGE",
		"REPLICAS", "ROLE_ARN", "EXTERNAL_ID", "ROLE_SESSION_NAME", "MAX_DOCUMENTS"} {
		vars = append(vars, name, getenv(name))
	}
	var e *Error
	if err := checkControls(vars...); errors.As(err, &e) {
		return Config{}, fmt.Errorf("environment: %s", e.Message)
	}
	cfg := Config{
		DefaultAction: or(getenv("DEFAULT_ACTION"), ActionEnsureNginx),
		Cluster:       getenv("CLUSTER_NAME"),
		Region:        or(getenv("CLUSTER_REGION"), getenv("AWS_REGION")),
		Namespace:     or(getenv("NAMESPACE"), "default"),
		Name:          or(getenv("NAME"), "nginx"),
		Image:         or(getenv("IMAGE"), DefaultImage),
		Replicas:      DefaultReplicas,
		RoleARN:       getenv("ROLE_ARN"),
		ExternalID:    getenv("EXTERNAL_ID"),
		SessionName:   or(getenv("ROLE_SESSION_NAME"), DefaultSessionName),
	}
	if v := getenv("REPLICAS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 || n > maxReplicas {
			return Config{}, fmt.Errorf("REPLICAS=%q: want an integer in 0..%d", v, maxReplicas)
		}
		cfg.Replicas = int32(n)
	}
	if !sessionNameRE.MatchString(cfg.SessionName) {
		return Config{}, fmt.Errorf("ROLE_SESSION_NAME=%q: want 2 to 64 letters, digits and +=,.@-", cfg.SessionName)
	}
	cfg.MaxDocuments = kube.MaxDocuments
	if v := getenv("MAX_DOCUMENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return Config{}, fmt.Errorf("MAX_DOCUMENTS=%q: want an integer in 1..10000", v)
		}
		cfg.MaxDocuments = n
	}
	// The environment is checked like an event, so that a bad deployment
	// fails at cold start instead of on every call.
	// The cluster may come from each event: stand one in to check the rest.
	check := cfg
	if check.Cluster == "" {
		check.Cluster = "placeholder"
	}
	if _, err := Resolve(Event{}, check); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return Config{}, fmt.Errorf("environment: %s", e.Message)
		}
		return Config{}, fmt.Errorf("environment: %w", err)
	}
	return cfg, nil
}
