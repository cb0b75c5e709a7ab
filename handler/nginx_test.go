package handler

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/lambda-eks/lambda-eks/kube"
)

// TestNginxDeploymentIsTheApplyConfiguration: the Deployment ensure-nginx
// applies is, field for field, what client-go's typed apply configuration
// builders give (they are used here only: linked into the function, they
// cost its cold start half its package init).
func TestNginxDeploymentIsTheApplyConfiguration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ns, name, image string
		replicas        int32
	}{
		{"default", "nginx", "nginx:1.27", 2},
		{"team-a", "web", "public.ecr.aws/nginx/nginx@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 0},
	} {
		selector := map[string]string{"app.kubernetes.io/name": tt.name}
		ac := appsv1ac.Deployment(tt.name, tt.ns).
			WithLabels(map[string]string{"app.kubernetes.io/name": tt.name, "app.kubernetes.io/managed-by": kube.FieldManager}).
			WithSpec(appsv1ac.DeploymentSpec().
				WithReplicas(tt.replicas).
				WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
				WithTemplate(corev1ac.PodTemplateSpec().
					WithLabels(selector).
					WithSpec(corev1ac.PodSpec().
						WithContainers(corev1ac.Container().
							WithName("nginx").
							WithImage(tt.image).
							WithPorts(corev1ac.ContainerPort().WithName("http").WithContainerPort(80))))))
		want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ac)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, nginxDeployment(tt.ns, tt.name, tt.image, tt.replicas)); diff != "" {
			t.Errorf("%s/%s (-applyconfigurations +nginxDeployment):\n%s", tt.ns, tt.name, diff)
		}
	}
}
