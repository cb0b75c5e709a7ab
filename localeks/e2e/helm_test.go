package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/registry"
	rspb "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// The Helm function (cmd/helm, its own bootstrap) end to end: a chart from
// a loopback https chart repository and the same chart from a real OCI
// registry (CNCF distribution, TLS and basic auth, built by
// parts/registry/build.sh), installed, upgraded, rolled back and
// uninstalled through the bootstrap under aws-lambda-rie, each step checked
// with the admin client and with the Helm SDK (history, status) as a person
// running helm would see it.

const (
	// helmRole is the Helm function's own execution role, mapped to
	// helmGroup, which permissions.yml's Role lambda-eks-helm is bound to.
	helmRole  = "lambda-eks-helm-exec"
	helmGroup = "lambda-eks-helm"
	// registryUser and registryPassword are REGISTRY_CREDENTIALS' entry.
	registryUser     = "helm"
	registryPassword = "e2e-registry-password"
	// ecrPassword is what moto's ecr:GetAuthorizationToken answers for the
	// account (AWS:<account>-auth-token).
	ecrPassword = stack.Account + "-auth-token"
)

// helmFixture is what the Helm tests share: the built bootstrap, a CA the
// function trusts, the chart repository and the registry.
type helmFixture struct {
	bootstrap string
	parts     string
	dir       string
	caBundle  string // the shim's CA and the fixture's
	caFile    string // the fixture's CA alone
	repoURL   string // https://127.0.0.1:PORT/charts
	registry  string // 127.0.0.1:PORT
	charts    map[string][]byte
	tlsConfig *tls.Config // trusts the fixture's CA
}

var (
	helmOnce sync.Once
	helmFix  *helmFixture
	helmErr  error
)

func mustHelm(tb testing.TB) (*harness, *helmFixture) {
	tb.Helper()
	h := mustHarness(tb)
	helmOnce.Do(func() { helmFix, helmErr = setupHelm(h) })
	if helmErr != nil {
		tb.Fatalf("helm fixture: %v", helmErr)
	}
	return h, helmFix
}

