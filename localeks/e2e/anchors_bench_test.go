package e2e

// Benchmarks of lambda-eks side by side with what users run today (see
// ANCHORS.md), in one run on the same local replica. scripts/bench.sh runs
// them and prints the ratios.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/handler"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// benchEnv returns the function's environment for the exec role's session,
// as a map and as a list.
func benchEnv(tb testing.TB) (map[string]string, []string, aws.Credentials) {
	tb.Helper()
	hh := mustHarness(tb)
	creds, err := hh.stack.AssumeRole(context.Background(), stack.ExecRole, stack.SessionName)
	if err != nil {
		tb.Fatal(err)
	}
	list := hh.stack.FunctionEnv(creds)
	m := map[string]string{}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m, list, creds
}

// inProcessAWS is the function's aws.Config, built in this process, reaching
// moto through the shim like the function does.
func inProcessAWS(tb testing.TB) aws.Config {
	tb.Helper()
	env, _, creds := benchEnv(tb)
	proxy, err := url.Parse(env["HTTPS_PROXY"])
	if err != nil {
		tb.Fatal(err)
	}
	pem, err := os.ReadFile(env["SSL_CERT_FILE"])
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.Proxy = http.ProxyURL(proxy)
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	})
	cfg, err := auth.LoadConfig(context.Background(),
		config.WithHTTPClient(client),
		config.WithRegion(stack.Region),
		config.WithCredentialsProvider(credentials.StaticCredentialsProvider{Value: creds}))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// BenchmarkTokenInProcess is lambda-eks's token: pkg/token GetWithSTS with
