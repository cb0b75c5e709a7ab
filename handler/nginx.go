package handler

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/lambda-eks/lambda-eks/kube"
)

// nginxDeployment is the apply configuration of ensure-nginx's Deployment:
// exactly the fields lambda-eks owns, so that fields set by others are left
// alone.
func nginxDeployment(namespace, name, image string, replicas int32) *appsv1ac.DeploymentApplyConfiguration {
	labels := map[string]string{
		"app.kubernetes.io/name":       name,
		"app.kubernetes.io/managed-by": kube.FieldManager,
	}
	selector := map[string]string{"app.kubernetes.io/name": name}
	return appsv1ac.Deployment(name, namespace).
		WithLabels(labels).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(selector).
				WithSpec(corev1ac.PodSpec().
					WithContainers(corev1ac.Container().
						WithName("nginx").
						WithImage(image).
						WithPorts(corev1ac.ContainerPort().WithName("http").WithContainerPort(80))))))
}

// nginxManifest is ensure-nginx's manifest: the one Deployment req names.
// Applied as any manifest is, it never reads discovery (the mapping of an
// apps/v1 workload is fixed): a warm call is one request, a cold one two.
func nginxManifest(req Request) (kube.Manifest, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(nginxDeployment(req.Namespace, req.Name, req.Image, req.Replicas))
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s: %w", req.Namespace, req.Name, err)
	}
	return kube.Manifest{{Index: 1, Object: &unstructured.Unstructured{Object: obj}}}, nil
}
