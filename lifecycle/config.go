package lifecycle

import (
	"fmt"
	"time"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Config is the lifecycle function's deployment facts, read once at cold
// start: the defaults every function reads, and how it drains.
type Config struct {
	invoke.Defaults

	// DrainTimeout is DRAIN_TIMEOUT: the longest a drain may take before it
	// completes its lifecycle action with TerminateTimeoutResult. Zero (the
	// default) means the hook's own global timeout, less a margin; for an
	// event with no hook (Health, rebalance) DefaultDrainTimeout.
	DrainTimeout time.Duration
	// LaunchTimeout is LAUNCH_TIMEOUT: the longest a launch hook waits for
	// its Node to be Ready. Zero: the hook's global timeout.
	LaunchTimeout time.Duration
	// TerminateTimeoutResult is TERMINATE_TIMEOUT_RESULT, CONTINUE (default)
	// or ABANDON: the answer of a terminate hook whose drain timed out.
	TerminateTimeoutResult string
	// LaunchTimeoutResult is LAUNCH_TIMEOUT_RESULT, ABANDON (default) or
	// CONTINUE: the answer of a launch hook whose Node never got Ready.
	LaunchTimeoutResult string
	// EvictEmptyDir is EMPTYDIR_DATA=delete (default): pods with emptyDir
	// volumes are evicted, their data lost with the instance; keep leaves
	// them (kubectl drain without --delete-emptydir-data refuses them).
	EvictEmptyDir bool
	// RebalanceDrain is REBALANCE_DRAIN=true: a rebalance recommendation
	// drains the node, not only cordons it (default false).
	RebalanceDrain bool
	// ManagedNodes is MANAGED_NODES=drain: nodes of EKS managed node groups
	// and of Karpenter are drained too; by default (leave) they are left to
	// their owner, which drains them itself.
	ManagedNodes bool
	// Poll is POLL_INTERVAL: how often a drain looks at its pods (default 1s).
	Poll time.Duration
}

// Defaults of what the environment leaves unset.
const (
	// DefaultDrainTimeout bounds a drain that no lifecycle hook bounds.
	DefaultDrainTimeout = time.Hour
	defaultPoll         = time.Second
)

// ConfigFromEnv reads the Config with getenv (os.Getenv in main) and checks
// it, so that a bad deployment fails at cold start.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	d, err := invoke.DefaultsFromEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Defaults: d, TerminateTimeoutResult: resultContinue, LaunchTimeoutResult: resultAbandon,
		EvictEmptyDir: true, Poll: defaultPoll}
	durations := []struct {
		name string
		into *time.Duration
		min  time.Duration
	}{
		{"DRAIN_TIMEOUT", &cfg.DrainTimeout, time.Second},
		{"LAUNCH_TIMEOUT", &cfg.LaunchTimeout, time.Second},
		{"POLL_INTERVAL", &cfg.Poll, 100 * time.Millisecond},
	}
	for _, d := range durations {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		n, err := time.ParseDuration(v)
		if err != nil || n < d.min || n > 48*time.Hour {
			return Config{}, fmt.Errorf("environment: %s=%q: want a duration between %s and 48h (e.g. 30m)", d.name, v, d.min)
		}
		*d.into = n
	}
	results := []struct {
		name string
		into *string
	}{{"TERMINATE_TIMEOUT_RESULT", &cfg.TerminateTimeoutResult}, {"LAUNCH_TIMEOUT_RESULT", &cfg.LaunchTimeoutResult}}
	for _, r := range results {
		switch v := getenv(r.name); v {
		case "":
		case resultContinue, resultAbandon:
			*r.into = v
		default:
			return Config{}, fmt.Errorf("environment: %s=%q: want CONTINUE or ABANDON", r.name, v)
		}
	}
	switch v := getenv("EMPTYDIR_DATA"); v {
	case "", "delete":
	case "keep":
		cfg.EvictEmptyDir = false
	default:
		return Config{}, fmt.Errorf("environment: EMPTYDIR_DATA=%q: want delete or keep", v)
	}
	switch v := getenv("REBALANCE_DRAIN"); v {
	case "", "false":
	case "true":
		cfg.RebalanceDrain = true
	default:
		return Config{}, fmt.Errorf("environment: REBALANCE_DRAIN=%q: want true or false", v)
	}
	switch v := getenv("MANAGED_NODES"); v {
	case "", "leave":
	case "drain":
		cfg.ManagedNodes = true
	default:
		return Config{}, fmt.Errorf("environment: MANAGED_NODES=%q: want leave or drain", v)
	}
	return cfg, nil
}
