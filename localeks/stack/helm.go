package stack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

// The Helm side of the replica, started by UpHelm only when a Helm function
// runs (the main function never waits for it): a demo chart served from a
// loopback https chart repository and from an OCI registry (CNCF
// distribution with TLS and basic auth, built by parts/registry/build.sh),
// both with certificates of the shim's CA, which the functions already
// trust; and the Helm function's own role, mapped in aws-auth to HelmGroup,
// which permissions.yml's Role lambda-eks-helm is bound to, as on a user's
// cluster.
const (
	// HelmRole is the Helm function's execution role.
	HelmRole = "lambda-eks-helm-exec"
	// HelmGroup is the Kubernetes group HelmRole is mapped to.
	HelmGroup = "lambda-eks-helm"
	// HelmSessionName is the role session the Helm function runs as.
	HelmSessionName = "lambda-eks-helm-local"
	// ChartsPort and RegistryPort are fixed, unlike the other ports: the
	// samples in events/ name the chart repository and the registry.
	// 8879 is where `helm serve` used to serve a local repository.
	ChartsPort   = 8879
	RegistryPort = 5000
	// RegistryUser and RegistryPassword are the registry's one account: a
	// loopback demo registry, whose password is no secret.
	RegistryUser     = "helm"
	RegistryPassword = "localeks-registry" //nolint:gosec // G101: the demo registry's documented password
	// DemoChart is the name of the chart both serve, in DemoChartVersions.
	DemoChart = "demo"

	chartsName   = "charts"
	registryName = "registry"
	helmReady    = "helm-ready"
)

// DemoChartVersions are the versions of DemoChart the replica serves.
var DemoChartVersions = []string{"0.1.0", "0.2.0"}

// helmComponents run only once UpHelm started them.
var helmComponents = []string{chartsName, registryName}

// ChartRepositoryURL is the https chart repository (index.yaml) of the replica.
func ChartRepositoryURL() string { return "https://127.0.0.1:" + strconv.Itoa(ChartsPort) + "/charts" }

// RegistryHost is the OCI registry's host:port; its charts are
// oci://RegistryHost()/charts/NAME.
func RegistryHost() string { return "127.0.0.1:" + strconv.Itoa(RegistryPort) }

// HelmFunctionEnv is what the Helm function needs besides FunctionEnv: the
// registry's credentials, as the template's HelmRegistryCredentials
// parameter passes them.
func HelmFunctionEnv() []string {
	creds, _ := json.Marshal(map[string]string{RegistryHost(): RegistryUser + ":" + RegistryPassword})
	return []string{"REGISTRY_CREDENTIALS=" + string(creds)}
}