// an STS client built once.
func BenchmarkTokenInProcess(b *testing.B) {
	ts, err := auth.NewTokenSource(inProcessAWS(b), stack.ClusterName)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenExecAuthenticator is the original demo's token: exec the
// aws-iam-authenticator binary for every call.
func BenchmarkTokenExecAuthenticator(b *testing.B) {
	hh := mustHarness(b)
	_, env, _ := benchEnv(b)
	bin := filepath.Join(hh.parts, "aws-iam-authenticator")
	benchExec(b, env, bin, "token", "-i", stack.ClusterName)
}

// BenchmarkTokenAWSCLI is the CDK kubectl handler's token: awscli's
// `aws eks get-token` for every call.
func BenchmarkTokenAWSCLI(b *testing.B) {
	_, env, _ := benchEnv(b)
	benchExec(b, env, "aws", "eks", "get-token", "--cluster-name", stack.ClusterName, "--region", stack.Region)
}

func benchExec(b *testing.B, env []string, name string, args ...string) {
	b.Helper()
	env = append(os.Environ(), append(env, "AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull)...)
	for b.Loop() {
		cmd := exec.Command(name, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(string(out), "k8s-aws-v1.") {
			b.Fatalf("%s printed no token", name)
		}
	}
}

// BenchmarkEnsureReused is a warm ensure-nginx in this process: everything
// built once, one apply per call.
func BenchmarkEnsureReused(b *testing.B) {
	hh := mustHarness(b)
	cfg := benchConfig()
	h := handler.New(cfg, handler.NewConnector(inProcessAWS(b)), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	ev := json.RawMessage(`{}`)
	if _, err := h.Invoke(ctx, ev); err != nil {
		b.Fatal(err)
	}
	// The steady state of a warm function: past the seconds after its own
	// last change, in which an apply is preconditioned (kube.Apply).
	hh.settleDeployment(b, cfg.Namespace, cfg.Name)
	for b.Loop() {
		if _, err := h.Invoke(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnsurePerCall builds everything per call, as the demo did: AWS
// config, DescribeCluster, token, HTTP client and clientset, then the apply.
func BenchmarkEnsurePerCall(b *testing.B) {
	base := inProcessAWS(b)
	ctx := context.Background()
	ev := json.RawMessage(`{}`)
	for b.Loop() {
		h := handler.New(benchConfig(), handler.NewConnector(base), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if _, err := h.Invoke(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

func benchConfig() handler.Config {
	cfg, err := handler.ConfigFromEnv(func(k string) string {
		return map[string]string{"CLUSTER_NAME": stack.ClusterName, "CLUSTER_REGION": stack.Region, "ROLE_SESSION_NAME": "bench"}[k]
	})
	if err != nil {
		panic(err)
	}
	return cfg
}

// BenchmarkApplyKubectl is `kubectl apply --server-side` of the same
// Deployment, the way the CDK handler and AWSQS types apply (without their
// per-call `aws eks update-kubeconfig` and token exec, which would add more).
func BenchmarkApplyKubectl(b *testing.B) {
	hh := mustHarness(b)
	manifest := filepath.Join(b.TempDir(), "nginx.yaml")
	const doc = `apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx, namespace: default, labels: {app.kubernetes.io/name: nginx, app.kubernetes.io/managed-by: lambda-eks}}
spec:
  replicas: 2
  selector: {matchLabels: {app.kubernetes.io/name: nginx}}
  template:
    metadata: {labels: {app.kubernetes.io/name: nginx}}
    spec: {containers: [{name: nginx, image: "nginx:1.27", ports: [{name: http, containerPort: 80}]}]}
`
	if err := os.WriteFile(manifest, []byte(doc), 0o600); err != nil {
		b.Fatal(err)
	}
	kubeconfig := hh.stack.Paths.AdminKubeconfig()
	env := []string{"KUBECONFIG=" + kubeconfig}
	for b.Loop() {
		cmd := exec.Command("kubectl", "apply", "--server-side", "--force-conflicts", "--field-manager", "lambda-eks", "-f", manifest)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("kubectl: %v: %s", err, out)
		}
	}
}

// BenchmarkColdInit is the bootstrap's init: from exec to its first request
// for an event (Go runtime, AWS config, everything main builds).
func BenchmarkColdInit(b *testing.B) {
	hh := mustHarness(b)
	_, env, _ := benchEnv(b)
	benchColdInit(b, hh.bootstrap, env, 128)
}

// benchColdInit times bootstrap's init, from exec to its first request for
// an event, in a Lambda-like environment: env and a runtime API that holds
// that request, nothing inherited from this machine (AWS_CA_BUNDLE, say,
// would add a CA bundle load to the init). It reports the RSS at that point.
func benchColdInit(b *testing.B, bootstrap string, env []string, memoryMB int) {
	next := make(chan struct{}, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case next <- struct{}{}:
		default:
		}
		<-r.Context().Done() // hold the request: no event comes
	}))
	defer api.Close()
	env = append(slices.Clip(env), "AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(api.URL, "http://"), "AWS_LAMBDA_FUNCTION_NAME=bench",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(memoryMB), "AWS_LAMBDA_LOG_FORMAT=JSON")
	for b.Loop() {
		cmd := exec.Command(bootstrap) //nolint:gosec // G204: the bootstraps under test
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-next:
		case <-time.After(10 * time.Second):
			b.Fatal("bootstrap never asked for an event")
		}
		b.StopTimer()
		if kib, err := peakRSS(cmd.Process.Pid); err == nil {
			b.ReportMetric(float64(kib)/1024, "init-RSS-MiB")
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.StartTimer()
	}
}

// BenchmarkInvokePeakRSS reports the bootstrap's peak resident memory after a
// cold and 50 warm ensure-nginx invocations, against the 128 MB function size.
func BenchmarkInvokePeakRSS(b *testing.B) {
	hh := mustHarness(b)
	for b.Loop() {
		fn := hh.startFunction(b, fnOptions{})
		for range 51 {
			mustSucceed(b, fn, `{"action":"ensure-nginx"}`)
		}
		kib, err := peakRSS(fn.PID())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(kib)/1024, "peak-RSS-MiB")
		fn.Stop()
	}
}

func peakRSS(pid int) (int, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
