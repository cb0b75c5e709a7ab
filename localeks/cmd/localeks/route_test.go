package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
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
// Helm function, cfn-* and helm-cfn-* through cfn, codepipeline-* through
// codepipeline.
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
			if strings.HasPrefix(name, "codepipeline-") {
				wantMode = "codepipeline"
			}
			fn, mode := route(b)
			if diff := cmp.Diff(want+" "+wantMode, fn+" "+mode); diff != "" {
				t.Errorf("route (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFunctionName(t *testing.T) {
	for in, want := range map[string]string{
		"lambda-eks-helm": "lambda-eks-helm",
		"function":        "function",
		"arn:aws:lambda:us-east-1:123456789012:function:lambda-eks":         "lambda-eks",
		"arn:aws:lambda:us-east-1:123456789012:function:lambda-eks:$LATEST": "lambda-eks",
		"arn:aws:lambda:us-east-1:123456789012:layer:lambda-eks":            "arn:aws:lambda:us-east-1:123456789012:layer:lambda-eks",
	} {
		if got := functionName(in); got != want {
			t.Errorf("functionName(%q) = %q, want %q", in, got, want)
		}
	}
}

// A name no function has is refused as Lambda refuses it, before anything
// runs: the AWS CLI shows ResourceNotFoundException.
func TestInvokeAPIUnknownFunction(t *testing.T) {
	api := invokeAPI(map[string]*lambdart.Function{"lambda-eks": nil})
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/2015-03-31/functions/lambda-eks-hlem/invocations", strings.NewReader(`{}`)))
	if rec.Code != http.StatusNotFound || rec.Header().Get("X-Amzn-ErrorType") != "ResourceNotFoundException" {
		t.Fatalf("status %d, error type %q, want 404 ResourceNotFoundException", rec.Code, rec.Header().Get("X-Amzn-ErrorType"))
	}
	var body struct{ Message string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || !strings.Contains(body.Message, "function:lambda-eks-hlem") {
		t.Errorf("body %s (%v), want the function's ARN named", rec.Body.Bytes(), err)
	}
}