func setupHelm(h *harness) (*helmFixture, error) {
	ctx := context.Background()
	f := &helmFixture{charts: map[string][]byte{}}
	var err error
	// Inside the harness's own temporary directory, which TestMain removes.
	if f.dir, err = os.MkdirTemp(filepath.Dir(h.bootstrap), "helm-"); err != nil {
		return nil, err
	}
	start := time.Now()
	if f.parts, err = output(h.root, nil, filepath.Join(h.root, "localeks", "parts", "registry", "build.sh"), "registry"); err != nil {
		return nil, fmt.Errorf("build the registry: %w", err)
	}
	fmt.Fprintf(os.Stderr, "e2e: helm parts in %s (%s)\n", f.parts, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	f.bootstrap = filepath.Join(f.dir, "bootstrap")
	if prebuilt := os.Getenv("LOCALEKS_HELM_BOOTSTRAP"); prebuilt != "" {
		f.bootstrap = prebuilt
	} else if _, err := output(h.root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH, "GOWORK=off"},
		"go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags", "-s -w", "-o", f.bootstrap, "./cmd/helm"); err != nil {
		return nil, fmt.Errorf("build the helm function: %w", err)
	}
	fmt.Fprintf(os.Stderr, "e2e: built helm bootstrap (%s)\n", time.Since(start).Round(time.Millisecond))

	// A CA of the fixture's own; the function trusts it and the shim's.
	ca, caKey, caPEM, err := newTestCA()
	if err != nil {
		return nil, err
	}
	f.caFile = filepath.Join(f.dir, "ca.pem")
	if err := os.WriteFile(f.caFile, caPEM, 0o600); err != nil {
		return nil, err
	}
	shimCA, err := os.ReadFile(h.stack.Paths.ShimCA())
	if err != nil {
		return nil, err
	}
	f.caBundle = filepath.Join(f.dir, "bundle.pem")
	if err := os.WriteFile(f.caBundle, append(append(shimCA, '\n'), caPEM...), 0o600); err != nil {
		return nil, err
	}
	leaf, certPEM, keyPEM, err := newLeaf(ca, caKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	f.tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	// The charts: the replica's demo chart, two versions.
	for _, v := range stack.DemoChartVersions {
		if f.charts[v], err = stack.DemoChartArchive(v); err != nil {
			return nil, err
		}
	}

	// The https chart repository.
	index, err := stack.ChartIndex(f.charts)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /charts/index.yaml", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(index) })
	mux.HandleFunc("GET /charts/{file}", func(w http.ResponseWriter, r *http.Request) {
		for v, data := range f.charts {
			if r.PathValue("file") == "demo-"+v+".tgz" {
				_, _ = w.Write(data)
				return
			}
		}
		http.NotFound(w, r)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	f.repoURL = srv.URL + "/charts"

	// The OCI registry, with TLS and basic auth (htpasswd: the static user
	// and the user ECR tokens name).
	certFile, keyFile := filepath.Join(f.dir, "registry.pem"), filepath.Join(f.dir, "registry-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	var htpasswd bytes.Buffer
	for _, u := range [][2]string{{registryUser, registryPassword}, {"AWS", ecrPassword}} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&htpasswd, "%s:%s\n", u[0], hash)
	}
	htpasswdFile := filepath.Join(f.dir, "htpasswd")
	if err := os.WriteFile(htpasswdFile, htpasswd.Bytes(), 0o600); err != nil {
		return nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	f.registry = "127.0.0.1:" + strconv.Itoa(port)
	config := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
http: {addr: %q, secret: e2e-secret, tls: {certificate: %q, key: %q}}
auth: {htpasswd: {realm: lambda-eks-e2e, path: %q}}
`, filepath.Join(f.dir, "registry-data"), f.registry, certFile, keyFile, htpasswdFile)
	configFile := filepath.Join(f.dir, "registry.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(f.dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(f.parts, "registry"), "serve", configFile) //nolint:gosec // G204: the part built above
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true"}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start registry: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsConfig, Proxy: nil}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("https://" + f.registry + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
			err = fmt.Errorf("/v2/ answered %s, want 401", resp.Status)
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("registry did not answer on %s: %w\n%s", f.registry, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rc, err := registry.NewClient(registry.ClientOptHTTPClient(hc), registry.ClientOptBasicAuth(registryUser, registryPassword),
		registry.ClientOptCredentialsFile(filepath.Join(f.dir, "no-credentials.json")))
	if err != nil {
		return nil, err
	}
	for v, data := range f.charts {
		if _, err := rc.Push(data, f.registry+"/charts/demo:"+v); err != nil {
			return nil, fmt.Errorf("push demo %s: %w", v, err)
		}
	}
	if err := mapHelmRole(ctx, h); err != nil {
		return nil, err
	}
	return f, nil
}

// mapHelmRole creates the Helm function's role in moto and merges its
// aws-auth entry (group lambda-eks-helm), keeping every other entry, and
// waits until the authenticator maps the role.
func mapHelmRole(ctx context.Context, h *harness) error {
	cfg := aws.Config{
		Region:      stack.Region,
		Credentials: credentials.NewStaticCredentialsProvider("AKIALOCALEKSADMIN000", "localeks", ""),
		HTTPClient:  &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second},
	}
	_, err := iam.NewFromConfig(cfg, func(o *iam.Options) {
		o.BaseEndpoint = aws.String("http://127.0.0.1:" + strconv.Itoa(h.stack.Ports.Moto))
	}).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(helmRole),
		AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}`)})
	var exists *iamtypes.EntityAlreadyExistsException
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("create role %s: %w", helmRole, err)
	}
	cms := h.admin.CoreV1().ConfigMaps("kube-system")
	for try := 0; ; try++ {
		cm, err := cms.Get(ctx, "aws-auth", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get aws-auth: %w", err)
		}
		var roles []map[string]any
		if err := yaml.Unmarshal([]byte(cm.Data["mapRoles"]), &roles); err != nil {
			return err
		}
		arn := stack.RoleARN(helmRole)
		if slices.ContainsFunc(roles, func(r map[string]any) bool { return r["rolearn"] == arn }) {
			return h.waitMapped(ctx, arn, helmGroup)
		}
		roles = append(roles, map[string]any{"rolearn": arn, "username": "lambda:{{SessionName}}", "groups": []any{helmGroup}})
		out, err := yaml.Marshal(roles)
		if err != nil {
			return err
		}
		cm.Data["mapRoles"] = string(out)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "e2e-helm"})
		if err == nil {
			return h.waitMapped(ctx, arn, helmGroup)
		}
		if !apierrors.IsConflict(err) || try > 5 {
			return fmt.Errorf("update aws-auth: %w", err)
		}
	}
}

