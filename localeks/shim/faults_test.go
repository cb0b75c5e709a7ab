package shim

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	execAuth = "AWS4-HMAC-SHA256 Credential=ASIAEXEC/20261122/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=x"
	// presignedQuery is a token's presigned GetCallerIdentity, as the
	// authenticator replays it.
	presignedQuery = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256" +
		"&X-Amz-Credential=ASIAEXEC%2F20261122%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20261122T120000Z" +
		"&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=abc123"
)

func setFaults(t *testing.T, proxy string, f string) *http.Response {
	t.Helper()
	direct := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := direct.Post(proxy+"/__faults", "application/json", strings.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

// TestFaults: each fault holds or refuses the requests of its service only;
// a frozen STS still answers the authenticator's presigned replays, except
// when the CONNECT itself is frozen.
func TestFaults(t *testing.T) {
	tests := []struct {
		name, faults string
		// what a client gets for: an SDK's STS call, an SDK's EKS call, a
		// presigned STS replay. "ok", "timeout" or "error".
		want [3]string
	}{
		{"none", `{}`, [3]string{"ok", "ok", "ok"}},
		{"sts frozen", `{"sts":"freeze"}`, [3]string{"timeout", "ok", "ok"}},
		{"sts closed", `{"sts":"close"}`, [3]string{"error", "ok", "ok"}},
		{"sts connect frozen", `{"sts":"freeze-connect"}`, [3]string{"timeout", "ok", "timeout"}},
		{"eks frozen", `{"eks":"freeze"}`, [3]string{"ok", "timeout", "ok"}},
		{"eks closed", `{"eks":"close"}`, [3]string{"ok", "error", "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reached atomic.Int32
			_, client, proxy := startShim(t, func(w http.ResponseWriter, r *http.Request) {
				reached.Add(1)
				_, _ = io.WriteString(w, "{}")
			})
			client.Timeout = 500 * time.Millisecond
			if resp := setFaults(t, proxy, tt.faults); resp.StatusCode != http.StatusNoContent {
				t.Fatalf("POST /__faults %s: %s", tt.faults, resp.Status)
			}
			requests := []*http.Request{
				mustRequest(t, http.MethodPost, "https://sts.us-east-1.amazonaws.com/", "Action=GetCallerIdentity&Version=2011-06-15", execAuth),
				mustRequest(t, http.MethodGet, "https://eks.us-east-1.amazonaws.com/clusters/demo", "", strings.ReplaceAll(execAuth, "/sts/", "/eks/")),
				mustRequest(t, http.MethodGet, "https://sts.us-east-1.amazonaws.com/?"+presignedQuery, "", ""),
			}
			var got [3]string
			wantReached := int32(0)
			for i, req := range requests {
				resp, err := client.Do(req)
				var uerr *url.Error
				switch {
				case err == nil:
					_ = resp.Body.Close()
					got[i] = "ok"
					wantReached++
				case errors.As(err, &uerr) && uerr.Timeout():
					got[i] = "timeout"
				default:
					got[i] = "error"
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("outcomes for sts, eks, presigned sts (-want +got):\n%s", diff)
			}
			if n := reached.Load(); n != wantReached {
				t.Errorf("moto reached %d times, want %d (only by requests that succeeded)", n, wantReached)
			}
		})
	}
}

func mustRequest(t *testing.T, method, target, body, authorization string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return req
}

func TestFaultsRefusesUnknownMode(t *testing.T) {
	srv, _, proxy := startShim(t, func(http.ResponseWriter, *http.Request) {})
	for _, body := range []string{`{"sts":"melt"}`, `{"s3":"freeze"}`, `not json`} {
		if resp := setFaults(t, proxy, body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST /__faults %s: %s, want 400", body, resp.Status)
		}
	}
	if diff := cmp.Diff(Faults{}, srv.Faults()); diff != "" {
		t.Errorf("faults after refused switches (-want +got):\n%s", diff)
	}
}

// TestExternalIDCondition: the shim enforces the sts:ExternalId condition
// moto ignores, answering AccessDenied as STS does, naming the caller that
// moto knows for the signing key and the role.
func TestExternalIDCondition(t *testing.T) {
	const role = "arn:aws:iam::210987654321:role/eks-ops"
	var assumed atomic.Int32
	_, client, proxy := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		switch r.PostForm.Get("Action") {
		case "GetCallerIdentity":
			if r.Header.Get("Authorization") != execAuth {
				t.Errorf("caller lookup without the caller's signature: %q", r.Header.Get("Authorization"))
			}
			_, _ = io.WriteString(w, `<GetCallerIdentityResponse><GetCallerIdentityResult>`+
				`<Arn>arn:aws:sts::123456789012:assumed-role/lambda-eks-exec/fn</Arn></GetCallerIdentityResult></GetCallerIdentityResponse>`)
		case "AssumeRole":
			assumed.Add(1)
			_, _ = io.WriteString(w, "<AssumeRoleResponse/>")
		}
	})
	if resp := setFaults(t, proxy, `{"externalIds":{"`+role+`":"choose-one"}}`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /__faults: %s", resp.Status)
	}
	tests := []struct {
		name, externalID string
		wantStatus       int
	}{
		{"matching", "choose-one", http.StatusOK},
		{"wrong", "guess", http.StatusForbidden},
		{"missing", "", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"}, "RoleArn": {role}, "RoleSessionName": {"s"}}
			if tt.externalID != "" {
				form.Set("ExternalId", tt.externalID)
			}
			before := assumed.Load()
			resp, err := client.Do(mustRequest(t, http.MethodPost, "https://sts.us-east-1.amazonaws.com/", form.Encode(), execAuth))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %s, want %d: %s", resp.Status, tt.wantStatus, body)
			}
			if tt.wantStatus == http.StatusOK {
				if assumed.Load() != before+1 {
					t.Error("a matching external ID did not reach moto")
				}
				return
			}
			if assumed.Load() != before {
				t.Error("a refused AssumeRole reached moto")
			}
			for _, want := range []string{"<Code>AccessDenied</Code>",
				"User: arn:aws:sts::123456789012:assumed-role/lambda-eks-exec/fn is not authorized to perform: sts:AssumeRole on resource: " + role} {
				if !strings.Contains(string(body), want) {
					t.Errorf("answer %s lacks %q", body, want)
				}
			}
		})
	}
}

// TestDescribeClusterRewriteAnyAccount: the rewrite goes by cluster name, so
// a cluster of another account (described with that account's credentials)
// points at the local apiserver too.
func TestDescribeClusterRewriteAnyAccount(t *testing.T) {
	_, client, _ := startShim(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"cluster": map[string]any{
			"name": "demo", "arn": "arn:aws:eks:us-east-1:210987654321:cluster/demo", "status": "ACTIVE",
			"endpoint": "https://random.moto.example", "certificateAuthority": map[string]any{"data": "bW90bw=="},
		}})
	})
	resp, err := client.Do(mustRequest(t, http.MethodGet, "https://eks.us-east-1.amazonaws.com/clusters/demo", "",
		"AWS4-HMAC-SHA256 Credential=ASIATARGET/20261122/us-east-1/eks/aws4_request, SignedHeaders=host, Signature=x"))
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Cluster map[string]any `json:"cluster"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "demo", "arn": "arn:aws:eks:us-east-1:210987654321:cluster/demo", "status": "ACTIVE",
		"endpoint": "https://127.0.0.1:6443", "certificateAuthority": map[string]any{"data": "TE9DQUw="}}
	if diff := cmp.Diff(want, body.Cluster); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
}
