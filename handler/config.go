package handler

import (
	"fmt"
	"strconv"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// Config holds the deployment facts from the function's environment, parsed
// once at cold start. An event may override any of them for one call.
type Config struct {
	invoke.Defaults        // CLUSTER_NAME, CLUSTER_REGION, NAMESPACE, ROLE_ARN, EXTERNAL_ID, ROLE_SESSION_NAME
	DefaultAction   string // DEFAULT_ACTION, default ensure-nginx
	Name            string // NAME, default "nginx"
	Image           string // IMAGE, default nginx:1.27
	Replicas        int32  // REPLICAS, default 2
	MaxDocuments    int    // MAX_DOCUMENTS: objects of one manifest, default 500
}

// Defaults for what the environment leaves unset.
const (
	DefaultImage    = "nginx:1.27"
	DefaultReplicas = 2
)

// ConfigFromEnv reads the configuration with getenv (os.Getenv in main).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	d, err := invoke.DefaultsFromEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	if err := invoke.CheckControls("DEFAULT_ACTION", getenv("DEFAULT_ACTION"), "NAME", getenv("NAME"), "IMAGE", getenv("IMAGE"),
		"REPLICAS", getenv("REPLICAS"), "MAX_DOCUMENTS", getenv("MAX_DOCUMENTS")); err != nil {
		return Config{}, fmt.Errorf("environment: %s", invoke.AsError(err).Message)
	}
	cfg := Config{
		Defaults:      d,
		DefaultAction: invoke.Or(getenv("DEFAULT_ACTION"), ActionEnsureNginx),
		Name:          invoke.Or(getenv("NAME"), "nginx"),
		Image:         invoke.Or(getenv("IMAGE"), DefaultImage),
		Replicas:      DefaultReplicas,
		MaxDocuments:  kube.MaxDocuments,
	}
	if v := getenv("REPLICAS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 || n > maxReplicas {
			return Config{}, fmt.Errorf("REPLICAS=%q: want an integer in 0..%d", v, maxReplicas)
		}
		cfg.Replicas = int32(n)
	}
	if v := getenv("MAX_DOCUMENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return Config{}, fmt.Errorf("MAX_DOCUMENTS=%q: want an integer in 1..10000", v)
		}
		cfg.MaxDocuments = n
	}
	// The environment is checked like an event, so that a bad deployment
	// fails at cold start instead of on every call. The cluster may come
	// from each event: stand one in to check the rest.
	check := cfg
	if check.Cluster == "" {
		check.Cluster = "placeholder"
	}
	if _, err := Resolve(Event{}, check); err != nil {
		return Config{}, fmt.Errorf("environment: %s", invoke.AsError(err).Message)
	}
	return cfg, nil
}
