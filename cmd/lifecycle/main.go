// Command lifecycle is the node lifecycle function of lambda-eks (its own
// bootstrap, built by `make build-LambdaEksLifecycleFunction`): it drains
// self-managed nodes on Auto Scaling terminate lifecycle actions, Spot
// interruption warnings, rebalance recommendations and AWS Health scheduled
// changes, and answers launch lifecycle actions once the Node is Ready. It
// is a peer of the main and Helm functions on the same framework
// (internal/invoke) and imports neither of their packages.
//
// Everything is built once per process, at cold start.
package main

import (
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/lifecycle"
)

func main() {
	invoke.Main(func(getenv func(string) string, awsCfg aws.Config, log *slog.Logger) (lambda.Handler, error) {
		cfg, err := lifecycle.ConfigFromEnv(getenv)
		if err != nil {
			return nil, err
		}
		return lifecycle.New(cfg, awsCfg, getenv("AWS_LAMBDA_FUNCTION_NAME"), log), nil
	})
}
