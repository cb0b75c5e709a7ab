package handler

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lambda-eks/lambda-eks/kube"
)

// nginxDeployment is ensure-nginx's Deployment as an apply configuration:
// exactly the fields lambda-eks owns, so that fields set by others are left
// alone. It is written out rather than built with client-go's
// applyconfigurations, which link client-go's discovery, its scheme of every
// built-in API group and their OpenAPI: 11 MB of binary and half the
// package init of a cold start (issue 15). TestNginxDeploymentIsTheApplyConfiguration
// proves it the object those builders give.
func nginxDeployment(namespace, name, image string, replicas int32) map[string]any {
	selector := map[string]any{"app.kubernetes.io/name": name}
	return map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata": map[string]any{
			"name": name, "namespace": namespace,
			"labels": map[string]any{"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": kube.FieldManager},
		},
		"spec": map[string]any{
			"replicas": int64(replicas),
			"selector": map[string]any{"matchLabels": selector},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app.kubernetes.io/name": name}},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "nginx", "image": image,
					"ports": []any{map[string]any{"name": "http", "containerPort": int64(80)}},
				}}},
			},
		},
	}
}

// nginxManifest is ensure-nginx's manifest: the one Deployment req names.
// Applied as any manifest is, it never reads discovery (the mapping of an
// apps/v1 workload is fixed): a warm call is one request, a cold one two.
func nginxManifest(req Request) (kube.Manifest, error) {
	obj := nginxDeployment(req.Namespace, req.Name, req.Image, req.Replicas)
	return kube.Manifest{{Index: 1, Object: &unstructured.Unstructured{Object: obj}}}, nil
}
