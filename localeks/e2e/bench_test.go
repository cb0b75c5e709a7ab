package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// BenchmarkColdInvoke measures a cold start through the whole chain: start
// the bootstrap process, then its first ensure-nginx (DescribeCluster through
// the shim, a new token verified by the authenticator against moto STS, a
// read and an apply).
//
//	cd localeks && GOWORK=off go test -run '^$' -bench Invoke ./e2e/
func BenchmarkColdInvoke(b *testing.B) {
	h := mustHarness(b)
	ctx := context.Background()
	creds, err := h.stack.AssumeRole(ctx, stack.ExecRole, stack.SessionName)
	if err != nil {
		b.Fatal(err)
	}
	env := append(h.stack.FunctionEnv(creds), "IMAGE=nginx:1.27", "REPLICAS=2")
	for b.Loop() {
		fn, err := lambdart.Start(ctx, h.bootstrap, env, 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		_, fnErr, err := fn.Invoke(ctx, []byte(`{"action":"ensure-nginx"}`))
		fn.Stop()
		if err != nil || fnErr != nil {
			b.Fatalf("invoke: %v %v", err, fnErr)
		}
	}
}

// BenchmarkWarmInvoke measures warm invocations of one process: one apply.
func BenchmarkWarmInvoke(b *testing.B) {
	h := mustHarness(b)
	fn := h.startFunction(b, fnOptions{})
	mustSucceed(b, fn, `{"action":"ensure-nginx"}`)
	// The steady state of a warm function, as BenchmarkEnsureReused's.
	h.settleDeployment(b, "default", "nginx")
	for b.Loop() {
		mustSucceed(b, fn, `{"action":"ensure-nginx"}`)
	}
}
