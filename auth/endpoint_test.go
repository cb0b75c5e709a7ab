package auth

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/google/go-cmp/cmp"
)

// silentListener accepts connections and never answers: a frozen endpoint
// or proxy.
func silentListener(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				<-done
				return
			}
			held = append(held, c)
		}
	}()
	tb.Cleanup(func() { _ = ln.Close(); close(done) })
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// describeBody is a DescribeCluster answer for cluster demo.
const describeBody = `{"cluster":{"name":"demo","status":"ACTIVE","endpoint":"https://x","certificateAuthority":{"data":"Q0EgREFUQQ=="}}}`

// TestAWSEndpointFaults loads the function's AWS configuration and calls
// DescribeCluster against endpoints that do not answer, refuse, or answer
// slowly: one that does not answer is an *EndpointError naming it, before
// the caller's deadline (30 s, the template's default timeout); a slow one
// that answers succeeds; the caller's own deadline stays the caller's.
func TestAWSEndpointFaults(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(2 * time.Second)
		_, _ = w.Write([]byte(describeBody))
	}))
	t.Cleanup(slow.Close)
	var firstSilent atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if firstSilent.Add(1) == 1 {
			<-r.Context().Done() // the first attempt gets no answer
			return
		}
		_, _ = w.Write([]byte(describeBody))
	}))
	t.Cleanup(flaky.Close)
	silent := "http://" + silentListener(t)
	refused := "http://" + closedPort(t)
	// Through a proxy that never answers CONNECT, to an https endpoint on
	// loopback (nothing leaves the machine even if the proxy were skipped).
	silentProxy := &url.URL{Scheme: "http", Host: silentListener(t)}
	const behindProxy = "https://127.0.0.2:9"

	tests := []struct {
		name     string
		endpoint string
		proxy    *url.URL
		deadline time.Duration // of the caller
		want     *EndpointError
		wantErr  error // when want is nil: nil or the error errors.Is finds
	}{
		{"endpoint accepts and never answers", silent, nil, 30 * time.Second, &EndpointError{Service: "EKS", Endpoint: silent}, nil},
		{"endpoint refuses connections", refused, nil, 30 * time.Second, &EndpointError{Service: "EKS", Endpoint: refused}, nil},
		{"proxy never answers CONNECT", behindProxy, silentProxy, 30 * time.Second, &EndpointError{Service: "EKS", Endpoint: behindProxy}, nil},
		{"slow endpoint answers in 2 s", slow.URL, nil, 30 * time.Second, nil, nil},
		{"first attempt unanswered, second answers", flaky.URL, nil, 30 * time.Second, nil, nil},
		{"caller's deadline first", silent, nil, time.Second, nil, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), tt.deadline)
			defer cancel()
			opts := []func(*config.LoadOptions) error{
				config.WithRegion("us-east-1"),
				config.WithCredentialsProvider(staticCreds),
				config.WithBaseEndpoint(tt.endpoint),
			}
			if tt.proxy != nil {
				opts = append(opts, config.WithHTTPClient(newHTTPClient().WithTransportOptions(func(tr *http.Transport) {
					tr.Proxy = http.ProxyURL(tt.proxy)
				})))
			}
			cfg, err := LoadConfig(ctx, opts...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DescribeCluster(ctx, cfg, "demo")
			t.Logf("err: %v", err)
			if ctx.Err() != nil && tt.wantErr == nil {
				t.Errorf("the caller's deadline came first: %v", err)
			}
			var got *EndpointError
			if !errors.As(err, &got) {
				got = nil
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b *EndpointError) bool {
				return (a == nil) == (b == nil) && (a == nil || a.Service == b.Service && a.Endpoint == b.Endpoint)
			})); diff != "" {
				t.Errorf("endpoint error (-want +got):\n%s\nerr: %v", diff, err)
			}
			if tt.want == nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestRegionalEndpoint(t *testing.T) {
	if got, want := regionalEndpoint(aws.Config{Region: "eu-south-2"}, "sts"), "https://sts.eu-south-2.amazonaws.com"; got != want {
		t.Errorf("regionalEndpoint = %s, want %s", got, want)
	}
}

func TestAsEndpointError(t *testing.T) {
	ctx := context.Background()
	cfg, err := LoadConfig(ctx, config.WithRegion("us-east-1"), config.WithCredentialsProvider(staticCreds),
		config.WithBaseEndpoint("http://"+closedPort(t)), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	_, callErr := CallerARN(ctx, cfg) // already an *EndpointError; the raw SDK error below is not
	var want *EndpointError
	if !errors.As(callErr, &want) {
		t.Fatalf("CallerARN: %v, want an *EndpointError", callErr)
	}
	var got *EndpointError
	if !errors.As(AsEndpointError(ctx, errors.Unwrap(want)), &got) || got.Service != "STS" || got.Endpoint != want.Endpoint {
		t.Errorf("AsEndpointError(%v) = %v, want STS at %s", want.Err, got, want.Endpoint)
	}
	if err := AsEndpointError(ctx, context.Canceled); !errors.Is(err, context.Canceled) || errors.As(err, &got) {
		t.Errorf("AsEndpointError(context.Canceled) = %v, want it unchanged", err)
	}
}
