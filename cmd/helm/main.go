// Command helm is the Helm function of lambda-eks (its own bootstrap, built
// by `make build-LambdaEksHelmFunction`): Helm releases installed, upgraded,
// rolled back and uninstalled in-process with the Helm SDK. It shares auth
// and kube with the main function, whose binary never imports Helm.
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
	"github.com/lambda-eks/lambda-eks/handler"
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
	cfg, err := handler.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		os.Exit(1)
	}
	creds, err := helmrelease.ParseCredentials(os.Getenv("REGISTRY_CREDENTIALS"))
	if err != nil {
		log.Error("configuration", "error", err.Error())
		os.Exit(1)
	}
	awsCfg, err := auth.LoadConfig(context.Background())
	if err != nil {
		log.Error("aws configuration", "error", err.Error())
		os.Exit(1)
	}
	opts := helmrelease.Options{Credentials: creds, ECR: helmrelease.NewECRTokens(awsCfg, os.Getenv("ECR_REGISTRIES"))}
	h := helmrelease.New(cfg, opts, helmrelease.NewConnector(awsCfg), log)
	lambda.Start(h)
}
