package lifecycle

import (
	"strings"
	"testing"
	"time"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string {
		return func(k string) string {
			if k == "AWS_REGION" {
				return "us-east-1"
			}
			return kv[k]
		}
	}
	cfg, err := ConfigFromEnv(env(map[string]string{"CLUSTER_NAME": "demo"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TerminateTimeoutResult != "CONTINUE" || cfg.LaunchTimeoutResult != "ABANDON" || !cfg.EvictEmptyDir ||
		cfg.RebalanceDrain || cfg.ManagedNodes || cfg.Poll != time.Second || cfg.DrainTimeout != 0 {
		t.Errorf("defaults %+v", cfg)
	}
	cfg, err = ConfigFromEnv(env(map[string]string{"CLUSTER_NAME": "demo", "DRAIN_TIMEOUT": "20m", "TERMINATE_TIMEOUT_RESULT": "ABANDON",
		"LAUNCH_TIMEOUT_RESULT": "CONTINUE", "EMPTYDIR_DATA": "keep", "REBALANCE_DRAIN": "true", "MANAGED_NODES": "drain", "POLL_INTERVAL": "250ms"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DrainTimeout != 20*time.Minute || cfg.TerminateTimeoutResult != "ABANDON" || cfg.LaunchTimeoutResult != "CONTINUE" ||
		cfg.EvictEmptyDir || !cfg.RebalanceDrain || !cfg.ManagedNodes || cfg.Poll != 250*time.Millisecond {
		t.Errorf("set %+v", cfg)
	}
	for k, v := range map[string]string{"DRAIN_TIMEOUT": "soon", "LAUNCH_TIMEOUT": "100h", "TERMINATE_TIMEOUT_RESULT": "continue",
		"EMPTYDIR_DATA": "yes", "REBALANCE_DRAIN": "1", "MANAGED_NODES": "true", "POLL_INTERVAL": "1ms"} {
		_, err := ConfigFromEnv(env(map[string]string{"CLUSTER_NAME": "demo", k: v}))
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: err = %v, want one naming it", k, v, err)
		}
	}
}
