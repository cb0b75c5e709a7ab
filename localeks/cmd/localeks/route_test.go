package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		name, event  string
		wantFunction string
		wantMode     string
	}{
		{"empty", `{}`, "lambda-eks", "invoke"},
		{"main action", `{"action":"status","name":"nginx"}`, "lambda-eks", "invoke"},
		{"helm action", `{"action": "helm-upgrade", "release": "demo"}`, "lambda-eks-helm", "invoke"},
		{"helm action, spaced and nested", "{\n  \"values\": {\"action\": \"x\"},\n  \"action\" : \"helm-status\"\n}", "lambda-eks-helm", "invoke"},
		{"not a helm action", `{"action":"helmet"}`, "lambda-eks", "invoke"},
		{"action of another type", `{"action":["helm-upgrade"]}`, "lambda-eks", "invoke"},
		{"manifest resource", `{"RequestType":"Create","ResourceType":"Custom::KubernetesManifest"}`, "lambda-eks", "cfn"},
		{"helm resource", `{"RequestType":"Delete","ResourceType":"Custom::HelmRelease","ResourceProperties":{"Release":"x"}}`, "lambda-eks-helm", "cfn"},
		{"request without a type", `{"RequestType":"Create"}`, "lambda-eks", "cfn"},
		{"codepipeline job", `{"CodePipeline.job":{"id":"x"}}`, "lambda-eks", "codepipeline"},
		{"codepipeline job of the main function", `{"CodePipeline.job":{"id":"x","data":{"actionConfiguration":{"configuration":` +
			`{"UserParameters":"{\"pipeline\":\"web\",\"directory\":\"k8s\"}"}}}}}`, "lambda-eks", "codepipeline"},
		{"codepipeline job naming a release", `{"CodePipeline.job":{"id":"x","data":{"actionConfiguration":{"configuration":` +
			`{"UserParameters":"{\"pipeline\":\"web\",\"release\":\"web\"}"}}}}}`, "lambda-eks-helm", "codepipeline"},
		{"codepipeline job, UserParameters not JSON", `{"CodePipeline.job":{"id":"x","data":{"actionConfiguration":{"configuration":` +
			`{"UserParameters":"release"}}}}}`, "lambda-eks", "codepipeline"},
		{"lifecycle action", `{"source":"aws.autoscaling","detail-type":"EC2 Instance-terminate Lifecycle Action","detail":{}}`, "lambda-eks-lifecycle", "lifecycle"},
		{"spot interruption", `{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning"}`, "lambda-eks-lifecycle", "lifecycle"},
		{"health event", `{"source":"aws.health","detail-type":"AWS Health Event"}`, "lambda-eks-lifecycle", "lifecycle"},
		{"scheduled event", `{"source":"aws.events","detail-type":"Scheduled Event"}`, "lambda-eks", "invoke"},
		{"source of another type", `{"source":["aws.ec2"]}`, "lambda-eks", "invoke"},
		// The main function refuses what it cannot read, with its own error.
		{"not JSON", `{"action":"helm-upgrade"`, "lambda-eks", "invoke"},
		{"not an object", `["helm-upgrade"]`, "lambda-eks", "invoke"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn, mode := route([]byte(tc.event))
			if diff := cmp.Diff(tc.wantFunction+" "+tc.wantMode, fn+" "+mode); diff != "" {
				t.Errorf("route (-want +got):\n%s", diff)
			}
		})
	}
}

// Every sample in events/ goes to the function its name says: helm-* to the
// Helm function, cfn-* and helm-cfn-* through cfn, codepipeline-* and
// helm-codepipeline-* through codepipeline, asg-*, spot-*, rebalance* and health-* to the lifecycle
// function through lifecycle.
func TestRouteSamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "..", "events", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, path := range paths {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(path) //nolint:gosec // G304: the repository's samples
			if err != nil {
				t.Fatal(err)
			}
			want := "lambda-eks"
			if strings.HasPrefix(name, "helm-") {
				want = "lambda-eks-helm"
			}
			wantMode := "invoke"
			if strings.HasPrefix(strings.TrimPrefix(name, "helm-"), "cfn-") {
				wantMode = "cfn"
			}
			if strings.HasPrefix(strings.TrimPrefix(name, "helm-"), "codepipeline-") {
				wantMode = "codepipeline"
			}
			for _, p := range []string{"asg-", "spot-", "rebalance", "health-"} {
				if strings.HasPrefix(name, p) {
					want, wantMode = "lambda-eks-lifecycle", "lifecycle"
				}
			}
			fn, mode := route(b)
			if diff := cmp.Diff(want+" "+wantMode, fn+" "+mode); diff != "" {
				t.Errorf("route (-want +got):\n%s", diff)
			}
		})
	}
}

// lambdart names functions of the replica's account in its refusals.
func TestFunctionARNIsTheReplicas(t *testing.T) {
	if got, want := lambdart.FunctionARN("x"), "arn:aws:lambda:"+stack.Region+":"+stack.Account+":function:x"; got != want {
		t.Errorf("lambdart.FunctionARN = %q, want %q", got, want)
	}
}
