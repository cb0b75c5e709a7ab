package kube

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

// Deployment is the desired state of the NGINX Deployment.
type Deployment struct {
	Namespace string
	Name      string
	Image     string
	Replicas  int32
}

// NewDeployment builds the apply configuration for d: exactly the fields
// lambda-eks owns, so that fields set by others are left alone.
func NewDeployment(d Deployment) *appsv1ac.DeploymentApplyConfiguration {
	labels := map[string]string{
		"app.kubernetes.io/name":       d.Name,
		"app.kubernetes.io/managed-by": FieldManager,
	}
	selector := map[string]string{"app.kubernetes.io/name": d.Name}
	return appsv1ac.Deployment(d.Name, d.Namespace).
		WithLabels(labels).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(d.Replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(selector).
				WithSpec(corev1ac.PodSpec().
					WithContainers(corev1ac.Container().
						WithName("nginx").
						WithImage(d.Image).
						WithPorts(corev1ac.ContainerPort().WithName("http").WithContainerPort(80))))))
}

// EnsureDeployment makes the Deployment match d by server-side apply, taking
// ownership of its fields from any other manager, and reports whether it was
// created, configured or already as wanted. It is an apply of one object
// whose mapping is known, so it never reads discovery: a warm call is one
// request, a cold one two (see Apply).
func (c *Client) EnsureDeployment(ctx context.Context, d Deployment) (ObjectResult, error) {
	t, err := workloadTarget(KindDeployment, d.Namespace, d.Name)
	if err != nil {
		return ObjectResult{}, err
	}
	obj, err := asMap(NewDeployment(d))
	if err != nil {
		return t.result(""), fmt.Errorf("deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	t.obj = &unstructured.Unstructured{Object: obj}
	return c.applyObject(ctx, t, ApplyOptions{Force: true})
}
