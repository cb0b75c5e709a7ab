// Command bootstrap is the lambda-eks function: it manages an Amazon EKS
// cluster from AWS Lambda with an in-process EKS token and client-go.
//
// Everything is built once per process, at cold start; warm invocations
// reuse the AWS configuration, the token and the clientset.
package main

import (
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/lambda-eks/lambda-eks/handler"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func main() {
	invoke.Main(func(getenv func(string) string, awsCfg aws.Config, log *slog.Logger) (lambda.Handler, error) {
		cfg, err := handler.ConfigFromEnv(getenv)
		if err != nil {
			return nil, err
		}
		return handler.New(cfg, handler.NewConnector(awsCfg), log, handler.WithS3(s3.NewFromConfig(awsCfg)), handler.WithAWS(awsCfg)), nil
	})
}
