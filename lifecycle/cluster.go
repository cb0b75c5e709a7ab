package lifecycle

import (
	"context"
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// cluster is the function's client of one cluster: core/v1 nodes and pods,
// and the Eviction API. It is a client-go REST client over a scheme of
// those types only: the typed clientset would register every API group at
// cold start.
type cluster struct {
	rest rest.Interface
}

var (
	scheme     = runtime.NewScheme()
	codecs     = serializer.NewCodecFactory(scheme)
	paramCodec = runtime.NewParameterCodec(scheme)
)

func init() {
	// Only registrations of generated types; they cannot fail.
	_ = corev1.AddToScheme(scheme)
	_ = policyv1.AddToScheme(scheme)
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// newCluster returns the client of the cluster cfg reaches (invoke.Open's
// self-refreshing rest.Config).
func newCluster(cfg *rest.Config) (*cluster, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = codecs.WithoutConversion()
	c.ContentType = runtime.ContentTypeJSON
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, err
	}
	return &cluster{rest: rc}, nil
}

func (c *cluster) node(ctx context.Context, name string) (*corev1.Node, error) {
	var n corev1.Node
	if err := c.rest.Get().Resource("nodes").Name(name).Do(ctx).Into(&n); err != nil {
		return nil, err
	}
	return &n, nil
}

func (c *cluster) nodes(ctx context.Context) ([]corev1.Node, error) {
	var l corev1.NodeList
	err := c.rest.Get().Resource("nodes").VersionedParams(&metav1.ListOptions{ResourceVersion: "0"}, paramCodec).Do(ctx).Into(&l)
	return l.Items, err
}

// patchNode merge-patches node name; patch carries the resourceVersion it
// was computed from, so that a concurrent writer makes it a Conflict.
func (c *cluster) patchNode(ctx context.Context, name string, patch []byte) (*corev1.Node, error) {
	var n corev1.Node
	if err := c.rest.Patch(types.MergePatchType).Resource("nodes").Name(name).Body(patch).Do(ctx).Into(&n); err != nil {
		return nil, err
	}
	return &n, nil
}

// pods lists the pods bound to node.
func (c *cluster) pods(ctx context.Context, node string) ([]corev1.Pod, error) {
	var l corev1.PodList
	err := c.rest.Get().Resource("pods").VersionedParams(&metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()}, paramCodec).Do(ctx).Into(&l)
	return l.Items, err
}

// evict asks the Eviction API to delete pod (its UID, so that a pod of the
// same name made since is not touched), with gracePeriod seconds when set,
// else the pod's own.
func (c *cluster) evict(ctx context.Context, pod *corev1.Pod, gracePeriod *int64) error {
	uid := pod.UID
	ev := policyv1.Eviction{
		TypeMeta:      metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: gracePeriod, Preconditions: &metav1.Preconditions{UID: &uid}},
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	// No retry here: a 429 (a budget, with or without Retry-After) goes back
	// to the drain, which tries the pod again later (one layer of retries).
	return c.rest.Post().Namespace(pod.Namespace).Resource("pods").Name(pod.Name).SubResource("eviction").
		SetHeader("Content-Type", runtime.ContentTypeJSON).MaxRetries(0).Body(body).Do(ctx).Error()
}

// providerIDInstance is the instance id of an AWS providerID,
// aws:///<zone>/<instance-id>, or "".
func providerIDInstance(providerID string) string {
	if !strings.HasPrefix(providerID, "aws://") {
		return ""
	}
	i := strings.LastIndexByte(providerID, '/')
	return providerID[i+1:]
}

// Labels of nodes another controller drains.
const (
	managedNodeGroupLabel = "eks.amazonaws.com/nodegroup"
	karpenterLabel        = "karpenter.sh/nodepool"
)

// owner names who drains n itself, or "" for a self-managed node.
func owner(n *corev1.Node) string {
	if g := n.Labels[managedNodeGroupLabel]; g != "" {
		return "EKS managed node group " + g
	}
	if p := n.Labels[karpenterLabel]; p != "" {
		return "Karpenter node pool " + p
	}
	return ""
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
