package stack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
)

// APIServerURL is the local apiserver's URL, as DescribeCluster answers it.
func (s *Stack) APIServerURL() string {
	return "https://127.0.0.1:" + strconv.Itoa(s.Ports.APIServer)
}

// ShimURL is the proxy URL for HTTPS_PROXY.
func (s *Stack) ShimURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.Ports.Shim) }

// AdminConfig is a rest.Config for cluster admin.
func (s *Stack) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: s.APIServerURL(),
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   s.Paths.PKI("ca.pem"),
			CertFile: s.Paths.PKI("admin.pem"),
			KeyFile:  s.Paths.PKI("admin-key.pem"),
		},
		QPS:   50,
		Burst: 100,
	}
}

// BearerConfig is a rest.Config that authenticates with a bearer token only,
// as the function does.
func (s *Stack) BearerConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            s.APIServerURL(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: s.Paths.PKI("ca.pem")},
	}
}

// writeConfigs writes the kubeconfigs, the audit policy, the shim's
// configuration and the authenticator's serving pair.
func (s *Stack) writeConfigs() error {
	p := s.Paths
	ca, err := os.ReadFile(p.PKI("ca.pem"))
	if err != nil {
		return err
	}
	admin := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: localeks
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: localeks-admin
  context: {cluster: localeks, user: admin}
current-context: localeks-admin
`, s.APIServerURL(), p.PKI("ca.pem"), p.PKI("admin.pem"), p.PKI("admin-key.pem"))
	// The authenticator would generate this with https://localhost:PORT while
	// binding 127.0.0.1 only; writing it ourselves (with its serving pair
	// issued by the cluster CA) also lets both start at the same time.
	webhook := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: aws-iam-authenticator
  cluster:
    server: https://127.0.0.1:%d/authenticate
    certificate-authority: %s
users:
- name: apiserver
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: webhook
  context: {cluster: aws-iam-authenticator, user: apiserver}
current-context: webhook
`, s.Ports.Authenticator, p.PKI("ca.pem"), p.PKI("apiserver-webhook-client.pem"), p.PKI("apiserver-webhook-client-key.pem"))
	// Metadata for every request but the apiserver's own and the
	// simulated nodes' and controllers' lease renewals and events (most of
	// the log otherwise): tests count the requests of the function's user
	// from the apiserver's side.
	audit := `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver"]
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
  - group: ""
    resources: ["events"]
  - group: events.k8s.io
    resources: ["events"]
- level: Metadata
`
	shimCfg, err := json.MarshalIndent(shim.Config{
		Listen:   "127.0.0.1:" + strconv.Itoa(s.Ports.Shim),
		Upstream: "http://127.0.0.1:" + strconv.Itoa(s.Ports.Moto),
		CACert:   p.PKI("shim-ca.pem"),
		CAKey:    p.PKI("shim-ca-key.pem"),
		Clusters: map[string]shim.Cluster{
			"*":         {Endpoint: s.APIServerURL(), CAData: base64.StdEncoding.EncodeToString(ca)},
			DownCluster: {Endpoint: deadEndpoint, CAData: base64.StdEncoding.EncodeToString(ca)},
		},
	}, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		p.AdminKubeconfig():              []byte(admin),
		p.File("webhook.kubeconfig"):     []byte(webhook),
		p.File("audit-policy.yaml"):      []byte(audit),
		p.File("shim.json"):              shimCfg,
		p.File("authenticator/cert.pem"): mustRead(p.PKI("authenticator.pem")),
		p.File("authenticator/key.pem"):  mustRead(p.PKI("authenticator-key.pem")),
	} {
		if data == nil {
			return fmt.Errorf("write %s: source missing", name)
		}
		if err := writeFile(name, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func mustRead(path string) []byte {
	b, err := os.ReadFile(path) //nolint:gosec // G304: a file of our own PKI
	if err != nil {
		return nil
	}
	return b
}

// check runs one component's health check.
func (s *Stack) check(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	switch name {
	case etcdName:
		body, err := s.get(ctx, nil, "http://127.0.0.1:"+strconv.Itoa(s.Ports.Etcd)+"/health")
		if err != nil {
			return err
		}
		if !bytes.Contains(body, []byte(`"health":"true"`)) {
			return fmt.Errorf("etcd health: %s", body)
		}
	case motoName:
		// moto answers anything; an answer means it serves.
		_, err := s.get(ctx, nil, "http://127.0.0.1:"+strconv.Itoa(s.Ports.Moto)+"/moto-api/")
		return err
	case shimName:
		_, err := s.get(ctx, nil, s.ShimURL()+"/__health")
		return err
	case authenticatorName:
		tc, err := s.tlsConfig(false)
		if err != nil {
			return err
		}
		_, err = s.get(ctx, tc, "https://127.0.0.1:"+strconv.Itoa(s.Ports.Authenticator)+"/healthz")
		return err
	case apiserverName:
		tc, err := s.tlsConfig(true)
		if err != nil {
			return err
		}
		_, err = s.get(ctx, tc, s.APIServerURL()+"/readyz")
		return err
	case controllerManagerName, schedulerName:
		tc, err := s.tlsConfig(false)
		if err != nil {
			return err
		}
		port := s.Ports.ControllerManager
		if name == schedulerName {
			port = s.Ports.Scheduler
		}
		_, err = s.get(ctx, tc, "https://127.0.0.1:"+strconv.Itoa(port)+"/healthz")
		return err
	case kwokName:
		_, err := s.get(ctx, nil, "http://127.0.0.1:"+strconv.Itoa(s.Ports.Kwok)+"/healthz")
		return err
	case chartsName, registryName:
		return s.checkHelm(ctx, name)
	}
	return nil
}

func (s *Stack) tlsConfig(admin bool) (*tls.Config, error) {
	ca, err := os.ReadFile(s.Paths.PKI("ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if admin {
		pair, err := loadKeyPair(s.Paths, "admin")
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// get fetches a loopback URL and wants a 200.
func (s *Stack) get(ctx context.Context, tc *tls.Config, url string) ([]byte, error) {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: tc, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// syncPermissions applies the project's permissions.yml unchanged, as
// cluster admin, when it changed since it was last applied, and then merges
// the function's role into aws-auth.
func (s *Stack) syncPermissions(ctx context.Context) error {
	path := s.cfg.Permissions
	switch sum, err := fileSHA256(path); {
	case path == "":
		s.log.Warn("no permissions.yml given (--permissions, LOCALEKS_PERMISSIONS): RBAC left as it is", "group", Group)
	case errors.Is(err, os.ErrNotExist):
		s.log.Warn("permissions.yml not found: the group has no RBAC grants until the project's permissions.yml exists", "path", path, "group", Group)
	case err != nil:
		return err
	default:
		applied, _ := os.ReadFile(s.Paths.File("permissions.sha256"))
		if string(applied) != sum {
			// The project's own permissions.yml, unchanged, by design.
			cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", s.Paths.AdminKubeconfig(), "apply", "-n", "default", "-f", path) //nolint:gosec // G204
			cmd.Env = baseEnv()
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("kubectl apply -f %s: %w\n%s", path, err, out)
			}
			s.log.Info("applied permissions.yml", "path", path, "kubectl", strings.TrimSpace(string(out)))
			if err := writeFile(s.Paths.File("permissions.sha256"), []byte(sum), 0o600); err != nil {
				return err
			}
		}
	}
	return s.mapRole(ctx)
}

// roleMapping is one aws-auth mapRoles entry.
type roleMapping struct {
	RoleARN  string   `json:"rolearn"`
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
}

// mapRole merges the execution role's entry into kube-system/aws-auth.
func (s *Stack) mapRole(ctx context.Context) error {
	_, err := s.mergeRole(ctx, RoleARN(ExecRole), Group)
	return err
}

// mergeRole merges one role's entry (user lambda:{{SessionName}}, group)
// into kube-system/aws-auth, and says whether it wrote. It never replaces
// the map: other entries are kept as they are.
func (s *Stack) mergeRole(ctx context.Context, arn, group string) (changed bool, err error) {
	return s.mergeRoleAs(ctx, arn, "lambda:{{SessionName}}", group)
}

// mergeRoleAs is mergeRole with the entry's username.
func (s *Stack) mergeRoleAs(ctx context.Context, arn, username, group string) (changed bool, err error) {
	cs, err := kubernetes.NewForConfig(s.AdminConfig())
	if err != nil {
		return false, err
	}
	want := roleMapping{RoleARN: arn, Username: username, Groups: []string{group}}
	cms := cs.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "aws-auth", metav1.GetOptions{})
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return false, fmt.Errorf("get aws-auth: %w", err)
	}
	if create {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "aws-auth", Namespace: "kube-system"}}
	}
	var roles []map[string]any
	if raw := cm.Data["mapRoles"]; raw != "" {
		if err := yaml.Unmarshal([]byte(raw), &roles); err != nil {
			return false, fmt.Errorf("parse aws-auth mapRoles: %w", err)
		}
	}
	wantMap := map[string]any{"rolearn": want.RoleARN, "username": want.Username, "groups": []any{group}}
	i := slices.IndexFunc(roles, func(r map[string]any) bool { return r["rolearn"] == want.RoleARN })
	if i >= 0 {
		if fmt.Sprint(roles[i]) == fmt.Sprint(wantMap) {
			return false, nil
		}
		roles[i] = wantMap
	} else {
		roles = append(roles, wantMap)
	}
	out, err := yaml.Marshal(roles)
	if err != nil {
		return false, err
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data["mapRoles"] = string(out)
	if create {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: "localeks"})
	} else {
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "localeks"})
	}
	if err != nil {
		return false, fmt.Errorf("write aws-auth: %w", err)
	}
	s.log.Info("mapped role in aws-auth", "rolearn", want.RoleARN, "username", want.Username, "group", group)
	return true, nil
}

// probe proves the authentication chain before the stack is declared ready:
// a token for a fresh session of the execution role must pass a
// SelfSubjectReview. Each try uses new credentials, hence a new token: the
// apiserver caches a refused token.
func (s *Stack) probe(ctx context.Context) error {
	var last error
	for i := 1; ; i++ {
		session := fmt.Sprintf("localeks-probe-%d", i)
		user, err := s.whoAmI(ctx, ExecRole, session)
		if err == nil {
			if user.Username != "lambda:"+session || !slices.Contains(user.Groups, Group) {
				return fmt.Errorf("probe authenticated as %q %v, want lambda:%s in %s", user.Username, user.Groups, session, Group)
			}
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// whoAmI authenticates with a token for a session of role and returns who the
// apiserver says that is.
func (s *Stack) whoAmI(ctx context.Context, role, session string) (authenticationv1.UserInfo, error) {
	creds, err := s.AssumeRole(ctx, role, session)
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	tok, err := mintToken(creds)
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	cs, err := kubernetes.NewForConfig(s.BearerConfig(tok))
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	ssr, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	return ssr.Status.UserInfo, nil
}
