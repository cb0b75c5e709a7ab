// Command bootstrap is the lambda-eks function: it manages an Amazon EKS
// cluster from AWS Lambda with an in-process EKS token and client-go.
//
// Everything is built once per process, at cold start; warm invocations
// reuse the AWS configuration, the token and the clientset.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"k8s.io/klog/v2"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/handler"
)

func main() {
	log := lambdacontext.NewLogger()
	slog.SetDefault(log)
	// client-go logs through klog; send it to the same JSON stream.
	klog.SetSlogLogger(log)

	cfg, err := handler.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		os.Exit(1)
	}
	awsCfg, err := auth.LoadConfig(context.Background())
	if err != nil {
		log.Error("aws configuration", "error", err.Error())
		os.Exit(1)
	}
	h := handler.New(cfg, handler.NewConnector(awsCfg), log, handler.WithS3(s3.NewFromConfig(awsCfg)))
	// h is a lambda.Handler: it gets the raw payload and decodes it itself,
	// strictly, so aws-lambda-go never decodes an event.
	lambda.Start(h)
}
