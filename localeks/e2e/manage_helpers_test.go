package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
)

// manageResponse is the response contract with the fields of the manage
// actions (dryRun, from/to, readiness); decoded strictly.
type manageResponse struct {
	Cluster string         `json:"cluster"`
	Action  string         `json:"action"`
	DryRun  bool           `json:"dryRun"`
	Objects []manageObject `json:"objects"`
}

type manageObject struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Namespace  string     `json:"namespace"`
	Name       string     `json:"name"`
	Result     string     `json:"result"`
	From       *int32     `json:"from"`
	To         *int32     `json:"to"`
	Note       string     `json:"note"`
	Readiness  *readiness `json:"readiness"`
}

type readiness struct {
	Status             string `json:"status"`
	Desired            int32  `json:"desired"`
	Updated            int32  `json:"updated"`
	Ready              int32  `json:"ready"`
	Available          int32  `json:"available"`
	Generation         int64  `json:"generation"`
	ObservedGeneration int64  `json:"observedGeneration"`
	Conditions         []struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"conditions"`
	Message string `json:"message"`
}

// event marshals an event; it fails the test if it cannot.
func event(tb testing.TB, fields map[string]any) string {
	tb.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// manage invokes fn with event and decodes the response strictly.
func manage(tb testing.TB, fn *lambdart.Function, ev string) (manageResponse, *lambdart.FunctionError) {
	tb.Helper()
	resp, fnErr, err := fn.Invoke(context.Background(), []byte(ev))
	if err != nil {
		tb.Fatalf("invoke %.200s: %v", ev, err)
	}
	if fnErr != nil {
		return manageResponse{}, fnErr
	}
	var r manageResponse
	dec := json.NewDecoder(bytes.NewReader(resp))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("response %s does not match the contract: %v", resp, err)
	}
	return r, nil
}

func mustManage(tb testing.TB, fn *lambdart.Function, ev string) manageResponse {
	tb.Helper()
	r, fnErr := manage(tb, fn, ev)
	if fnErr != nil {
		tb.Fatalf("invoke %.300s: function error %s: %s", ev, fnErr.Type, fnErr.Message)
	}
	return r
}

func mustFailManage(tb testing.TB, fn *lambdart.Function, ev, errorType string) *lambdart.FunctionError {
	tb.Helper()
	r, fnErr := manage(tb, fn, ev)
	if fnErr == nil {
		tb.Fatalf("invoke %.300s: got response %+v, want errorType %s", ev, r, errorType)
	}
	if fnErr.Type != errorType {
		tb.Fatalf("invoke %.300s: errorType %s (%s), want %s", ev, fnErr.Type, fnErr.Message, errorType)
	}
	return fnErr
}

// results lists "Kind/name=result" of a response, in its order.
func results(r manageResponse) []string {
	out := make([]string, 0, len(r.Objects))
	for _, o := range r.Objects {
		out = append(out, o.Kind+"/"+o.Name+"="+o.Result)
	}
	return out
}

// dynamicAdmin is a dynamic client as cluster admin.
func (h *harness) dynamicAdmin(tb testing.TB) dynamic.Interface {
	tb.Helper()
	d, err := dynamic.NewForConfig(h.stack.AdminConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// kubectl runs kubectl as cluster admin against the replica, with stdin,
// and returns its stdout.
func (h *harness) kubectl(tb testing.TB, stdin string, args ...string) string {
	tb.Helper()
	out, err := h.kubectlErr(stdin, args...)
	if err != nil {
		tb.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (h *harness) kubectlErr(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", h.stack.Paths.AdminKubeconfig()}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1")
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// grantCluster applies the project's permissions-cluster.yml, unchanged, as
// admin, plus extra RBAC documents, and removes both at the end of the test.
// While it is bound the group lambda-eks may write in every namespace, so
// tests that expect a Forbidden must not run meanwhile.
func (h *harness) grantCluster(tb testing.TB, extra string) {
	tb.Helper()
	path := filepath.Join(h.root, "permissions-cluster.yml")
	h.kubectl(tb, "", "apply", "-f", path)
	if extra != "" {
		h.kubectl(tb, extra, "apply", "-f", "-")
	}
	tb.Cleanup(func() {
		if extra != "" {
			if _, err := h.kubectlErr(extra, "delete", "--ignore-not-found", "-f", "-"); err != nil {
				tb.Errorf("remove extra RBAC: %v", err)
			}
		}
		if _, err := h.kubectlErr("", "delete", "--ignore-not-found", "-f", path); err != nil {
			tb.Errorf("remove permissions-cluster.yml: %v", err)
		}
	})
}

// dropNamespace deletes a namespace as admin and finalizes it, so that it
// goes at once instead of when kube-controller-manager's namespace
// controller has emptied it; objects left in it outlive it (runID), but its
// pods are deleted first (at once, grace period 0): a pod left behind stays
// bound to its node, where a drain could neither evict it nor see it go.
func (h *harness) dropNamespace(tb testing.TB, name string) {
	tb.Helper()
	ctx := context.Background()
	err := h.admin.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		tb.Errorf("delete namespace %s: %v", name, err)
		return
	}
	// The namespace is terminating: its controllers can no longer make pods.
	if err := h.admin.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)},
		metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
		tb.Errorf("delete the pods of namespace %s: %v", name, err)
	}
	ns, err := h.admin.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return
	}
	ns.Spec.Finalizers = nil
	if _, err := h.admin.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		tb.Errorf("finalize namespace %s: %v", name, err)
	}
}

// dropCRD deletes a CRD as admin and waits until it is gone.
func (h *harness) dropCRD(tb testing.TB, name string) {
	tb.Helper()
	ctx := context.Background()
	crds := h.dynamicAdmin(tb).Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	err := crds.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		tb.Fatalf("delete CRD %s: %v", name, err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := crds.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
	}
	tb.Fatalf("CRD %s still there 30 s after delete", name)
}

// normalized is an object without what differs between two equal objects
// made by different clients at different times.
func normalized(u *unstructured.Unstructured) map[string]any {
	o := u.DeepCopy().Object
	md, _ := o["metadata"].(map[string]any)
	for _, f := range []string{"namespace", "uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink"} {
		delete(md, f)
	}
	delete(o, "status")
	// The Deployment controller counts rollouts: the function's object was
	// applied twice (blue, then red), kubectl's once.
	if ann, ok := md["annotations"].(map[string]any); ok {
		delete(ann, "deployment.kubernetes.io/revision")
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	if u.GetKind() == "Service" {
		spec, _ := o["spec"].(map[string]any)
		for _, f := range []string{"clusterIP", "clusterIPs"} {
			delete(spec, f)
		}
	}
	return o
}

// managers lists an object's field managers and operations.
// A controller's status writes (subresource status) are left out: they own
// no part of what was applied.
func managers(u *unstructured.Unstructured) []string {
	var out []string
	for _, mf := range u.GetManagedFields() {
		if mf.Subresource == "status" {
			continue
		}
		out = append(out, mf.Manager+"/"+string(mf.Operation))
	}
	return out
}

// runID makes names unique per run: the replica is shared and reused, and
// what an earlier run left behind (a failed test's objects, the objects of a
// namespace dropNamespace finalized) may still be there.
func runID() string { return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff) }

// startRaw starts a bootstrap process with env as it is, for benchmarks
// that start one per iteration; the caller stops it.
func startRaw(tb testing.TB, h *harness, env []string, timeout time.Duration) *lambdart.Function {
	tb.Helper()
	fn, err := lambdart.Start(context.Background(), h.bootstrap, env, timeout)
	if err != nil {
		tb.Fatalf("start function: %v", err)
	}
	return fn
}
