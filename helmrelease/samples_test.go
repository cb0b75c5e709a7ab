package helmrelease

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lambda-eks/lambda-eks/internal/cfnresource"
	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// TestEventSamples: every events/helm-*.json is one the Helm function
// accepts as it is (./local.sh and the README run them): an action that
// decodes and resolves, a Custom::HelmRelease request whose properties
// resolve to a release, or a CodePipeline job whose UserParameters do.
func TestEventSamples(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob(filepath.Join("..", "events", "helm-*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no Helm samples in events/: %v", err)
	}
	defaults := invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(path) //nolint:gosec // G304: the repository's samples
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(filepath.Base(path), "helm-codepipeline-") {
				ev, err := codepipeline.Decode(b)
				if !codepipeline.Is(b) || err != nil {
					t.Fatalf("not a CodePipeline job: %v", err)
				}
				p, err := DecodePipelineParams(ev.Job.Data.ActionConfiguration.Configuration.UserParameters)
				if err == nil {
					_, err = p.request(defaults)
				}
				if err != nil {
					t.Errorf("UserParameters: %v", err)
				}
				return
			}
			if strings.HasPrefix(filepath.Base(path), "helm-cfn-") {
				if !cfnresource.Is(b) {
					t.Fatal("not recognised as a CloudFormation request")
				}
				var req cfnresource.Request
				if err := json.Unmarshal(b, &req); err != nil {
					t.Fatal(err)
				}
				if req.ResourceType != "Custom::HelmRelease" {
					t.Errorf("ResourceType %q, want Custom::HelmRelease", req.ResourceType)
				}
				ev, err := decodeHelmProperties(req.ResourceProperties, "ResourceProperties", ActionUpgrade)
				if err == nil {
					_, err = Resolve(ev, defaults)
				}
				if err != nil {
					t.Errorf("properties: %v", err)
				}
				return
			}
			if cfnresource.Is(b) {
				t.Fatal("taken for a CloudFormation request")
			}
			ev, err := DecodeEvent(b)
			if err == nil {
				_, err = Resolve(ev, defaults)
			}
			if err != nil {
				t.Errorf("%v", err)
			}
		})
	}
}
