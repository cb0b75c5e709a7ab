package helmrelease

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// An API server that answers every request with status: the release's
// Secrets cannot be read.
func refusingCluster(t *testing.T, status int) (invoke.Opener[*cluster], *atomic.Int32) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":%q,"code":%d,`+
			`"message":"User \"lambda:x\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""}`,
			strings.ReplaceAll(http.StatusText(status), " ", ""), status)
	}))
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	var opened atomic.Int32
	return func(_ context.Context, _ auth.Target) (*invoke.Conn[*cluster], error) {
		opened.Add(1)
		cfg, err := kube.NewRESTConfig(srv.URL, caPEM, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"}))
		if err != nil {
			return nil, err
		}
		c, err := newCluster(cfg)
		if err != nil {
			return nil, err
		}
		return &invoke.Conn[*cluster]{Client: c}, nil
	}, &opened
}

// The eviction rule is the framework's (invoke.Stale): a 401 that outlived
// a fresh token drops the connection, so the next invocation describes the
// cluster again; an RBAC refusal (403) keeps it.
func TestConnectionEviction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		code   invoke.Code
		opens  int32
	}{
		{http.StatusUnauthorized, invoke.Unauthorized, 2},
		{http.StatusForbidden, invoke.Forbidden, 1},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			open, opened := refusingCluster(t, tc.status)
			h := newTestHandler(open)
			req, err := Resolve(Event{Action: ActionStatus, Release: "web"}, testDefaults)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				_, err := h.Run(context.Background(), req)
				var e *invoke.Error
				if !errors.As(err, &e) || e.Code != tc.code {
					t.Fatalf("got %v, want %s", err, tc.code)
				}
				if tc.status == http.StatusUnauthorized && !apierrors.IsUnauthorized(err) {
					t.Errorf("the 401 is not in the chain of %v", err)
				}
			}
			if got := opened.Load(); got != tc.opens {
				t.Errorf("%d connections opened for two invocations, want %d", got, tc.opens)
			}
		})
	}
}

// The wrapping error types keep their causes for errors.Is and errors.As.
func TestErrorChains(t *testing.T) {
	t.Parallel()
	cause := apierrors.NewUnauthorized("Unauthorized")
	ref := ChartRef{OCI: "oci://r.example/charts/demo"}
	for _, err := range []error{
		&ReleaseError{Release: "web", Namespace: "default", Err: cause},
		&RepositoryError{Ref: ref, Err: cause},
		&ChartNotFoundError{Ref: ref, Problem: "no such tag", Err: cause},
	} {
		if !errors.Is(err, cause) || !apierrors.IsUnauthorized(err) {
			t.Errorf("%T loses its cause", err)
		}
	}
}
