package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The replica's self-managed node group: an Auto Scaling group in moto
// whose first NodeCount instances are the simulated nodes (each node's
// spec.providerID names its instance, as the AWS cloud provider sets it;
// the node names stay kwok-node-N, unlike the private DNS names EKS nodes
// have), and the lifecycle hooks that make Auto Scaling wait for the
// lifecycle function. Its instance IDs are the same on every fresh moto:
// moto's random generator is seeded right before it creates them. The
// group is created with NodeCount instances and then scaled out by one,
// as a scale-out whose launch hook waits: that instance is in EC2 and in
// the group, and no node yet (events/asg-launch.json names it).
const (
	// NodeASG is the group's name.
	NodeASG = "localeks-nodes"
	// NodeLaunchTemplate is its launch template.
	NodeLaunchTemplate = "localeks-nodes"
	// NodeZone is the group's one Availability Zone.
	NodeZone = Region + "a"
	// TerminateHook waits on instances terminating (default result
	// CONTINUE), LaunchHook on instances launching (ABANDON); both with a
	// heartbeat timeout of HookHeartbeatTimeout seconds.
	TerminateHook        = "localeks-terminate"
	LaunchHook           = "localeks-launch"
	HookHeartbeatTimeout = 300

	// LifecycleRole is the lifecycle function's execution role, mapped in
	// aws-auth to the username LifecycleUser in LifecycleGroup, which
	// permissions.yml grants what draining needs.
	LifecycleRole  = "lambda-eks-lifecycle"
	LifecycleUser  = "lambda-eks-lifecycle"
	LifecycleGroup = "lambda-eks-lifecycle"
	// LifecycleSessionName is the role session the function runs as.
	LifecycleSessionName = "lambda-eks-lifecycle-local"

	// The seeds of moto's random generator before the group's instances
	// are created (nodeSeed) and before the scale-out (launchSeed).
	nodeSeed   = 20261206
	launchSeed = 20261207
	// nodeTag on an instance names the node it is.
	nodeTag = "localeks.io/node"
)

// ProviderID is the spec.providerID of the node of an instance of NodeASG.
func ProviderID(instanceID string) string { return "aws:///" + NodeZone + "/" + instanceID }

// Instance is an instance of NodeASG.
type Instance struct {
	ID             string
	PrivateDNSName string
	// Node is the name of the node whose providerID names the instance, ""
	// when none does.
	Node string
}

// ensureLifecycle makes sure, idempotently, that the lifecycle function's
// role exists and is mapped, and that NodeASG, its hooks and the nodes'
// providerIDs are in place.
func (s *Stack) ensureLifecycle(ctx context.Context) error {
	if err := s.createRole(ctx, LifecycleRole); err != nil {
		return err
	}
	if err := s.ensureNodeGroup(ctx); err != nil {
		return fmt.Errorf("node group %s: %w", NodeASG, err)
	}
	return s.mapLifecycleRole(ctx)
}

// ensureNodeGroup creates NodeASG unless it exists, puts its hooks, and
// sets the base nodes' providerIDs where they are empty.
func (s *Stack) ensureNodeGroup(ctx context.Context) error {
	cfg := s.MotoConfig()
	as := autoscaling.NewFromConfig(cfg)
	out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{NodeASG}})
	if err != nil {
		return fmt.Errorf("describe: %w", err)
	}
	if len(out.AutoScalingGroups) == 0 {
		if err := s.createNodeGroup(ctx, as, ec2.NewFromConfig(cfg)); err != nil {
			return err
		}
	}
	for _, h := range []struct{ name, transition, result string }{
		{TerminateHook, "autoscaling:EC2_INSTANCE_TERMINATING", "CONTINUE"},
		{LaunchHook, "autoscaling:EC2_INSTANCE_LAUNCHING", "ABANDON"},
	} {
		if _, err := as.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String(NodeASG),
			LifecycleHookName: aws.String(h.name), LifecycleTransition: aws.String(h.transition),
			HeartbeatTimeout: aws.Int32(HookHeartbeatTimeout), DefaultResult: aws.String(h.result)}); err != nil {
			return fmt.Errorf("put lifecycle hook %s: %w", h.name, err)
		}
	}
	return s.setProviderIDs(ctx)
}

