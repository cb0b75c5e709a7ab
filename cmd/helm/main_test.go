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

// Functions are peers on internal/invoke and internal/cfnresource: the Helm
// function never imports the main function's package, nor what only the
// main function uses (the S3 SDK reads its manifestS3).
func TestHelmFunctionDoesNotImportHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, pkg := range []string{"github.com/lambda-eks/lambda-eks/handler", "github.com/aws/aws-sdk-go-v2/service/s3"} {
		if slices.Contains(deps, pkg) {
			t.Errorf("the Helm function imports %s", pkg)
		}
	}
	// The test can fail: the framework is there.
	if !slices.Contains(deps, "github.com/lambda-eks/lambda-eks/internal/invoke") {
		t.Error("the Helm function does not import internal/invoke")
	}
}
