// Command helm is the Helm function of lambda-eks (its own bootstrap, built
// by `make build-LambdaEksHelmFunction`): Helm releases installed, upgraded,
// rolled back and uninstalled in-process with the Helm SDK. It is a peer of
// the main function on the same framework (internal/invoke,
// internal/cfnresource) and shares auth and kube with it; neither imports
// the other's package, and the main binary never links Helm.
//
// Everything is built once per process, at cold start.
package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/lambda-eks/lambda-eks/helmrelease"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func main() {
	// Helm reads and writes its cache and configuration under these; only
	// /tmp is writable in Lambda.
	for _, v := range []string{"HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"} {
		if os.Getenv(v) == "" {
			_ = os.Setenv(v, filepath.Join(os.TempDir(), "helm", v))
		}
	}
	invoke.Main(func(getenv func(string) string, awsCfg aws.Config, log *slog.Logger) (lambda.Handler, error) {
		// The Helm function's own configuration: the defaults every
		// function reads, and the registries' credentials.
		cfg, err := helmrelease.ConfigFromEnv(getenv)
		if err != nil {
			return nil, err
		}
		return helmrelease.New(cfg, awsCfg, log), nil
	})
}