// helmNamespace creates a fresh namespace and applies the project's
// permissions.yml into it, as a user would for a namespace the functions
// manage.
func (h *harness) helmNamespace(tb testing.TB, prefix string) string {
	tb.Helper()
	ns := prefix + "-" + randomHex(3)
	h.mustNamespace(tb, ns)
	cmd := exec.Command("kubectl", "--kubeconfig", h.stack.Paths.AdminKubeconfig(), "apply", "-n", ns, //nolint:gosec // G204
		"-f", filepath.Join(h.root, "permissions.yml"))
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("kubectl apply permissions.yml in %s: %v\n%s", ns, err, out)
	}
	tb.Cleanup(func() {
		_ = h.admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return ns
}

// startHelm starts the Helm bootstrap as a fresh execution environment of
// the Helm role; env adds to (and overrides) the replica's function env.
func (h *harness) startHelm(tb testing.TB, f *helmFixture, timeout time.Duration, env ...string) *lambdart.Function {
	tb.Helper()
	ctx := context.Background()
	session := "e2e-helm-" + randomHex(4)
	creds, err := h.stack.AssumeRole(ctx, helmRole, session)
	if err != nil {
		tb.Fatalf("assume role: %v", err)
	}
	all := append(h.stack.FunctionEnv(creds), "SSL_CERT_FILE="+f.caBundle)
	all = append(all, env...)
	fn, err := lambdart.Start(ctx, f.bootstrap, all, timeout, lambdart.WithName("lambda-eks-helm"), lambdart.WithMemory(512))
	if err != nil {
		tb.Fatalf("start helm function: %v", err)
	}
	tb.Cleanup(func() {
		fn.Stop()
		logs := fn.Logs()
		for _, secret := range []string{"k8s-aws-v1.", "X-Amz-Signature", creds.SecretAccessKey, creds.SessionToken, registryPassword, ecrPassword} {
			if bytes.Contains(logs, []byte(secret)) {
				tb.Errorf("helm function logs contain a secret (%.12s...)", secret)
			}
		}
		if tb.Failed() {
			tb.Logf("helm function logs:\n%s", logs)
		}
	})
	return fn
}

// helmResult is the Helm function's response; decoded strictly.
type helmResult struct {
	Cluster      string `json:"cluster"`
	Action       string `json:"action"`
	Release      string `json:"release"`
	Namespace    string `json:"namespace"`
	Revision     int    `json:"revision"`
	Status       string `json:"status"`
	Chart        string `json:"chart"`
	ChartVersion string `json:"chartVersion"`
	AppVersion   string `json:"appVersion"`
	Description  string `json:"description"`
	Updated      string `json:"updated"`
	DryRun       bool   `json:"dryRun"`
	Manifest     string `json:"manifest"`
	Notes        string `json:"notes"`
	Recovered    string `json:"recovered"`
	History      []struct {
		Revision     int    `json:"revision"`
		Status       string `json:"status"`
		ChartVersion string `json:"chartVersion"`
		Updated      string `json:"updated"`
		Description  string `json:"description"`
	} `json:"history"`
}

func helmInvoke(tb testing.TB, fn *lambdart.Function, ev map[string]any) (helmResult, *lambdart.FunctionError) {
	tb.Helper()
	payload, err := json.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	out, fnErr, err := fn.Invoke(context.Background(), payload)
	if err != nil {
		tb.Fatalf("invoke %s: %v", payload, err)
	}
	if fnErr != nil {
		return helmResult{}, fnErr
	}
	var r helmResult
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("response %s does not match the contract: %v", out, err)
	}
	return r, nil
}

func helmOK(tb testing.TB, fn *lambdart.Function, ev map[string]any) helmResult {
	tb.Helper()
	r, fnErr := helmInvoke(tb, fn, ev)
	if fnErr != nil {
		tb.Fatalf("%v: function error %s: %s", ev, fnErr.Type, fnErr.Message)
	}
	return r
}

func helmFail(tb testing.TB, fn *lambdart.Function, ev map[string]any, errorType string) *lambdart.FunctionError {
	tb.Helper()
	r, fnErr := helmInvoke(tb, fn, ev)
	if fnErr == nil {
		tb.Fatalf("%v: got %+v, want errorType %s", ev, r, errorType)
	}
	if fnErr.Type != errorType {
		tb.Fatalf("%v: errorType %s (%s), want %s", ev, fnErr.Type, fnErr.Message, errorType)
	}
	return fnErr
}

// sdk is the Helm SDK as a person's helm sees the namespace: admin
// credentials, the Secrets driver.
func (h *harness) sdk(tb testing.TB, ns string) *action.Configuration {
	tb.Helper()
	kubeconfig := h.stack.Paths.AdminKubeconfig()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kubeconfig, &ns
	cfg := action.NewConfiguration()
	if err := cfg.Init(flags, ns, "secret"); err != nil {
		tb.Fatalf("helm sdk: %v", err)
	}
	return cfg
}

// revision is one release revision as helm history shows it.
type revision struct {
	Revision     int
	Status       string
	ChartVersion string
}

// helmHistory is `helm history` through the SDK, oldest first; nil when
// the release does not exist.
func (h *harness) helmHistory(tb testing.TB, ns, release string) []revision {
	tb.Helper()
	hs, err := action.NewHistory(h.sdk(tb, ns)).Run(release)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatalf("helm history %s: %v", release, err)
	}
	var out []revision
	for _, r := range hs {
		rel, ok := r.(*rspb.Release)
		if !ok {
			tb.Fatalf("release of type %T", r)
		}
		out = append(out, revision{rel.Version, rel.Info.Status.String(), rel.Chart.Metadata.Version})
	}
	slices.SortFunc(out, func(a, b revision) int { return a.Revision - b.Revision })
	return out
}

// helmStatus is `helm status` through the SDK.
func (h *harness) helmStatus(tb testing.TB, ns, release string) *rspb.Release {
	tb.Helper()
	r, err := action.NewStatus(h.sdk(tb, ns)).Run(release)
	if err != nil {
		tb.Fatalf("helm status %s: %v", release, err)
	}
	rel, ok := r.(*rspb.Release)
	if !ok {
		tb.Fatalf("release of type %T", r)
	}
	return rel
}

