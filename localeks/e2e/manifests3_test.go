package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"
)

// Issue 10: apply, status and delete events take their manifest from S3
// (manifestS3), read by the function with its own role, so a manifest may
// be larger than an event.
func TestManifestS3Event(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	ns := "s3-" + runID()
	h.mustNamespace(t, ns)
	t.Cleanup(func() { h.dropNamespace(t, ns) })
	h.grantCluster(t, "")
	const bucket = "lambda-eks-e2e-manifests"
	s3c := h.motoS3(t)
	_, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		t.Fatalf("create bucket: %v", err)
	}
	var m strings.Builder
	for i := range 3 {
		fmt.Fprintf(&m, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d}\ndata: {k: v}\n---\n", i)
	}
	key := ns + "/app.yaml"
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(m.String())}); err != nil {
		t.Fatal(err)
	}
	fn := h.startFunction(t, fnOptions{})
	uri := "s3://" + bucket + "/" + key
	want := func(result string) []string {
		return []string{"ConfigMap/cm-0=" + result, "ConfigMap/cm-1=" + result, "ConfigMap/cm-2=" + result}
	}
	for _, step := range []struct{ action, result string }{
		{"apply", "created"}, {"status", "ready"}, {"delete", "deleted"}, {"status", "absent"},
	} {
		got := mustManage(t, fn, event(t, map[string]any{"action": step.action, "namespace": ns, "manifestS3": uri}))
		if diff := cmp.Diff(want(step.result), results(got)); diff != "" {
			t.Errorf("%s from %s (-want +got):\n%s", step.action, uri, diff)
		}
	}
	fnErr := mustFailManage(t, fn, event(t, map[string]any{"action": "apply", "namespace": ns, "manifestS3": "s3://" + bucket + "/missing.yaml"}), "NotFound")
	if !strings.Contains(fnErr.Message, "missing.yaml") {
		t.Errorf("message %q does not name the object", fnErr.Message)
	}
}
