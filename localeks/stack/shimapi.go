package stack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
)

// ErrShimOutdated is returned by the shim helpers when the running shim
// predates the endpoint (a stack started by an older localeks; Up with
// this build replaces it).
var ErrShimOutdated = errors.New("the replica's shim predates this endpoint")

// ShimHTTPClient is an HTTP client that reaches AWS through the shim, as
// the functions do (HTTPS_PROXY, trusting the shim's CA): for an AWS SDK
// client in a test that acts as a function would.
func (s *Stack) ShimHTTPClient() (*http.Client, error) {
	pem, err := os.ReadFile(s.Paths.ShimCA())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", s.Paths.ShimCA())
	}
	proxy, err := url.Parse(s.ShimURL())
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy),
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// RegisterLifecycleAction registers a pending lifecycle action at the
// shim, as the Auto Scaling group that sent an event with this detail
// would wait on it. It says whether the token was new (a known token is
// left as it is).
func (s *Stack) RegisterLifecycleAction(ctx context.Context, d shim.LifecycleDetail) (bool, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return false, err
	}
	status, body, err := s.shimDo(ctx, http.MethodPost, "/__lifecycle/actions", b)
	switch {
	case err != nil:
		return false, fmt.Errorf("register lifecycle action: %w", err)
	case status == http.StatusCreated:
		return true, nil
	case status == http.StatusOK:
		return false, nil
	case status == http.StatusNotFound:
		return false, fmt.Errorf("register lifecycle action: %w", ErrShimOutdated)
	}
	return false, fmt.Errorf("register lifecycle action: %d %s", status, bytes.TrimSpace(body))
}

// ForgetLifecycleAction forgets the shim's lifecycle action of token and
// the calls that named it, so that an event with that token (a sample) can
// be played afresh; other runs' actions are left alone.
func (s *Stack) ForgetLifecycleAction(ctx context.Context, token string) error {
	if token == "" {
		return errors.New("forget lifecycle action: no token")
	}
	status, body, err := s.shimDo(ctx, http.MethodPost, "/__lifecycle/reset?token="+url.QueryEscape(token), nil)
	switch {
	case err != nil:
		return fmt.Errorf("forget lifecycle action: %w", err)
	case status == http.StatusNotFound:
		return fmt.Errorf("forget lifecycle action: %w", ErrShimOutdated)
	case status != http.StatusNoContent:
		return fmt.Errorf("forget lifecycle action: %d %s", status, bytes.TrimSpace(body))
	}
	return nil
}

// Lifecycle returns the shim's lifecycle actions and the calls of
// CompleteLifecycleAction and RecordLifecycleActionHeartbeat.
func (s *Stack) Lifecycle(ctx context.Context) (shim.LifecycleRecord, error) {
	var rec shim.LifecycleRecord
	return rec, s.shimGet(ctx, "/__lifecycle", &rec)
}

// LambdaRecord returns the Invoke API endpoints registered at the shim and
// the Lambda Invoke calls it forwarded or refused.
func (s *Stack) LambdaRecord(ctx context.Context) (shim.LambdaRecord, error) {
	var rec shim.LambdaRecord
	return rec, s.shimGet(ctx, "/__lambda", &rec)
}

// RegisterInvokeAPI routes the Lambda Invoke calls the shim sees for the
// named functions (none: for every function without an endpoint of its
// own) to endpoint, e.g. an httptest server of lambdart.InvokeAPI, and
// returns what withdraws it.
//
// The latest registration for a function wins, and withdrawing it brings
// the previous one back; when several Invoke APIs serve the same function
// at once (tests side by side), RegisterInvokeAPIFrom routes each
// function's Invoke of itself to its own.
func (s *Stack) RegisterInvokeAPI(ctx context.Context, endpoint string, functions ...string) (func(), error) {
	return s.RegisterInvokeAPIFrom(ctx, endpoint, nil, functions...)
}

// RegisterInvokeAPIFrom is RegisterInvokeAPI for the calls signed with the
// given access key IDs only (those of the credentials the served function
// runs with): they reach endpoint whatever else is registered.
func (s *Stack) RegisterInvokeAPIFrom(ctx context.Context, endpoint string, accessKeyIDs []string, functions ...string) (func(), error) {
	b, err := json.Marshal(shim.LambdaRegistration{Endpoint: endpoint, Functions: functions, Callers: accessKeyIDs})
	if err != nil {
		return nil, err
	}
	status, body, err := s.shimDo(ctx, http.MethodPost, "/__lambda", b)
	switch {
	case err != nil:
		return nil, fmt.Errorf("register the Invoke API at the shim: %w", err)
	case status == http.StatusNotFound:
		return nil, fmt.Errorf("register the Invoke API at the shim: %w", ErrShimOutdated)
	case status != http.StatusNoContent:
		return nil, fmt.Errorf("register the Invoke API at the shim: %d %s", status, bytes.TrimSpace(body))
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _, _ = s.shimDo(ctx, http.MethodDelete, "/__lambda?endpoint="+url.QueryEscape(endpoint), nil)
	}, nil
}

func (s *Stack) shimGet(ctx context.Context, path string, out any) error {
	status, body, err := s.shimDo(ctx, http.MethodGet, path, nil)
	switch {
	case err != nil:
		return fmt.Errorf("GET %s: %w", path, err)
	case status == http.StatusNotFound:
		return fmt.Errorf("GET %s: %w", path, ErrShimOutdated)
	case status != http.StatusOK:
		return fmt.Errorf("GET %s: %d %s", path, status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// shimDo sends one request to the shim's own API.
func (s *Stack) shimDo(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.ShimURL()+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}