// configMessage is data.message of the release's ConfigMap, or "" if absent.
func (h *harness) configMessage(tb testing.TB, ns, release string) string {
	tb.Helper()
	cm, err := h.admin.CoreV1().ConfigMaps(ns).Get(context.Background(), release+"-config", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		tb.Fatalf("get configmap: %v", err)
	}
	return cm.Data["message"] + "@" + cm.Data["chartVersion"]
}

// The lifecycle, from each kind of source.
func TestHelmLifecycle(t *testing.T) {
	h, f := mustHelm(t)
	for _, tc := range []struct {
		name  string
		env   []string
		chart func(version string) map[string]any
	}{
		{"https repository", nil, func(v string) map[string]any {
			return map[string]any{"chart": "demo", "repository": f.repoURL, "version": v}
		}},
		{"oci registry with basic auth", []string{`REGISTRY_CREDENTIALS={"` + f.registry + `":"` + registryUser + ":" + registryPassword + `"}`},
			func(v string) map[string]any {
				return map[string]any{"chart": "demo", "repository": "oci://" + f.registry + "/charts", "version": v}
			}},
		{"oci registry with an ECR token", []string{"ECR_REGISTRIES=" + f.registry}, func(v string) map[string]any {
			return map[string]any{"chart": "oci://" + f.registry + "/charts/demo", "version": v}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := h.helmNamespace(t, "helm")
			fn := h.startHelm(t, f, 60*time.Second, tc.env...)
			rel := "web"
			ev := func(action string, fields map[string]any) map[string]any {
				e := map[string]any{"action": action, "release": rel, "namespace": ns}
				for k, v := range fields {
					e[k] = v
				}
				return e
			}
			with := func(m map[string]any, kv ...any) map[string]any {
				for i := 0; i < len(kv); i += 2 {
					m[kv[i].(string)] = kv[i+1]
				}
				return m
			}

			// install
			r := helmOK(t, fn, ev("helm-upgrade", with(tc.chart("0.1.0"), "values", map[string]any{"message": "one"}, "wait", true)))
			if r.Revision != 1 || r.Status != "deployed" || r.ChartVersion != "0.1.0" {
				t.Fatalf("install: %+v", r)
			}
			if got := h.configMessage(t, ns, rel); got != "one@0.1.0" {
				t.Errorf("after install the ConfigMap says %q", got)
			}
			if diff := cmp.Diff([]revision{{1, "deployed", "0.1.0"}}, h.helmHistory(t, ns, rel)); diff != "" {
				t.Errorf("history after install (-want +got):\n%s", diff)
			}

			// upgrade with changed values (and chart version)
			r = helmOK(t, fn, ev("helm-upgrade", with(tc.chart("0.2.0"), "values", map[string]any{"message": "two", "replicaCount": 2}, "wait", "30s")))
			if r.Revision != 2 || r.Status != "deployed" || r.ChartVersion != "0.2.0" {
				t.Fatalf("upgrade: %+v", r)
			}
			if got := h.configMessage(t, ns, rel); got != "two@0.2.0" {
				t.Errorf("after upgrade the ConfigMap says %q", got)
			}
			d, err := h.admin.AppsV1().Deployments(ns).Get(context.Background(), rel, metav1.GetOptions{})
			if err != nil || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 || d.Status.ReadyReplicas != 2 {
				t.Errorf("after a waited upgrade to 2 replicas: %v %+v", err, d.Status)
			}
			if diff := cmp.Diff([]revision{{1, "superseded", "0.1.0"}, {2, "deployed", "0.2.0"}}, h.helmHistory(t, ns, rel)); diff != "" {
				t.Errorf("history after upgrade (-want +got):\n%s", diff)
			}
			if got := h.helmStatus(t, ns, rel).Config; !cmp.Equal(got, map[string]any{"message": "two", "replicaCount": float64(2)}) {
				t.Errorf("helm get values: %v", got)
			}

			// rollback to the revision before
			r = helmOK(t, fn, ev("helm-rollback", map[string]any{"wait": true}))
			if r.Revision != 3 || r.Status != "deployed" || r.ChartVersion != "0.1.0" {
				t.Fatalf("rollback: %+v", r)
			}
			if got := h.configMessage(t, ns, rel); got != "one@0.1.0" {
				t.Errorf("after rollback the ConfigMap says %q", got)
			}
			want := []revision{{1, "superseded", "0.1.0"}, {2, "superseded", "0.2.0"}, {3, "deployed", "0.1.0"}}
			if diff := cmp.Diff(want, h.helmHistory(t, ns, rel)); diff != "" {
				t.Errorf("history after rollback (-want +got):\n%s", diff)
			}

			// status: the function's view agrees with helm's
			r = helmOK(t, fn, ev("helm-status", nil))
			if r.Revision != 3 || r.Status != "deployed" || len(r.History) != 3 || r.History[0].Revision != 3 || r.History[2].Status != "superseded" {
				t.Errorf("status: %+v", r)
			}

			// uninstall, twice
			r = helmOK(t, fn, ev("helm-uninstall", map[string]any{"wait": true}))
			if r.Status != "uninstalled" {
				t.Errorf("uninstall: %+v", r)
			}
			if got := h.configMessage(t, ns, rel); got != "" {
				t.Errorf("after uninstall the ConfigMap is still there: %q", got)
			}
			if _, err := h.admin.AppsV1().Deployments(ns).Get(context.Background(), rel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("after uninstall the Deployment: %v", err)
			}
			if got := h.helmHistory(t, ns, rel); got != nil {
				t.Errorf("history after uninstall: %v", got)
			}
			if r := helmOK(t, fn, ev("helm-uninstall", nil)); r.Status != "absent" {
				t.Errorf("second uninstall: %+v", r)
			}
			_ = helmFail(t, fn, ev("helm-status", nil), "NotFound")
		})
	}
}

