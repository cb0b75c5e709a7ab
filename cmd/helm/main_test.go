package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The main function's binary must never link the Helm SDK: it would no
// longer fit its 32 MB, nor start as fast.
func TestMainFunctionDoesNotImportHelm(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/lambda-eks/lambda-eks").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var helm []string
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "helm.sh/") || strings.HasPrefix(pkg, "github.com/lambda-eks/lambda-eks/helmrelease") {
			helm = append(helm, pkg)
		}
	}
	if len(helm) > 0 {
		t.Errorf("the main function imports %d Helm packages, e.g. %s", len(helm), helm[0])
	}
	// And the Helm function does link it (the test can fail).
	out, err = exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "helm.sh/helm/v4/pkg/action") {
		t.Errorf("cmd/helm does not import helm.sh/helm/v4/pkg/action: %v", err)
	}
}

// Functions are peers on internal/invoke, internal/cfnresource and
// internal/codepipeline: the Helm function never imports the main
// function's package. (It links the S3 SDK since it reads CodePipeline
// artifacts, through internal/codepipeline.)
func TestHelmFunctionDoesNotImportHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if slices.Contains(deps, "github.com/lambda-eks/lambda-eks/handler") {
		t.Error("the Helm function imports github.com/lambda-eks/lambda-eks/handler")
	}
	// The test can fail: the framework is there.
	for _, pkg := range []string{"github.com/lambda-eks/lambda-eks/internal/invoke", "github.com/lambda-eks/lambda-eks/internal/codepipeline"} {
		if !slices.Contains(deps, pkg) {
			t.Errorf("the Helm function does not import %s", pkg)
		}
	}
}
