package stack

import (
	"context"
	_ "embed" // kwok.yaml
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// What acts on the objects the function writes: the controllers and the
// scheduler of the same Kubernetes version as the apiserver, and kwok
// playing the kubelets of NodeCount simulated nodes.
const (
	controllerManagerName = "kube-controller-manager"
	schedulerName         = "kube-scheduler"
	kwokName              = "kwok"

	// NodeCount is how many simulated nodes the replica has.
	NodeCount = 3
	// NeverReadyLabel on a pod (value "true") makes it Running but never
	// Ready: a rollout of such pods really fails, and the Deployment
	// controller reports ProgressDeadlineExceeded by itself.
	NeverReadyLabel = "lambda-eks.io/test-never-ready"
	// nodeAnnotation marks the nodes kwok manages.
	nodeAnnotation = "kwok.x-k8s.io/node"
)

// kwokConfig is kwok's configuration: the nodes it manages and the stages of
// their pods' lives.
//
//go:embed kwok.yaml
var kwokConfig []byte

// NodeName returns the name of simulated node i.
func NodeName(i int) string { return "kwok-node-" + strconv.Itoa(i) }

// clientKubeconfig is a kubeconfig for the apiserver with a client cert of
// the stack's PKI.
func (s *Stack) clientKubeconfig(identity string) []byte {
	p := s.Paths
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: localeks
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: localeks
  context: {cluster: localeks, user: %s}
current-context: localeks
`, s.APIServerURL(), p.PKI("ca.pem"), identity, p.PKI(identity+".pem"), p.PKI(identity+"-key.pem"), identity)
}

// controllerArgv returns the command lines of the controllers, the
// scheduler and kwok.
func (s *Stack) controllerArgv(bins map[string]string) map[string][]string {
	p, ports := s.Paths, s.Ports
	serving := []string{"--bind-address=127.0.0.1",
		"--tls-cert-file=" + p.PKI("controllers-serving.pem"), "--tls-private-key-file=" + p.PKI("controllers-serving-key.pem")}
	// Their own identity also checks who may read their health and metrics
	// (delegated authentication and authorization), as in kubeadm.
	identity := func(name string) []string {
		kc := p.File(name + ".kubeconfig")
		return []string{"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc}
	}
	return map[string][]string{
		controllerManagerName: append(append(append([]string{bins[controllerManagerName]}, identity(controllerManagerName)...), serving...),
			"--secure-port="+strconv.Itoa(ports.ControllerManager),
			"--leader-elect=false",
			// Each controller acts as its own service account in kube-system,
			// with the RBAC the apiserver bootstraps for it.
			"--use-service-account-credentials=true",
			"--service-account-private-key-file="+p.PKI("sa-key.pem"),
			"--root-ca-file="+p.PKI("ca.pem"),
			"--cluster-name="+ClusterName,
			// No CSR signing: the replica has no kubelets asking for certs.
			"--controllers=*,-certificatesigningrequest-signing-controller",
			"--profiling=false"),
		schedulerName: append(append(append([]string{bins[schedulerName]}, identity(schedulerName)...), serving...),
			"--secure-port="+strconv.Itoa(ports.Scheduler),
			"--leader-elect=false",
			"--profiling=false"),
		kwokName: {bins[kwokName], "--kubeconfig=" + p.File(kwokName+".kubeconfig"),
			"--config=" + p.File("kwok.yaml"),
			"--server-address=127.0.0.1:" + strconv.Itoa(ports.Kwok)},
	}
}

// writeControllerConfigs writes the kubeconfigs of the controllers, the
// scheduler and kwok, and kwok's configuration.
func (s *Stack) writeControllerConfigs() error {
	for _, name := range []string{controllerManagerName, schedulerName, kwokName} {
		if err := writeFile(s.Paths.File(name+".kubeconfig"), s.clientKubeconfig(name), 0o600); err != nil {
			return err
		}
	}
	return writeFile(s.Paths.File("kwok.yaml"), kwokConfig, 0o600)
}

// ensureNodes registers the simulated nodes (kwok manages those carrying its
// annotation) and waits until kwok reports them Ready.
func (s *Stack) ensureNodes(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return err
	}
	for i := range NodeCount {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName(i),
			Annotations: map[string]string{nodeAnnotation: "fake"},
			Labels: map[string]string{"type": "kwok", corev1.LabelHostname: NodeName(i), corev1.LabelOSStable: "linux",
				corev1.LabelArchStable: "amd64", corev1.LabelTopologyZone: Region + string(rune('a'+i))},
		}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: "localeks"}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("register node %s: %w", node.Name, err)
		}
	}
	for {
		ready, err := s.readyNodes(ctx, cs)
		if err == nil && ready == NodeCount {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d simulated nodes Ready: %w (last error: %w; logs in %s)", ready, NodeCount, ctx.Err(), err, s.Paths.Log(kwokName))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Stack) readyNodes(ctx context.Context, cs kubernetes.Interface) (int, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	ready := 0
	for _, n := range nodes.Items {
		if n.Annotations[nodeAnnotation] == "" {
			continue
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	return ready, nil
}