// createNodeGroup creates the launch template, the group with NodeCount
// instances (tagged with their nodes' names), and the scale-out by one.
func (s *Stack) createNodeGroup(ctx context.Context, as *autoscaling.Client, ec2c *ec2.Client) error {
	_, err := ec2c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(NodeLaunchTemplate),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-0000000000000local"), InstanceType: ec2types.InstanceTypeM5Large}})
	if err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		return fmt.Errorf("create launch template: %w", err)
	}
	if err := s.seedMoto(ctx, nodeSeed); err != nil {
		return err
	}
	if _, err := as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String(NodeASG),
		LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String(NodeLaunchTemplate), Version: aws.String("$Latest")},
		MinSize:        aws.Int32(0), MaxSize: aws.Int32(10), DesiredCapacity: aws.Int32(NodeCount),
		AvailabilityZones: []string{NodeZone}}); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	ids, err := s.groupInstanceIDs(ctx, as)
	if err != nil {
		return err
	}
	if len(ids) != NodeCount {
		return fmt.Errorf("created with %d instances, want %d", len(ids), NodeCount)
	}
	slices.Sort(ids)
	for i, id := range ids {
		if _, err := ec2c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
			Tags: []ec2types.Tag{{Key: aws.String(nodeTag), Value: aws.String(NodeName(i))}}}); err != nil {
			return fmt.Errorf("tag %s: %w", id, err)
		}
	}
	if err := s.seedMoto(ctx, launchSeed); err != nil {
		return err
	}
	if _, err := as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String(NodeASG),
		DesiredCapacity: aws.Int32(NodeCount + 1)}); err != nil {
		return fmt.Errorf("scale out: %w", err)
	}
	s.log.Info("created the node group", "asg", NodeASG, "instances", ids)
	return nil
}

// seedMoto seeds moto's random generator, so that what it creates next
// (instance IDs, IP addresses) is the same on every fresh moto.
func (s *Stack) seedMoto(ctx context.Context, seed int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(s.Ports.Moto)+"/moto-api/seed?a="+strconv.Itoa(seed), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("seed moto: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("seed moto: %s", resp.Status)
	}
	return nil
}

func (s *Stack) groupInstanceIDs(ctx context.Context, as *autoscaling.Client) ([]string, error) {
	out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{NodeASG}})
	if err != nil {
		return nil, fmt.Errorf("describe: %w", err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return nil, errors.New("not found")
	}
	var ids []string
	for _, in := range out.AutoScalingGroups[0].Instances {
		ids = append(ids, aws.ToString(in.InstanceId))
	}
	return ids, nil
}

// setProviderIDs gives each base node the providerID of the instance
// tagged with its name, unless it has one: a providerID is set once.
func (s *Stack) setProviderIDs(ctx context.Context) error {
	out, err := ec2.NewFromConfig(s.MotoConfig()).DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{nodeTag}}}})
	if err != nil {
		return fmt.Errorf("describe instances: %w", err)
	}
	byNode := map[string]string{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			for _, t := range in.Tags {
				if aws.ToString(t.Key) == nodeTag {
					byNode[aws.ToString(t.Value)] = aws.ToString(in.InstanceId)
				}
			}
		}
	}
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return err
	}
	for i := range NodeCount {
		name := NodeName(i)
		id, ok := byNode[name]
		if !ok {
			return fmt.Errorf("no instance tagged %s=%s", nodeTag, name)
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get node %s: %w", name, err)
		}
		switch node.Spec.ProviderID {
		case ProviderID(id):
			continue
		case "":
		default:
			s.log.Warn("node has another providerID: left as it is", "node", name, "providerID", node.Spec.ProviderID, "instance", id)
			continue
		}
		patch, _ := json.Marshal(map[string]any{"spec": map[string]string{"providerID": ProviderID(id)}})
		if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "localeks"}); err != nil {
			return fmt.Errorf("set providerID of node %s: %w", name, err)
		}
		s.log.Info("node providerID set", "node", name, "providerID", ProviderID(id))
	}
	return nil
}

