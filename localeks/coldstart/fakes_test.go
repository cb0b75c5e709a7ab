package coldstart

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lambdaEnv is a Lambda-like environment: static credentials, no shared
// config, no instance metadata, nothing inherited from this machine (an
// AWS_CA_BUNDLE, say, would add a CA bundle load to every init).
func lambdaEnv(extra ...string) []string {
	return append([]string{"AWS_LAMBDA_FUNCTION_NAME=bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_LAMBDA_LOG_FORMAT=JSON", "AWS_REGION=us-east-1", "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1",
		"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"AWS_SESSION_TOKEN=token", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent",
		"CLUSTER_NAME=demo", "TZ=:UTC", "PATH=/usr/bin:/bin"}, extra...)
}

// Limits of a real API server that bound what a large event can cost
// the function: kube-apiserver refuses a request body over 3 MiB (413),
// etcd an object over 1.5 MiB.
const (
	maxRequestBody = 3 << 20
	maxObject      = 1536 << 10
)

// fakeCluster is a loopback EKS (DescribeCluster, plain HTTP, reached
// through AWS_ENDPOINT_URL) and a TLS Kubernetes API server that answers
// legacy discovery for ConfigMaps and Deployments, 404 to reads and a
// server-side apply with the object applied (JSON as the API server writes
// it: encoding/json, '<', '>' and '&' escaped), within the limits above.
type fakeCluster struct {
	eks, api *httptest.Server
}

func newFakeCluster(tb testing.TB) *fakeCluster {
	tb.Helper()
	api := httptest.NewTLSServer(http.HandlerFunc(serveAPI))
	tb.Cleanup(api.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	eks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"cluster":{"name":"demo","arn":"arn:aws:eks:us-east-1:123456789012:cluster/demo","status":"ACTIVE","endpoint":%q,"certificateAuthority":{"data":%q}}}`,
			api.URL, base64.StdEncoding.EncodeToString(ca))
	}))
	tb.Cleanup(eks.Close)
	return &fakeCluster{eks: eks, api: api}
}

// env is what the main bootstrap needs to reach the fake.
func (f *fakeCluster) env() []string { return []string{"AWS_ENDPOINT_URL=" + f.eks.URL} }

func serveAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	status := func(code int, reason, message string) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
			"code": code, "reason": reason, "message": message})
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api":
		_, _ = io.WriteString(w, `{"kind":"APIVersions","versions":["v1"]}`)
	case r.Method == http.MethodGet && r.URL.Path == "/apis":
		_, _ = io.WriteString(w, `{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"apps","versions":[{"groupVersion":"apps/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apps/v1","version":"v1"}}]}`)
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1":
		_, _ = io.WriteString(w, `{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","verbs":["get","patch"]}]}`)
	case r.Method == http.MethodGet && r.URL.Path == "/apis/apps/v1":
		_, _ = io.WriteString(w, `{"kind":"APIResourceList","groupVersion":"apps/v1","resources":[{"name":"deployments","singularName":"deployment","namespaced":true,"kind":"Deployment","verbs":["get","patch"]}]}`)
	case r.Method == http.MethodPatch:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
		if err != nil || len(body) > maxRequestBody {
			status(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "limit is "+strconv.Itoa(maxRequestBody))
			return
		}
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			status(http.StatusBadRequest, "BadRequest", "invalid JSON")
			return
		}
		md, _ := obj["metadata"].(map[string]any)
		if md == nil {
			md = map[string]any{}
			obj["metadata"] = md
		}
		parts := strings.Split(r.URL.Path, "/")
		md["name"], md["namespace"] = parts[len(parts)-1], "default"
		md["uid"], md["resourceVersion"], md["generation"] = "uid-1", "1", 1
		md["managedFields"] = []any{map[string]any{"manager": "lambda-eks", "operation": "Apply", "apiVersion": obj["apiVersion"],
			"time": time.Now().UTC().Format(time.RFC3339), "fieldsType": "FieldsV1", "fieldsV1": map[string]any{}}}
		// etcd keeps it unescaped; the answer escapes as the API server's
		// encoding/json does.
		var stored bytes.Buffer
		enc := json.NewEncoder(&stored)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(obj); err != nil || stored.Len() > maxObject {
			status(http.StatusInternalServerError, "InternalError", "etcdserver: request is too large")
			return
		}
		_ = json.NewEncoder(w).Encode(obj)
	default:
		status(http.StatusNotFound, "NotFound", "not found")
	}
}
