package kube

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Get reads one object of any kind. kind is resolved as for delete and
// status: "Service", "Widget.example.com", or pinned by apiVersion when
// that is set. namespace is ignored for a cluster-scoped kind. An unknown
// kind is a *RefError; a missing object is the API server's NotFound
// (apierrors.IsNotFound), wrapped in an *OpError like every request error.
func (c *Client) Get(ctx context.Context, apiVersion, kind, namespace, name string) (*unstructured.Unstructured, error) {
	ts, err := c.resolveRefs(ctx, []Ref{{APIVersion: apiVersion, Kind: kind, Namespace: namespace, Name: name}}, namespace)
	if err != nil {
		return nil, err
	}
	return c.get(ctx, ts[0])
}

// get reads t's object.
func (c *Client) get(ctx context.Context, t target) (*unstructured.Unstructured, error) {
	var u *unstructured.Unstructured
	err := do(ctx, t.op("get"), func(ctx context.Context) error {
		var err error
		u, err = c.resource(t).Get(ctx, t.name, metav1.GetOptions{})
		return err
	})
	return u, err
}