// NodeInstances lists NodeASG's instances, with their private DNS names
// and the nodes whose providerIDs name them: the base nodes first, in
// order, then the rest by ID.
func (s *Stack) NodeInstances(ctx context.Context) ([]Instance, error) {
	cfg := s.MotoConfig()
	ids, err := s.groupInstanceIDs(ctx, autoscaling.NewFromConfig(cfg))
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		return nil, fmt.Errorf("describe instances: %w", err)
	}
	dns := map[string]string{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			dns[aws.ToString(in.InstanceId)] = aws.ToString(in.PrivateDnsName)
		}
	}
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	byProvider := map[string]string{}
	for _, n := range nodes.Items {
		if n.Spec.ProviderID != "" {
			byProvider[n.Spec.ProviderID] = n.Name
		}
	}
	var list []Instance
	for _, id := range ids {
		list = append(list, Instance{ID: id, PrivateDNSName: dns[id], Node: byProvider[ProviderID(id)]})
	}
	slices.SortFunc(list, func(a, b Instance) int {
		if (a.Node == "") != (b.Node == "") {
			if a.Node == "" {
				return 1
			}
			return -1
		}
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return list, nil
}

// ScaleNodeGroup sets NodeASG's desired capacity, as a scale-out or
// scale-in would, and returns the IDs of the instances moto launched for
// it (sorted; none for a scale-in). moto launches them at once; the
// replica's nodes are not touched (AddNode adds one).
func (s *Stack) ScaleNodeGroup(ctx context.Context, desired int) ([]string, error) {
	as := autoscaling.NewFromConfig(s.MotoConfig())
	before, err := s.groupInstanceIDs(ctx, as)
	if err != nil {
		return nil, err
	}
	if _, err := as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String(NodeASG),
		DesiredCapacity: aws.Int32(int32(min(desired, 1<<20)))}); err != nil { //nolint:gosec // G115: bounded
		return nil, fmt.Errorf("set desired capacity of %s: %w", NodeASG, err)
	}
	after, err := s.groupInstanceIDs(ctx, as)
	if err != nil {
		return nil, err
	}
	var added []string
	for _, id := range after {
		if !slices.Contains(before, id) {
			added = append(added, id)
		}
	}
	slices.Sort(added)
	return added, nil
}

// AddNode registers a node that kwok manages (and makes Ready), with
// providerID (e.g. ProviderID of an instance ScaleNodeGroup launched) and
// labels on top of the base nodes' (zone NodeZone). It waits until the node
// is Ready.
func (s *Stack) AddNode(ctx context.Context, name, providerID string, labels map[string]string) error {
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return err
	}
	all := map[string]string{"type": "kwok", corev1.LabelHostname: name, corev1.LabelOSStable: "linux",
		corev1.LabelArchStable: "amd64", corev1.LabelTopologyZone: NodeZone}
	maps.Copy(all, labels)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{nodeAnnotation: "fake"}, Labels: all},
		Spec: corev1.NodeSpec{ProviderID: providerID}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: "localeks"}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready: %w (last error: %w; logs in %s)", name, ctx.Err(), err, s.Paths.Log(kwokName))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mapLifecycleRole merges LifecycleRole's entry into aws-auth and, when it
// was not there, waits until the authenticator maps it.
func (s *Stack) mapLifecycleRole(ctx context.Context) error {
	changed, err := s.mergeRoleAs(ctx, RoleARN(LifecycleRole), LifecycleUser, LifecycleGroup)
	if err != nil || !changed {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for i := 1; ; i++ {
		user, err := s.whoAmI(ctx, LifecycleRole, fmt.Sprintf("localeks-lifecycle-probe-%d", i))
		if err == nil && user.Username == LifecycleUser && slices.Contains(user.Groups, LifecycleGroup) {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("authenticated as %q %v, want %s in %s", user.Username, user.Groups, LifecycleUser, LifecycleGroup)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not mapped to %s: %w (last: %w)", LifecycleRole, LifecycleGroup, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