// UpHelm makes sure the Helm parts run beside a running stack: the chart
// repository, the registry (the distribution binary at registry) holding
// every DemoChartVersions, and HelmRole created in moto and mapped to
// HelmGroup. What already runs healthy is left alone.
func (s *Stack) UpHelm(ctx context.Context, registry string) error {
	if registry == "" {
		return errors.New("no registry binary (localeks/parts/registry/build.sh registry builds it)")
	}
	if _, err := os.Stat(registry); err != nil {
		return fmt.Errorf("registry not built (localeks/parts/registry/build.sh registry): %w", err)
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.helmHealthy(ctx, registry); err == nil {
		// Tests edit aws-auth: the entry is merged again if it went.
		return s.mapHelmRole(ctx)
	} else if _, ok := readProc(s.Paths, registryName); ok {
		s.log.Info("replacing the Helm parts", "reason", err)
	}
	start := time.Now()
	if err := s.startHelm(ctx, registry); err != nil {
		return err
	}
	s.log.Info("Helm parts started", "took", time.Since(start).Round(time.Millisecond),
		"repository", ChartRepositoryURL(), "registry", "oci://"+RegistryHost()+"/charts")
	return nil
}

// helmHealthy checks the Helm parts as healthy() checks the stack.
func (s *Stack) helmHealthy(ctx context.Context, registry string) error {
	if _, err := os.Stat(s.Paths.File(helmReady)); err != nil {
		return errors.New("the Helm parts never finished starting")
	}
	for _, name := range helmComponents {
		pr, ok := readProc(s.Paths, name)
		if !ok || !pr.alive() {
			return fmt.Errorf("%s is not running", name)
		}
		if name == registryName && (len(pr.Args) == 0 || pr.Args[0] != registry) {
			return fmt.Errorf("registry runs %v, not %s", pr.Args, registry)
		}
		if err := s.check(ctx, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (s *Stack) startHelm(ctx context.Context, registry string) error {
	_ = os.Remove(s.Paths.File(helmReady))
	for _, name := range helmComponents {
		if pr, ok := readProc(s.Paths, name); ok {
			if err := pr.stop(1500 * time.Millisecond); err != nil {
				return err
			}
		}
		_ = os.Rename(s.Paths.Log(name), s.Paths.Log(name)+".prev")
	}
	for _, port := range []int{ChartsPort, RegistryPort} {
		if portFree(port) {
			continue
		}
		holder := "another process"
		if pids := listeners(port); len(pids) > 0 {
			holder = processName(pids[0])
		}
		return fmt.Errorf("port %d (the Helm parts' fixed port, named by events/helm-*.json) is held by %s: stop it", port, holder)
	}
	dir := s.Paths.File("helm")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	charts := filepath.Join(dir, "charts")
	if err := os.MkdirAll(charts, 0o700); err != nil {
		return err
	}
	if err := s.writeHelmPKI(); err != nil {
		return fmt.Errorf("issue the Helm parts' certificate: %w", err)
	}
	packaged := map[string][]byte{}
	for _, v := range DemoChartVersions {
		data, err := DemoChartArchive(v)
		if err != nil {
			return err
		}
		packaged[v] = data
		if err := writeFile(filepath.Join(charts, DemoChart+"-"+v+".tgz"), data, 0o600); err != nil {
			return err
		}
	}
	index, err := ChartIndex(packaged)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(charts, "index.yaml"), index, 0o600); err != nil {
		return err
	}
	config, err := s.writeRegistryConfig(dir)
	if err != nil {
		return err
	}
	if s.cfg.Self == "" {
		return errors.New("no localeks binary to run the chart repository (Config.Self)")
	}
	cert, key := s.Paths.PKI("helm-serving.pem"), s.Paths.PKI("helm-serving-key.pem")
	argv := map[string][]string{
		chartsName: {s.cfg.Self, "charts", "--dir", charts, "--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(ChartsPort)),
			"--cert", cert, "--key", key},
		registryName: {registry, "serve", config},
	}
	// The registry would otherwise try to export traces.
	env := append(baseEnv(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	for _, name := range helmComponents {
		if _, err := startProcess(s.Paths, name, argv[name], env); err != nil {
			return err
		}
	}
	deadline, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, name := range helmComponents {
		if err := s.waitHealthy(deadline, name); err != nil {
			return err
		}
	}
	client, err := s.helmClient()
	if err != nil {
		return err
	}
	for _, v := range DemoChartVersions {
		if err := pushChart(deadline, client, RegistryHost(), "charts/"+DemoChart, v, packaged[v]); err != nil {
			return fmt.Errorf("push %s %s to the registry: %w", DemoChart, v, err)
		}
	}
	if err := s.createRole(deadline, HelmRole); err != nil {
		return err
	}
	if err := s.mapHelmRole(deadline); err != nil {
		return err
	}
	return writeFile(s.Paths.File(helmReady), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o600)
}

// writeHelmPKI issues the serving certificate of the chart repository and
// the registry from the shim's CA, which every function started with
// FunctionEnv trusts (SSL_CERT_FILE).
func (s *Stack) writeHelmPKI() error {
	if _, err := os.Stat(s.Paths.PKI("helm-serving.pem")); err == nil {
		return nil
	}
	shimCA, err := loadCA(s.Paths.ShimCA(), s.Paths.PKI("shim-ca-key.pem"))
	if err != nil {
		return err
	}
	return shimCA.issue(leaf{commonName: "localeks helm", dnsNames: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}, server: true},
		s.Paths.PKI("helm-serving.pem"), s.Paths.PKI("helm-serving-key.pem"))
}

// writeRegistryConfig writes distribution's configuration and htpasswd
// under dir and returns the configuration's path.
func (s *Stack) writeRegistryConfig(dir string) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(RegistryPassword), bcrypt.MinCost)
	if err != nil {
		return "", err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := writeFile(htpasswd, fmt.Appendf(nil, "%s:%s\n", RegistryUser, hash), 0o600); err != nil {
		return "", err
	}
	config := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
http: {addr: %q, secret: localeks-registry-secret, tls: {certificate: %q, key: %q}}
auth: {htpasswd: {realm: localeks, path: %q}}
`, filepath.Join(dir, "registry-data"), RegistryHost(), s.Paths.PKI("helm-serving.pem"), s.Paths.PKI("helm-serving-key.pem"), htpasswd)
	path := filepath.Join(dir, "registry.yml")
	return path, writeFile(path, []byte(config), 0o600)
}

// helmClient trusts the Helm parts' certificate and goes nowhere but loopback.
func (s *Stack) helmClient() (*http.Client, error) {
	ca, err := os.ReadFile(s.Paths.ShimCA())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}, nil
}

// checkHelm is check for the Helm parts: the repository serves its index,
// the registry asks for credentials.
func (s *Stack) checkHelm(ctx context.Context, name string) error {
	client, err := s.helmClient()
	if err != nil {
		return err
	}
	target, want := ChartRepositoryURL()+"/index.yaml", http.StatusOK
	if name == registryName {
		target, want = "https://"+RegistryHost()+"/v2/", http.StatusUnauthorized
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: %s, want %d", target, resp.Status, want)
	}
	return nil
}

// createRole creates a role of the replica's account in moto, idempotently.
func (s *Stack) createRole(ctx context.Context, role string) error {
	_, err := iam.NewFromConfig(s.MotoConfig()).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(role), AssumeRolePolicyDocument: aws.String(trustAnyone)})
	var exists *iamtypes.EntityAlreadyExistsException
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("create role %s: %w", role, err)
	}
	return nil
}

// mapHelmRole merges HelmRole's entry into aws-auth and, when it was not
// there, waits until the authenticator maps it (it watches the ConfigMap).
func (s *Stack) mapHelmRole(ctx context.Context) error {
	changed, err := s.mergeRole(ctx, RoleARN(HelmRole), HelmGroup)
	if err != nil || !changed {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for i := 1; ; i++ {
		// A new session each try: the apiserver caches a refused token.
		session := fmt.Sprintf("localeks-helm-probe-%d", i)
		user, err := s.whoAmI(ctx, HelmRole, session)
		if err == nil && slices.Contains(user.Groups, HelmGroup) {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("authenticated as %q %v, want group %s", user.Username, user.Groups, HelmGroup)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not mapped to %s: %w (last: %w)", HelmRole, HelmGroup, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Helm's media types for a chart in an OCI registry.
const (
	helmConfigMediaType = "application/vnd.cncf.helm.config.v1+json"
	helmChartMediaType  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	ociManifestType     = "application/vnd.oci.image.manifest.v1+json"
)

// pushChart pushes a packaged chart as `helm push` does (config blob of the
// chart's metadata, one layer, an OCI manifest tagged with the version),
// with the OCI distribution API: the Helm SDK would make the localeks CLI,
// built before the first invocation, much slower to build.
func pushChart(ctx context.Context, client *http.Client, host, repo, tag string, archive []byte) error {
	meta, err := chartMetadata(archive)
	if err != nil {
		return err
	}
	base := &url.URL{Scheme: "https", Host: host, Path: "/v2/" + repo + "/"}
	do := func(method, target string, body []byte, contentType string, want int) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth(RegistryUser, RegistryPassword)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s: %s: %s", method, target, resp.Status, bytes.TrimSpace(msg))
		}
		return resp, nil
	}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	blob := func(data []byte, mediaType string) (descriptor, error) {
		sum := sha256.Sum256(data)
		d := descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: len(data)}
		resp, err := do(http.MethodPost, base.JoinPath("blobs", "uploads").String()+"/", nil, "", http.StatusAccepted)
		if err != nil {
			return d, err
		}
		loc, err := base.Parse(resp.Header.Get("Location"))
		if err != nil {
			return d, fmt.Errorf("upload location: %w", err)
		}
		q := loc.Query()
		q.Set("digest", d.Digest)
		loc.RawQuery = q.Encode()
		_, err = do(http.MethodPut, loc.String(), data, "application/octet-stream", http.StatusCreated)
		return d, err
	}
	config, err := blob(meta, helmConfigMediaType)
	if err != nil {
		return err
	}
	layer, err := blob(archive, helmChartMediaType)
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociManifestType,
		"config": config, "layers": []descriptor{layer}})
	if err != nil {
		return err
	}
	_, err = do(http.MethodPut, base.JoinPath("manifests", tag).String(), manifest, ociManifestType, http.StatusCreated)
	return err
}

// chartMetadata is Chart.yaml of a packaged chart as JSON: what helm push
// stores as the config blob.
func chartMetadata(archive []byte) ([]byte, error) {
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no Chart.yaml in the chart: %w", err)
		}
		if parts := strings.Split(h.Name, "/"); len(parts) == 2 && parts[1] == "Chart.yaml" {
			raw, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return nil, err
			}
			return yaml.YAMLToJSON(raw)
		}
	}
}

// The demo chart: a ConfigMap carrying the values' message and the chart
// version, and a Deployment whose pods never become ready when neverReady
// (the replica's kwok nodes honour NeverReadyLabel).
var demoFiles = map[string]string{
	"values.yaml": "replicaCount: 1\nmessage: hello\nneverReady: false\n",
	"values.schema.json": `{"$schema": "https://json-schema.org/draft-07/schema#", "type": "object",
 "properties": {"replicaCount": {"type": "integer", "minimum": 0}, "message": {"type": "string"}, "neverReady": {"type": "boolean"}}}`,
	"templates/configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  message: {{ required "message is required" .Values.message | quote }}
  chartVersion: {{ .Chart.Version | quote }}
`,
	"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicaCount }}
  progressDeadlineSeconds: 600
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
        {{- if .Values.neverReady }}
        ` + NeverReadyLabel + `: "true"
        {{- end }}
    spec:
      containers:
        - name: web
          image: nginx:1.27
`,
	"templates/NOTES.txt": "{{ .Release.Name }} says {{ .Values.message }}\n",
}

// DemoChartArchive packages version v of DemoChart as helm package does
// (appVersion app-v), byte for byte the same for the same v.
func DemoChartArchive(v string) ([]byte, error) {
	files := map[string]string{"Chart.yaml": fmt.Sprintf("apiVersion: v2\nname: %s\nversion: %s\nappVersion: %q\ndescription: lambda-eks demo chart\n", DemoChart, v, "app-"+v)}
	for k, c := range demoFiles {
		files[k] = c
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: DemoChart + "/" + n, Mode: 0o644, Size: int64(len(files[n])), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ChartIndex is a chart repository's index.yaml for versions of DemoChart
// (version to archive), each at DemoChart-VERSION.tgz beside it.
func ChartIndex(charts map[string][]byte) ([]byte, error) {
	var entries []map[string]any
	versions := make([]string, 0, len(charts))
	for v := range charts {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	for _, v := range versions {
		sum := sha256.Sum256(charts[v])
		entries = append(entries, map[string]any{"apiVersion": "v2", "name": DemoChart, "version": v, "appVersion": "app-" + v,
			"digest": hex.EncodeToString(sum[:]), "urls": []string{DemoChart + "-" + v + ".tgz"}, "created": "2026-12-01T00:00:00Z"})
	}
	return yaml.Marshal(map[string]any{"apiVersion": "v1", "entries": map[string]any{DemoChart: entries}, "generated": "2026-12-01T00:00:00Z"})
}

// ServeCharts serves dir under /charts/ over https on listen until ctx ends:
// the chart repository UpHelm starts (`localeks charts`).
func ServeCharts(ctx context.Context, dir, listen, cert, key string) error {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /charts/", http.StripPrefix("/charts/", http.FileServer(http.Dir(dir))))
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
