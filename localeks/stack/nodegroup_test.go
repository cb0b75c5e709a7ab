package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/google/go-cmp/cmp"
)

// startMoto runs a moto_server of its own on a free loopback port and
// returns a Stack that knows only that port.
func startMoto(t *testing.T) *Stack {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Skip("moto_server not on PATH")
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port)) //nolint:gosec // G204: moto on loopback
	cmd.Env = baseEnv()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	s := &Stack{Ports: Ports{Moto: port}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/moto-api/") //nolint:noctx // a readiness poll
		if err == nil {
			_ = resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server not listening: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type groupView struct {
	Base, All []string
	DNS       map[string]string
	Hooks     []string
}

// createAndDescribe creates the node group on s's moto and describes it.
func createAndDescribe(t *testing.T, s *Stack) groupView {
	t.Helper()
	ctx := context.Background()
	cfg := s.MotoConfig()
	as, ec2c := autoscaling.NewFromConfig(cfg), ec2.NewFromConfig(cfg)
	if err := s.createNodeGroup(ctx, as, ec2c); err != nil {
		t.Fatal(err)
	}
	ids, err := s.groupInstanceIDs(ctx, as)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	v := groupView{All: ids, DNS: map[string]string{}, Base: make([]string, NodeCount)}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			v.DNS[aws.ToString(in.InstanceId)] = aws.ToString(in.PrivateDnsName)
			if aws.ToString(in.Placement.AvailabilityZone) != NodeZone {
				t.Errorf("instance %s in %s, want %s", aws.ToString(in.InstanceId), aws.ToString(in.Placement.AvailabilityZone), NodeZone)
			}
			for _, tag := range in.Tags {
				if aws.ToString(tag.Key) == nodeTag {
					for i := range NodeCount {
						if aws.ToString(tag.Value) == NodeName(i) {
							v.Base[i] = aws.ToString(in.InstanceId)
						}
					}
				}
			}
		}
	}
	return v
}

// TestNodeGroupDeterministic: two fresh motos give the node group the same
// instances (IDs and private DNS names), NodeCount of them tagged as the
// base nodes in ID order, and one more, launched by the scale-out; the
// samples in events/ name them.
func TestNodeGroupDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("starts moto_server")
	}
	t.Parallel()
	a, b := startMoto(t), startMoto(t)
	va, vb := createAndDescribe(t, a), createAndDescribe(t, b)
	if diff := cmp.Diff(va, vb); diff != "" {
		t.Errorf("two fresh motos differ (-first +second):\n%s", diff)
	}
	if len(va.All) != NodeCount+1 {
		t.Fatalf("%d instances, want %d", len(va.All), NodeCount+1)
	}
	if !slices.IsSorted(va.Base) || slices.Contains(va.Base, "") {
		t.Errorf("base instances %v: want %d, in ID order", va.Base, NodeCount)
	}
	for _, id := range va.All {
		role := "launching (no node)"
		if i := slices.Index(va.Base, id); i >= 0 {
			role = NodeName(i)
		}
		t.Logf("%s %s %s", id, va.DNS[id], role)
	}
	g, err := autoscaling.NewFromConfig(a.MotoConfig()).DescribeAutoScalingGroups(context.Background(),
		&autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{NodeASG}})
	if err != nil || len(g.AutoScalingGroups) != 1 {
		t.Fatalf("describe: %v", err)
	}
	arn := aws.ToString(g.AutoScalingGroups[0].AutoScalingGroupARN)
	t.Logf("%s", arn)
	checkSamples(t, va, arn)
	// Scaling out launches new instances, and says which.
	added, err := a.ScaleNodeGroup(context.Background(), NodeCount+3)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := a.groupInstanceIDs(context.Background(), autoscaling.NewFromConfig(a.MotoConfig()))
	if len(added) != 2 || len(ids) != NodeCount+3 {
		t.Errorf("scale-out added %v; group has %v", added, ids)
	}
	for _, id := range added {
		if slices.Contains(va.All, id) {
			t.Errorf("scale-out reported %s, which was there", id)
		}
	}
}

// checkSamples: the samples in events/ name the node group's instances as
// their names say: asg-terminate kwok-node-2's, asg-launch the one that is
// no node, the others base nodes' instances.
func checkSamples(t *testing.T, v groupView, arn string) {
	t.Helper()
	read := func(name string) map[string]any {
		b, err := os.ReadFile(filepath.Join("..", "..", "events", name))
		if err != nil {
			t.Fatal(err)
		}
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ev["account"] != Account || ev["region"] != Region {
			t.Errorf("%s: account %v region %v", name, ev["account"], ev["region"])
		}
		return ev
	}
	detail := func(ev map[string]any) map[string]any { d, _ := ev["detail"].(map[string]any); return d }
	launching := ""
	for _, id := range v.All {
		if !slices.Contains(v.Base, id) {
			launching = id
		}
	}
	for name, want := range map[string]struct{ instance, hook, transition string }{
		"asg-terminate.json": {v.Base[2], TerminateHook, "autoscaling:EC2_INSTANCE_TERMINATING"},
		"asg-launch.json":    {launching, LaunchHook, "autoscaling:EC2_INSTANCE_LAUNCHING"},
	} {
		ev := read(name)
		d := detail(ev)
		if d["EC2InstanceId"] != want.instance || d["LifecycleHookName"] != want.hook || d["LifecycleTransition"] != want.transition ||
			d["AutoScalingGroupName"] != NodeASG {
			t.Errorf("%s: detail %v, want instance %s, hook %s", name, d, want.instance, want.hook)
		}
		if res, _ := ev["resources"].([]any); len(res) != 1 || res[0] != arn {
			t.Errorf("%s: resources %v, want [%s]", name, ev["resources"], arn)
		}
	}
	if d := detail(read("asg-test-notification.json")); d["AutoScalingGroupARN"] != arn || d["Event"] != "autoscaling:TEST_NOTIFICATION" {
		t.Errorf("asg-test-notification.json: detail %v", d)
	}
	for _, name := range []string{"spot-interruption.json", "rebalance.json"} {
		if id, _ := detail(read(name))["instance-id"].(string); !slices.Contains(v.Base, id) {
			t.Errorf("%s: instance-id %q is no base node's instance %v", name, id, v.Base)
		}
	}
	ents, _ := detail(read("health-scheduled.json"))["affectedEntities"].([]any)
	if len(ents) != 1 || !slices.Contains(v.Base, fmt.Sprint(ents[0].(map[string]any)["entityValue"])) {
		t.Errorf("health-scheduled.json: affectedEntities %v", ents)
	}
}
