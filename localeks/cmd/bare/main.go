// Command bare is the floor of a Go Lambda function's cold start: an
// aws-lambda-go bootstrap with an empty handler, built as the functions are
// (-tags lambda.norpc, -s -w). The cold-start benchmark and the init budget
// test compare the functions' bootstraps with it.
package main

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() { lambda.Start(func(context.Context) error { return nil }) }
