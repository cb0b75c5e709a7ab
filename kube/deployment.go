package kube

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// created, configured or already as wanted.
//
// A warm call makes one request, the apply, and compares its answer with
// the object as this process saw it last. A cold call reads the object
// first, once per process.
func (c *Client) EnsureDeployment(ctx context.Context, d Deployment) (ObjectResult, error) {
	key := objectKey{resource: "deployments.apps", namespace: d.Namespace, name: d.Name}
	deployments := c.cs.AppsV1().Deployments(d.Namespace)
	res := ObjectResult{APIVersion: "apps/v1", Kind: "Deployment", Namespace: d.Namespace, Name: d.Name}

	ac := NewDeployment(d)
	intent, err := asMap(ac)
	if err != nil {
		return res, fmt.Errorf("deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	before, known := c.lastSeen(key)
	if !known {
		err := do(ctx, OpError{Verb: "get", Resource: key.resource, Namespace: d.Namespace, Name: d.Name}, func(ctx context.Context) error {
			cur, err := deployments.Get(ctx, d.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				before = seenObject{}
				return nil
			case err != nil:
				return err
			}
			before, err = seenOf(cur, intent)
			return err
		})
		if err != nil {
			return res, err
		}
	}

	var out *appsv1.Deployment
	err = do(ctx, OpError{Verb: "patch", Resource: key.resource, Namespace: d.Namespace, Name: d.Name}, func(ctx context.Context) error {
		var err error
		out, err = deployments.Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	})
	if err != nil {
		c.forget(key)
		return res, err
	}
	after, err := seenOf(out, intent)
	if err != nil {
		return res, err
	}
	c.remember(key, after)
	res.Result = resultOf(before, after, false)
	return res, nil
}
