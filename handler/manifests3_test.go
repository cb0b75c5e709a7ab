package handler

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-sdk-go-v2/aws"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"
)

// An apply, delete or status event may name its manifest in S3: read with
// the handler's S3 client after every other check, decoded as an inline one.
func TestManifestS3Events(t *testing.T) {
	t.Parallel()
	const doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-s3}\ndata: {k: v}\n"
	tests := []struct {
		name     string
		event    string
		s3       *fakeS3
		wantCode string
		wantMsg  string
		wantRead bool
	}{
		{"apply from S3", `{"action":"apply","namespace":"team","manifestS3":"s3://manifests/m.yaml"}`, &fakeS3{body: doc}, "", "", true},
		{"status from S3", `{"action":"status","namespace":"team","manifestS3":"s3://manifests/m.yaml"}`, &fakeS3{body: doc}, "", "", true},
		{"both manifest and manifestS3", `{"action":"apply","manifest":"x: y","manifestS3":"s3://manifests/m.yaml"}`, &fakeS3{body: doc},
			"InvalidEvent", "do not go together", false},
		{"not an S3 URI", `{"action":"apply","manifestS3":"https://b/m.yaml"}`, &fakeS3{body: doc}, "InvalidEvent", "s3://BUCKET/KEY", false},
		{"an action that reads no manifest", `{"action":"scale","name":"web","replicas":1,"manifestS3":"s3://manifests/m.yaml"}`, &fakeS3{body: doc},
			"InvalidEvent", "does not use manifestS3", false},
		{"a bad document in S3", `{"action":"apply","manifestS3":"s3://manifests/m.yaml"}`, &fakeS3{body: "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"},
			"InvalidEvent", "manifestS3 s3://manifests/m.yaml: manifest document 1", true},
		{"missing object", `{"action":"apply","manifestS3":"s3://manifests/m.yaml"}`, &fakeS3{err: &s3types.NoSuchKey{}},
			"NotFound", "upload the manifest", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			api := newFakeAPI(t)
			h := New(testConfig, api.connector(), discardLogger(), WithS3(tt.s3))
			out, err := h.Invoke(t.Context(), []byte(tt.event))
			if read := tt.s3.got != nil; read != tt.wantRead {
				t.Errorf("S3 read: %v, want %v", read, tt.wantRead)
			}
			if tt.wantRead && (aws.ToString(tt.s3.got.Bucket) != "manifests" || aws.ToString(tt.s3.got.Key) != "m.yaml") {
				t.Errorf("read s3://%s/%s, want s3://manifests/m.yaml", aws.ToString(tt.s3.got.Bucket), aws.ToString(tt.s3.got.Key))
			}
			if tt.wantCode != "" {
				var le messages.InvokeResponse_Error
				if !errors.As(err, &le) || le.Type != tt.wantCode || !strings.Contains(le.Message, tt.wantMsg) {
					t.Fatalf("err = %v, want %s with %q", err, tt.wantCode, tt.wantMsg)
				}
				if n := api.connects.Load(); n != 0 && tt.wantCode == "InvalidEvent" {
					t.Errorf("%d connects for an invalid event, want 0", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var resp Response
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, o := range resp.Objects {
				names = append(names, o.Kind+"/"+o.Name)
			}
			if diff := cmp.Diff([]string{"ConfigMap/from-s3"}, names); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}
