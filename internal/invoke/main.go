package invoke

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/klog/v2"

	"github.com/lambda-eks/lambda-eks/auth"
)

// Builder builds a function's handler once per process, from its
// environment (getenv), the process's AWS configuration and its logger.
type Builder func(getenv func(string) string, awsCfg aws.Config, log *slog.Logger) (lambda.Handler, error)

// Main is every function's main: slog JSON logs that carry the request id
// (client-go's klog sent to the same stream), the AWS configuration loaded
// once, the handler built once by build, then lambda.Start. A bad
// environment ends the process at cold start, logged, instead of failing
// every invocation.
func Main(build Builder) {
	setMemoryLimit(os.Getenv)
	log := lambdacontext.NewLogger()
	slog.SetDefault(log)
	klog.SetSlogLogger(log)

	awsCfg, err := auth.LoadConfig(context.Background())
	if err != nil {
		log.Error("aws configuration", "error", err.Error())
		os.Exit(1)
	}
	h, err := build(os.Getenv, awsCfg, log)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		os.Exit(1)
	}
	m, err := MetricsFromEnv(os.Getenv, stdout)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		os.Exit(1)
	}
	ConfigureMetrics(m)
	// h gets the raw payload and decodes it itself, strictly, so that
	// aws-lambda-go never decodes an event.
	lambda.Start(tallied{h})
}

// tallied gives every invocation a tally for its metrics record.
type tallied struct{ h lambda.Handler }

func (t tallied) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	return t.h.Invoke(withTally(ctx), payload)
}
