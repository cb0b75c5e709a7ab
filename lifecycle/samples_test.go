package lifecycle

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestEventSamples: every sample in events/ from Auto Scaling, EC2 or AWS
// Health decodes as the event its name says.
func TestEventSamples(t *testing.T) {
	t.Parallel()
	want := map[string]Kind{"asg-terminate.json": Terminate, "asg-launch.json": Launch, "asg-test-notification.json": Test,
		"spot-interruption.json": Spot, "rebalance.json": Rebalance, "health-scheduled.json": Scheduled}
	paths, err := filepath.Glob(filepath.Join("..", "events", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, path := range paths {
		b, err := os.ReadFile(path) //nolint:gosec // G304: the repository's samples
		if err != nil {
			t.Fatal(err)
		}
		var src struct{ Source string }
		if json.Unmarshal(b, &src) != nil || (src.Source != "aws.autoscaling" && src.Source != "aws.ec2" && src.Source != "aws.health") {
			continue
		}
		seen++
		name := filepath.Base(path)
		ev, err := DecodeEvent(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if k, ok := want[name]; !ok || ev.Kind != k {
			t.Errorf("%s decodes as %s; want %s", name, ev.Kind, want[name])
		}
	}
	if seen != len(want) {
		t.Errorf("%d lifecycle samples in events/, want %d", seen, len(want))
	}
}