// A wait that outlasts the invocation ends with the revision failed (not
// pending) and a Timeout error; the next upgrade succeeds.
func TestHelmWaitPastDeadline(t *testing.T) {
	h, f := mustHelm(t)
	ns := h.helmNamespace(t, "helm-wait")
	fn := h.startHelm(t, f, 15*time.Second)
	base := map[string]any{"action": "helm-upgrade", "release": "stuck", "namespace": ns, "chart": "demo", "repository": f.repoURL, "version": "0.1.0"}
	ev := func(kv ...any) map[string]any {
		e := map[string]any{}
		for k, v := range base {
			e[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			e[kv[i].(string)] = kv[i+1]
		}
		return e
	}
	helmOK(t, fn, ev("values", map[string]any{"message": "ready"}, "wait", true))
	start := time.Now()
	fnErr := helmFail(t, fn, ev("values", map[string]any{"message": "never", "neverReady": true}, "wait", true), "Timeout")
	took := time.Since(start)
	for _, want := range []string{"revision 2", "failed"} {
		if !strings.Contains(fnErr.Message, want) {
			t.Errorf("message %q does not say %q", fnErr.Message, want)
		}
	}
	if took > 15*time.Second {
		t.Errorf("the failed invocation took %s, longer than the function's timeout", took)
	}
	// As helm leaves it after a failed upgrade: the last good revision
	// stays deployed, the new one is failed, nothing is pending.
	if diff := cmp.Diff([]revision{{1, "deployed", "0.1.0"}, {2, "failed", "0.1.0"}}, h.helmHistory(t, ns, "stuck")); diff != "" {
		t.Errorf("history after the wait past the deadline (-want +got):\n%s", diff)
	}
	r := helmOK(t, fn, ev("values", map[string]any{"message": "ready again"}, "wait", true))
	if r.Revision != 3 || r.Status != "deployed" {
		t.Errorf("the next upgrade: %+v", r)
	}
	if got := h.configMessage(t, ns, "stuck"); got != "ready again@0.1.0" {
		t.Errorf("ConfigMap says %q", got)
	}

	// atomic: the failed upgrade is rolled back within the invocation.
	fnErr = helmFail(t, fn, ev("values", map[string]any{"message": "never", "neverReady": true}, "wait", true, "atomic", true), "Timeout")
	if !strings.Contains(fnErr.Message, "rolled back to revision 3") {
		t.Errorf("atomic: %q", fnErr.Message)
	}
	hist := h.helmHistory(t, ns, "stuck")
	if last := hist[len(hist)-1]; last.Status != "deployed" || last.Revision != 5 {
		t.Errorf("atomic: history %v", hist)
	}
	if got := h.configMessage(t, ns, "stuck"); got != "ready again@0.1.0" {
		t.Errorf("atomic: ConfigMap says %q", got)
	}

	// atomic install: a failed first revision is uninstalled.
	base["release"] = "never"
	fnErr = helmFail(t, fn, ev("values", map[string]any{"message": "never", "neverReady": true}, "wait", true, "atomic", true), "Timeout")
	if !strings.Contains(fnErr.Message, "atomic: uninstalled") {
		t.Errorf("atomic install: %q", fnErr.Message)
	}
	if got := h.helmHistory(t, ns, "never"); got != nil {
		t.Errorf("atomic install: history %v", got)
	}
	if got := h.configMessage(t, ns, "never"); got != "" {
		t.Errorf("atomic install: the ConfigMap is left: %q", got)
	}
}

// A release left pending-upgrade by an invocation that was killed mid-wait
// is refused while that invocation could still run, and recovered after.
func TestHelmPendingRecovered(t *testing.T) {
	h, f := mustHelm(t)
	ns := h.helmNamespace(t, "helm-pending")
	// The killed invocation's deadline, which its revision's
	// lambda-eks.io/deadline label records, is this far after its start:
	// far enough that the kill and a second cold start, however slow the
	// machine, happen well before it.
	const timeout = 30 * time.Second
	fn := h.startHelm(t, f, timeout)
	ev := func(message string, neverReady bool) map[string]any {
		return map[string]any{"action": "helm-upgrade", "release": "killed", "namespace": ns, "chart": "demo", "repository": f.repoURL,
			"version": "0.1.0", "wait": true, "values": map[string]any{"message": message, "neverReady": neverReady}}
	}
	helmOK(t, fn, ev("first", false))
	done := make(chan struct{})
	started := time.Now()
	go func() {
		defer close(done)
		_, _, _ = fn.Invoke(context.Background(), mustJSON(t, ev("never", true)))
	}()
	// Kill the function process as soon as revision 2 is pending: what
	// Lambda does to an invocation at its timeout.
	for {
		hist := h.helmHistory(t, ns, "killed")
		if len(hist) == 2 && hist[1].Status == "pending-upgrade" {
			break
		}
		if time.Since(started) > timeout {
			t.Fatalf("revision 2 never became pending: %v", hist)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pid := fn.PID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-done
	if diff := cmp.Diff([]revision{{1, "deployed", "0.1.0"}, {2, "pending-upgrade", "0.1.0"}}, h.helmHistory(t, ns, "killed")); diff != "" {
		t.Fatalf("after the kill (-want +got):\n%s", diff)
	}
	fn2 := h.startHelm(t, f, 10*time.Second)
	// While the killed invocation's deadline has not passed, it might
	// still be running: Conflict, nothing written.
	if time.Since(started) < timeout-2*time.Second {
		fnErr := helmFail(t, fn2, ev("second", false), "Conflict")
		if !strings.Contains(fnErr.Message, "pending-upgrade") {
			t.Errorf("conflict message %q", fnErr.Message)
		}
		t.Logf("%s after the start: %s: %s", time.Since(started).Round(time.Millisecond), fnErr.Type, fnErr.Message)
	} else {
		t.Errorf("too late to see the Conflict: %s after the start, the killed invocation's deadline is at %s",
			time.Since(started).Round(time.Millisecond), timeout)
	}
	// The label is rounded up to the second: wait past it.
	time.Sleep(time.Until(started.Add(timeout + 2*time.Second)))
	r := helmOK(t, fn2, ev("second", false))
	if r.Revision != 3 || r.Status != "deployed" || !strings.Contains(r.Recovered, "revision 2 was pending-upgrade") {
		t.Errorf("after the deadline: %+v", r)
	}
	if diff := cmp.Diff([]revision{{1, "superseded", "0.1.0"}, {2, "failed", "0.1.0"}, {3, "deployed", "0.1.0"}}, h.helmHistory(t, ns, "killed")); diff != "" {
		t.Errorf("after the recovery (-want +got):\n%s", diff)
	}
	if got := h.configMessage(t, ns, "killed"); got != "second@0.1.0" {
		t.Errorf("ConfigMap says %q", got)
	}
}

// A dry run renders and writes nothing; bad values and missing charts are
// refused before anything is written.
func TestHelmRefusals(t *testing.T) {
	h, f := mustHelm(t)
	ns := h.helmNamespace(t, "helm-bad")
	fn := h.startHelm(t, f, 30*time.Second, `REGISTRY_CREDENTIALS={"`+f.registry+`":"`+registryUser+":"+registryPassword+`"}`)
	base := func(kv ...any) map[string]any {
		e := map[string]any{"action": "helm-upgrade", "release": "bad", "namespace": ns, "chart": "demo", "repository": f.repoURL}
		for i := 0; i < len(kv); i += 2 {
			e[kv[i].(string)] = kv[i+1]
		}
		return e
	}
	t.Run("dry run", func(t *testing.T) {
		r := helmOK(t, fn, base("dryRun", true, "values", map[string]any{"message": "dry"}))
		if !r.DryRun || !strings.Contains(r.Manifest, "kind: ConfigMap") || !strings.Contains(r.Manifest, `message: "dry"`) {
			t.Errorf("dry run: %+v", r)
		}
		if got := h.helmHistory(t, ns, "bad"); got != nil {
			t.Errorf("a dry run wrote history %v", got)
		}
		if got := h.configMessage(t, ns, "bad"); got != "" {
			t.Errorf("a dry run made the ConfigMap: %q", got)
		}
	})
	t.Run("dry run from the registry, the version a constraint", func(t *testing.T) {
		r := helmOK(t, fn, base("repository", "oci://"+f.registry+"/charts", "version", "~0.1", "dryRun", true))
		if r.ChartVersion != "0.1.0" || !strings.Contains(r.Manifest, "kind: Deployment") {
			t.Errorf("dry run: %+v", r)
		}
		r = helmOK(t, fn, base("repository", "oci://"+f.registry+"/charts", "dryRun", true))
		if r.ChartVersion != "0.2.0" {
			t.Errorf("no version is the newest: %+v", r)
		}
	})
	for _, tc := range []struct {
		name, code string
		ev         map[string]any
		want       []string
	}{
		{"values against the chart's schema", "InvalidEvent", base("values", map[string]any{"replicaCount": "many"}), []string{"replicaCount", "schema"}},
		{"values not an object", "InvalidEvent", base("values", "replicaCount: 2"), []string{"values", "object"}},
		{"a value the templates refuse", "InvalidEvent", base("values", map[string]any{"message": ""}), []string{"message is required"}},
		{"missing chart version", "NotFound", base("version", "9.9.9"), []string{"9.9.9", "versions: 0.2.0, 0.1.0"}},
		{"missing chart", "NotFound", base("chart", "nope"), []string{"nope"}},
		{"missing oci tag", "NotFound", base("repository", "oci://"+f.registry+"/charts", "version", "9.9.9"), []string{"9.9.9"}},
		// createNamespace needs a ClusterRole: in a new namespace no Role
		// grants the group even the release's Secrets.
		{"a namespace no Role grants", "Forbidden", base("namespace", "helm-new-"+randomHex(3), "createNamespace", true),
			[]string{`cannot list resource "secrets"`, "group lambda-eks-helm", "createNamespace"}},
		{"plain http repository", "InvalidEvent", base("repository", "http://127.0.0.1:1/charts"), []string{"https"}},
		{"unknown field", "InvalidEvent", base("valuez", map[string]any{}), []string{"valuez"}},
		{"rollback of no release", "NotFound", map[string]any{"action": "helm-rollback", "release": "bad", "namespace": ns}, []string{"not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fnErr := helmFail(t, fn, tc.ev, tc.code)
			for _, w := range tc.want {
				if !strings.Contains(fnErr.Message, w) {
					t.Errorf("message %q does not say %q", fnErr.Message, w)
				}
			}
			if got := h.helmHistory(t, ns, "bad"); got != nil {
				t.Errorf("history %v after a refusal", got)
			}
		})
	}
	t.Run("registry refuses the credentials", func(t *testing.T) {
		fn := h.startHelm(t, f, 30*time.Second, `REGISTRY_CREDENTIALS={"`+f.registry+`":"`+registryUser+`:wrong"}`)
		fnErr := helmFail(t, fn, base("repository", "oci://"+f.registry+"/charts", "version", "0.1.0"), "Forbidden")
		if !strings.Contains(fnErr.Message, "REGISTRY_CREDENTIALS") {
			t.Errorf("message %q", fnErr.Message)
		}
	})
}

// createNamespace with permissions-cluster.yml's ClusterRole for the Helm
// group: the namespace is made, the release installed in it. The ClusterRole
// is applied for this test only (other tests prove what the namespaced Role
// alone allows).
func TestHelmCreateNamespace(t *testing.T) {
	h, f := mustHelm(t)
	path := filepath.Join(h.root, "permissions-cluster.yml")
	if p := os.Getenv("LOCALEKS_PERMISSIONS_CLUSTER"); p != "" {
		path = p // a proposed version of it
	}
	raw, err := os.ReadFile(path) //nolint:gosec // G304: the project's file or the caller's choice
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err == nil && meta.Metadata.Name == "lambda-eks-helm-cluster" {
			docs = append(docs, doc)
		}
	}
	if len(docs) != 2 {
		t.Fatalf("%s has %d of the ClusterRole and ClusterRoleBinding lambda-eks-helm-cluster, want 2", path, len(docs))
	}
	manifest := filepath.Join(t.TempDir(), "helm-cluster.yml")
	if err := os.WriteFile(manifest, []byte(strings.Join(docs, "\n---\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", h.stack.Paths.AdminKubeconfig()}, args...)...) //nolint:gosec // G204
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	kubectl("apply", "-f", manifest)
	t.Cleanup(func() { kubectl("delete", "--ignore-not-found", "-f", manifest) })
	ns := "helm-created-" + randomHex(3)
	t.Cleanup(func() { _ = h.admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	fn := h.startHelm(t, f, 30*time.Second)
	ev := map[string]any{"action": "helm-upgrade", "release": "made", "namespace": ns, "chart": "demo", "repository": f.repoURL,
		"version": "0.1.0", "createNamespace": true, "values": map[string]any{"message": "new"}}
	// RBAC grants take a moment to reach the authorizer's cache.
	var r helmResult
	for try := 0; ; try++ {
		var fnErr *lambdart.FunctionError
		if r, fnErr = helmInvoke(t, fn, ev); fnErr == nil {
			break
		}
		if fnErr.Type != "Forbidden" || try == 20 {
			t.Fatalf("createNamespace: %s: %s", fnErr.Type, fnErr.Message)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if r.Revision != 1 || r.Status != "deployed" {
		t.Errorf("createNamespace: %+v", r)
	}
	if _, err := h.admin.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); err != nil {
		t.Errorf("namespace %s: %v", ns, err)
	}
	if got := h.configMessage(t, ns, "made"); got != "new@0.1.0" {
		t.Errorf("ConfigMap says %q", got)
	}
}

// Custom::HelmRelease: Create installs, Update upgrades, Delete uninstalls,
// and a Delete of what is already gone succeeds.
func TestHelmCustomResource(t *testing.T) {
	h, f := mustHelm(t)
	ns := h.helmNamespace(t, "helm-cfn")
	c := h.newCFNStack(t, fnOptions{})
	c.fn = h.startHelm(t, f, 60*time.Second)
	props := func(version, message string) map[string]any {
		return map[string]any{"Release": "cfn", "Namespace": ns, "Chart": "demo", "Repository": f.repoURL, "Version": version,
			"Values": map[string]any{"message": message}, "Wait": "true"}
	}
	ans := c.send(t, cfnRequest{Type: "Create", Logical: "Web", Props: props("0.1.0", "create")})
	if ans.Status != "SUCCESS" || ans.Data["Revision"] != "1" || ans.Data["ChartVersion"] != "0.1.0" {
		t.Fatalf("create: %+v", ans)
	}
	id := ans.PhysicalResourceID
	ans = c.send(t, cfnRequest{Type: "Update", Logical: "Web", Physical: id, Props: props("0.2.0", "update"), OldProps: props("0.1.0", "create")})
	if ans.Status != "SUCCESS" || ans.PhysicalResourceID != id || ans.Data["Revision"] != "2" || ans.Data["Status"] != "deployed" {
		t.Fatalf("update: %+v", ans)
	}
	if got := h.configMessage(t, ns, "cfn"); got != "update@0.2.0" {
		t.Errorf("after update the ConfigMap says %q", got)
	}
	// Bad values: FAILED, the release stays as it was.
	bad := props("0.2.0", "x")
	bad["Values"] = map[string]any{"replicaCount": "many"}
	ans = c.send(t, cfnRequest{Type: "Update", Logical: "Web", Physical: id, Props: bad, OldProps: props("0.2.0", "update")})
	if ans.Status != "FAILED" || !strings.Contains(ans.Reason, "InvalidEvent") || ans.PhysicalResourceID != id {
		t.Errorf("bad update: %+v", ans)
	}
	ans = c.send(t, cfnRequest{Type: "Delete", Logical: "Web", Physical: id, Props: props("0.2.0", "update")})
	if ans.Status != "SUCCESS" || !strings.Contains(ans.Reason, "uninstalled") {
		t.Errorf("delete: %+v", ans)
	}
	if got := h.helmHistory(t, ns, "cfn"); got != nil {
		t.Errorf("history after delete: %v", got)
	}
	ans = c.send(t, cfnRequest{Type: "Delete", Logical: "Web", Physical: id, Props: props("0.2.0", "update")})
	if ans.Status != "SUCCESS" || !strings.Contains(ans.Reason, "absent") {
		t.Errorf("second delete: %+v", ans)
	}
}

// BenchmarkHelmInstall times an install of the chart (no wait) through the
// Helm function, warm, and through the helm CLI of the SDK's version (a
// process per install, as CDK's and AWSQS's Lambdas run it) against the same
// replica and repository, and reports the function's peak RSS after them.
// Run: go test -run '^$' -bench HelmInstall -benchtime 10x ./e2e/
func BenchmarkHelmInstall(b *testing.B) {
	h, f := mustHelm(b)
	ns := h.helmNamespace(b, "helm-bench")
	fn := h.startHelm(b, f, 60*time.Second)
	ev := func(rel string) map[string]any {
		return map[string]any{"action": "helm-upgrade", "release": rel, "namespace": ns, "chart": "demo", "repository": f.repoURL, "version": "0.1.0"}
	}
	helmOK(b, fn, ev("cold")) // the cold start is BenchmarkHelmColdInit's
	n := 0
	b.Run("function", func(b *testing.B) {
		for b.Loop() {
			n++
			helmOK(b, fn, ev("fn-"+strconv.Itoa(n)))
		}
	})
	// The CLI is built for this benchmark only (parts/registry/build.sh).
	if _, err := output(h.root, nil, filepath.Join(h.root, "localeks", "parts", "registry", "build.sh"), "helm"); err != nil {
		b.Fatalf("build the helm CLI: %v", err)
	}
	cli := 0 // the CLI's installs, counted apart: n is the function's
	b.Run("helm-cli", func(b *testing.B) {
		home := b.TempDir()
		for b.Loop() {
			cli++
			cmd := exec.Command(filepath.Join(f.parts, "helm"), "upgrade", "--install", "cli-"+strconv.Itoa(cli), "demo", //nolint:gosec // G204
				"--repo", f.repoURL, "--version", "0.1.0", "--namespace", ns, "--kubeconfig", h.stack.Paths.AdminKubeconfig())
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSL_CERT_FILE=" + f.caFile}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("helm upgrade --install: %v\n%s", err, out)
			}
		}
	})
	if kib, err := peakRSS(fn.PID()); err == nil {
		// n+1: the function's installs in its loop and its cold one.
		b.Logf("helm function: peak RSS %.1f MiB after %d installs", float64(kib)/1024, n+1)
	}
}

// BenchmarkHelmColdInit is each bootstrap's init, from exec to its first
// request for an event, as BenchmarkColdInit measures the main one, at the
// Helm function's memory size.
func BenchmarkHelmColdInit(b *testing.B) {
	h, f := mustHelm(b)
	_, env, _ := benchEnv(b)
	for _, bin := range []struct{ name, path string }{{"main", h.bootstrap}, {"helm", f.bootstrap}} {
		b.Run(bin.name, func(b *testing.B) { benchColdInit(b, bin.path, env, 512) })
	}
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func newTestCA() (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lambda-eks helm e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return ca, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey) (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	leaf, err := tls.X509KeyPair(certPEM, keyPEM)
	return leaf, certPEM, keyPEM, err
}
