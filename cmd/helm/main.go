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
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"k8s.io/klog/v2"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/helmrelease"
)

func main() {
	log := lambdacontext.NewLogger()
	slog.SetDefault(log)
	klog.SetSlogLogger(log)

	// Helm reads and writes its cache and configuration under these; only
	// /tmp is writable in Lambda.
	for _, v := range []string{"HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"} {
		if os.Getenv(v) == "" {
			_ = os.Setenv(v, filepath.Join(os.TempDir(), "helm", v))
		}
	}
	// The Helm function's own configuration: the defaults every function
	// reads, and the registries' credentials.
	cfg, err := helmrelease.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		os.Exit(1)
	}
	awsCfg, err := auth.LoadConfig(context.Background())
	if err != nil {
		log.Error("aws configuration", "error", err.Error())
		os.Exit(1)
	}
	h := helmrelease.New(cfg, awsCfg, log)
	lambda.Start(h)
}
