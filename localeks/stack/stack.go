// Package stack runs the local EKS replica: etcd, kube-apiserver with RBAC and
// the token webhook, the aws-iam-authenticator server in EKSConfigMap mode,
// moto_server, the loopback shim in front of moto, and what acts on the
// objects: kube-controller-manager, kube-scheduler, and kwok simulating
// NodeCount nodes, which are the instances of an Auto Scaling group in
// moto (nodegroup.go). It starts them detached,
// records them in pidfiles under one state directory, stops them by PID in a
// safe order, and replaces a stack that a crashed run left behind.
package stack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
)

// Facts of the replica that the function, the tests and the docs share.
const (
	Region      = "us-east-1"
	Account     = "123456789012"
	ClusterName = "demo"
	// DownCluster is known to moto, but its DescribeCluster answer points at
	// a closed loopback port: the API server is unreachable.
	DownCluster  = "down"
	ExecRole     = "lambda-eks-exec"
	UnmappedRole = "lambda-eks-unmapped"
	Group        = "lambda-eks"
	// SessionName is the role session the function runs as, like the session
	// Lambda creates for its execution role.
	SessionName = "lambda-eks-local"
	// IMDSGuard makes any instance-metadata lookup fail fast on loopback
	// instead of reaching 169.254.169.254.
	IMDSGuard = "http://127.0.0.1:1"
	// authenticatorHealthPort is fixed by aws-iam-authenticator (all
	// interfaces): two stacks cannot run side by side.
	authenticatorHealthPort = 21363
	// deadEndpoint is where DescribeCluster for DownCluster points.
	deadEndpoint = "https://127.0.0.1:1"
)

// RoleARN returns the ARN of a role in the replica's account.
func RoleARN(role string) string { return "arn:aws:iam::" + Account + ":role/" + role }

// Config says where the parts are and where the stack keeps its state.
type Config struct {
	// Dir is the state directory; DefaultDir() when empty.
	Dir string
	// Parts is the directory holding kube-apiserver, etcd,
	// aws-iam-authenticator, kube-controller-manager, kube-scheduler, kwok
	// and aws-lambda-rie, as printed by localeks/parts/build.sh.
	Parts string
	// Self is the localeks binary; the stack runs `Self shim` as the shim.
	Self string
	// Permissions is the project's permissions.yml, applied unchanged as
	// cluster admin. A missing file is reported and skipped.
	Permissions string
	// Log receives progress; slog.Default() when nil.
	Log *slog.Logger
}

// DefaultDir is $LOCALEKS_DIR, else $LAMBDA_EKS_CACHE/stack, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks/stack: the same place
// ./local.sh and localeks/parts/build.sh use.
func DefaultDir() string {
	if dir := os.Getenv("LOCALEKS_DIR"); dir != "" {
		return dir
	}
	if cache := os.Getenv("LAMBDA_EKS_CACHE"); cache != "" {
		return filepath.Join(cache, "stack")
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "lambda-eks", "stack")
}

// Ports are the loopback ports of a stack.
type Ports struct {
	Etcd          int `json:"etcd"`
	EtcdPeer      int `json:"etcdPeer"`
	APIServer     int `json:"apiserver"`
	Authenticator int `json:"authenticator"`
	Moto          int `json:"moto"`
	Shim          int `json:"shim"`
	// Health (HTTPS) of the controllers and the scheduler, kwok's server.
	ControllerManager int `json:"controllerManager"`
	Scheduler         int `json:"scheduler"`
	Kwok              int `json:"kwok"`
}

// Stack is a running (or recorded) replica.
type Stack struct {
	Paths Paths
	Ports Ports
	cfg   Config
	log   *slog.Logger
}

// component names; start() and stopAll() order them.
const (
	etcdName          = "etcd"
	motoName          = "moto"
	shimName          = "shim"
	authenticatorName = "aws-iam-authenticator"
	apiserverName     = "kube-apiserver"
)

var components = []string{etcdName, motoName, shimName, authenticatorName, apiserverName,
	controllerManagerName, schedulerName, kwokName}

func newStack(cfg Config) *Stack {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Stack{Paths: Paths{Dir: cfg.Dir}, cfg: cfg, log: cfg.Log}
}

// Open returns the stack recorded in cfg.Dir without starting anything. It
// fails when no stack was ever started there.
func Open(cfg Config) (*Stack, error) {
	s := newStack(cfg)
	if err := s.readPorts(); err != nil {
		return nil, fmt.Errorf("no local stack in %s (run `localeks up`): %w", s.Paths.Dir, err)
	}
	return s, nil
}

// Up makes sure a healthy stack runs and returns it. A healthy stack is left
// alone (only a changed permissions.yml is re-applied); anything else - a
// stack from a crashed run, a dead process, a leftover holding a port - is
// stopped and replaced.
func Up(ctx context.Context, cfg Config) (*Stack, error) {
	s := newStack(cfg)
	if err := os.MkdirAll(s.Paths.Dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	if s.readPorts() == nil {
		if err := s.healthy(ctx); err == nil {
			s.log.Info("stack already running", "dir", s.Paths.Dir)
			if err := s.syncPermissions(ctx); err != nil {
				return nil, err
			}
			// A stack started by an older localeks gains what this one adds.
			if err := s.refreshShim(ctx); err != nil {
				return nil, err
			}
			if err := s.ensureLifecycle(ctx); err != nil {
				return nil, err
			}
			return s, nil
		} else if _, ok := readProc(s.Paths, apiserverName); ok {
			s.log.Info("replacing unhealthy stack", "reason", err)
		}
	}
	start := time.Now()
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	s.log.Info("stack started", "took", time.Since(start).Round(time.Millisecond), "apiserver", s.APIServerURL())
	return s, nil
}

// Down stops every process of the stack in cfg.Dir: the apiserver before
// etcd, which it would otherwise hang on.
func Down(ctx context.Context, cfg Config) error {
	s := newStack(cfg)
	if err := os.MkdirAll(s.Paths.Dir, 0o700); err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.stopAll()
}

// ComponentStatus is what Status reports for one process.
type ComponentStatus struct {
	Name    string `json:"name"`
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running"`
	Healthy bool   `json:"healthy"`
	Detail  string `json:"detail,omitempty"`
}

// Status reports each component of the stack in cfg.Dir.
func Status(ctx context.Context, cfg Config) ([]ComponentStatus, error) {
	s := newStack(cfg)
	if err := s.readPorts(); err != nil {
		return nil, fmt.Errorf("no local stack in %s: %w", s.Paths.Dir, err)
	}
	var out []ComponentStatus
	for _, name := range slices.Concat(components, helmComponents) {
		st := ComponentStatus{Name: name}
		pr, ok := readProc(s.Paths, name)
		if !ok && slices.Contains(helmComponents, name) {
			continue // started only for a Helm function
		}
		if ok {
			st.PID = pr.PID
			st.Running = pr.alive()
		}
		if st.Running {
			if err := s.check(ctx, name); err != nil {
				st.Detail = err.Error()
			} else {
				st.Healthy = true
			}
		}
		out = append(out, st)
	}
	return out, nil
}

func (s *Stack) lock() (func(), error) {
	f, err := os.OpenFile(s.Paths.File("lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { _ = f.Close() }, nil
}

func (s *Stack) readPorts() error {
	b, err := os.ReadFile(s.Paths.File("ports.json"))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, &s.Ports)
}

// healthy checks every recorded process, its health endpoint, and moto's state.
func (s *Stack) healthy(ctx context.Context) error {
	if _, err := os.Stat(s.Paths.File("ready")); err != nil {
		return errors.New("stack never finished starting")
	}
	for _, name := range components {
		pr, ok := readProc(s.Paths, name)
		if !ok || !pr.alive() {
			return fmt.Errorf("%s is not running", name)
		}
		// Parts of another version (a bumped go.mod) mean a new stack.
		if s.cfg.Parts != "" && name != motoName && name != shimName && len(pr.Args) > 0 && pr.Args[0] != filepath.Join(s.cfg.Parts, name) {
			return fmt.Errorf("%s runs %s, not the parts in %s", name, pr.Args[0], s.cfg.Parts)
		}
		if err := s.check(ctx, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := s.checkMotoState(ctx); err != nil {
		return fmt.Errorf("moto: %w", err)
	}
	return nil
}

// start replaces whatever is left with a fresh stack.
func (s *Stack) start(ctx context.Context) error {
	if err := s.stopAll(); err != nil {
		return err
	}
	for _, d := range []string{s.Paths.File("etcd"), s.Paths.File("run"), s.Paths.File("authenticator")} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	_ = os.Remove(s.Paths.File("ready"))
	_ = os.Remove(s.Paths.File(helmReady))
	_ = os.Remove(s.Paths.File("permissions.sha256"))
	_ = os.Remove(s.Paths.AuditLog())
	// Keep one generation of logs: the previous run's explain a crash.
	for _, name := range components {
		_ = os.Rename(s.Paths.Log(name), s.Paths.Log(name)+".prev")
	}
	for _, d := range []string{s.Paths.File("run"), s.Paths.File("logs"), s.Paths.File("authenticator")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := s.choosePorts(); err != nil {
		return err
	}
	if err := writePKI(s.Paths); err != nil {
		return fmt.Errorf("write PKI: %w", err)
	}
	if err := s.writeConfigs(); err != nil {
		return err
	}
	if err := s.writeControllerConfigs(); err != nil {
		return err
	}
	bins, err := s.binaries()
	if err != nil {
		return err
	}
	env := baseEnv()
	p, ports := s.Paths, s.Ports
	loop := func(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }
	argv := map[string][]string{
		etcdName: {bins[etcdName], "--name=localeks", "--data-dir=" + p.File("etcd"),
			"--listen-client-urls=" + loop(ports.Etcd), "--advertise-client-urls=" + loop(ports.Etcd),
			"--listen-peer-urls=" + loop(ports.EtcdPeer), "--initial-advertise-peer-urls=" + loop(ports.EtcdPeer),
			"--initial-cluster=localeks=" + loop(ports.EtcdPeer), "--unsafe-no-fsync", "--log-level=warn"},
		motoName: {bins[motoName], "-H", "127.0.0.1", "-p", strconv.Itoa(ports.Moto)},
		shimName: {bins[shimName], "shim", "--config", p.File("shim.json")},
		authenticatorName: {bins[authenticatorName], "server", "--cluster-id=" + ClusterName,
			"--backend-mode=EKSConfigMap", "--kubeconfig=" + p.AdminKubeconfig(),
			"--address=127.0.0.1", "--port=" + strconv.Itoa(ports.Authenticator),
			"--state-dir=" + p.File("authenticator"), "--generate-kubeconfig=" + p.File("webhook.kubeconfig"),
			"--kubeconfig-pregenerated=true"},
		apiserverName: {bins[apiserverName], "--etcd-servers=" + loop(ports.Etcd),
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports.APIServer),
			"--endpoint-reconciler-type=none",
			"--tls-cert-file=" + p.PKI("apiserver.pem"), "--tls-private-key-file=" + p.PKI("apiserver-key.pem"),
			"--client-ca-file=" + p.PKI("ca.pem"),
			"--service-account-key-file=" + p.PKI("sa.pem"), "--service-account-signing-key-file=" + p.PKI("sa-key.pem"),
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--authorization-mode=Node,RBAC",
			"--authentication-token-webhook-config-file=" + p.File("webhook.kubeconfig"),
			"--audit-policy-file=" + p.File("audit-policy.yaml"), "--audit-log-path=" + p.AuditLog(),
			"--profiling=false"},
	}
	for name, args := range s.controllerArgv(bins) {
		argv[name] = args
	}
	procEnv := map[string][]string{
		authenticatorName: append(append([]string{}, env...),
			"HTTPS_PROXY="+loop(ports.Shim), "https_proxy="+loop(ports.Shim), "SSL_CERT_FILE="+p.PKI("shim-ca.pem")),
	}
	deadline, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// The authenticator starts once the apiserver serves: started earlier,
	// its first aws-auth watch fails and it waits 5 s before retrying. So do
	// the controllers, which would otherwise back off too.
	for _, phase := range [][]string{{etcdName, motoName, shimName, apiserverName},
		{authenticatorName, controllerManagerName, schedulerName, kwokName}} {
		for _, name := range phase {
			e := procEnv[name]
			if e == nil {
				e = env
			}
			if _, err := startProcess(p, name, argv[name], e); err != nil {
				return err
			}
		}
		for _, name := range phase {
			if err := s.waitHealthy(deadline, name); err != nil {
				return err
			}
		}
	}
	if err := s.setupMoto(deadline); err != nil {
		return fmt.Errorf("set up moto: %w", err)
	}
	if err := s.syncPermissions(deadline); err != nil {
		return err
	}
	if err := s.probe(deadline); err != nil {
		return fmt.Errorf("authentication chain not working: %w (logs in %s)", err, p.File("logs"))
	}
	if err := s.ensureNodes(deadline); err != nil {
		return err
	}
	if err := s.ensureLifecycle(deadline); err != nil {
		return err
	}
	return writeFile(s.Paths.File("ready"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o600)
}

// refreshShim replaces a shim of another version (GET /__version, e.g. one
// that predates the lifecycle and Lambda answers) with one of this build,
// with the same configuration: the shim keeps nothing but its records and
// registrations.
func (s *Stack) refreshShim(ctx context.Context) error {
	v, err := s.get(ctx, nil, s.ShimURL()+"/__version")
	if (err == nil && strings.TrimSpace(string(v)) == shim.Version) || s.cfg.Self == "" {
		return nil
	}
	s.log.Info("replacing the shim: it answers another version", "version", strings.TrimSpace(string(v)), "want", shim.Version)
	// What other runs registered carries over: their Invoke APIs and the
	// lifecycle actions still pending.
	lam, lamErr := s.LambdaRecord(ctx)
	lc, lcErr := s.Lifecycle(ctx)
	if pr, ok := readProc(s.Paths, shimName); ok && pr.alive() {
		if err := pr.stop(1500 * time.Millisecond); err != nil {
			return err
		}
	}
	if _, err := startProcess(s.Paths, shimName, []string{s.cfg.Self, "shim", "--config", s.Paths.File("shim.json")}, baseEnv()); err != nil {
		return err
	}
	deadline, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.waitHealthy(deadline, shimName); err != nil {
		return err
	}
	if lamErr == nil {
		for _, r := range lam.Registrations {
			if _, err := s.RegisterInvokeAPIFrom(ctx, r.Endpoint, r.Callers, r.Functions...); err != nil {
				s.log.Warn("carry a Lambda registration over to the new shim", "endpoint", r.Endpoint, "err", err)
			}
		}
	}
	if lcErr == nil {
		for _, a := range lc.Actions {
			if a.State != shim.ActionPending {
				continue
			}
			if _, err := s.RegisterLifecycleAction(ctx, shim.LifecycleDetail{LifecycleActionToken: a.Token, AutoScalingGroupName: a.AutoScalingGroupName,
				LifecycleHookName: a.LifecycleHookName, EC2InstanceID: a.InstanceID, LifecycleTransition: a.LifecycleTransition}); err != nil {
				s.log.Warn("carry a lifecycle action over to the new shim", "token", a.Token, "err", err)
			}
		}
	}
	return nil
}

// binaries resolves the executables of every component.
func (s *Stack) binaries() (map[string]string, error) {
	bins := map[string]string{}
	for _, name := range []string{etcdName, authenticatorName, apiserverName, controllerManagerName, schedulerName, kwokName} {
		path := filepath.Join(s.cfg.Parts, name)
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s not built in %q (run localeks/parts/build.sh): %w", name, s.cfg.Parts, err)
		}
		bins[name] = path
	}
	moto, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, fmt.Errorf("moto_server not on PATH (moto 5.2.1 is expected preinstalled): %w", err)
	}
	bins[motoName] = moto
	if s.cfg.Self == "" {
		return nil, errors.New("no localeks binary to run the shim (Config.Self)")
	}
	bins[shimName] = s.cfg.Self
	return bins, nil
}

// stopAll stops recorded processes in a safe order, then any other process
// marked as ours (a leftover whose pidfile was lost).
func (s *Stack) stopAll() error {
	var errs []error
	stop := func(names ...string) {
		done := make(chan error, len(names))
		for _, name := range names {
			go func() {
				pr, ok := readProc(s.Paths, name)
				if !ok || !pr.alive() {
					done <- nil
					return
				}
				s.log.Info("stopping", "component", name, "pid", pr.PID)
				grace := 1500 * time.Millisecond
				if name == authenticatorName {
					grace = 200 * time.Millisecond // it ignores the first SIGTERM
				}
				done <- pr.stop(grace)
			}()
		}
		for range names {
			errs = append(errs, <-done)
		}
	}
	stop(slices.Concat([]string{controllerManagerName, schedulerName, kwokName}, helmComponents)...)
	stop(apiserverName)
	stop(authenticatorName, shimName, motoName)
	stop(etcdName)
	// Leftovers whose pidfiles were lost: the same order, told apart by
	// their command line.
	leftovers := map[int][]proc{}
	for _, pid := range ownedProcesses(s.Paths.Dir) {
		st, err := startTime(pid)
		if err != nil {
			continue
		}
		rank := 1
		switch cmd := processName(pid); {
		case strings.Contains(cmd, apiserverName), strings.Contains(cmd, controllerManagerName),
			strings.Contains(cmd, schedulerName), strings.Contains(cmd, "/"+kwokName+" "):
			rank = 0
		case strings.Contains(cmd, "/"+etcdName+" "):
			rank = 2
		}
		leftovers[rank] = append(leftovers[rank], proc{Name: "leftover", PID: pid, Start: st})
	}
	for rank := range 3 {
		done := make(chan error, len(leftovers[rank]))
		for _, pr := range leftovers[rank] {
			s.log.Info("stopping leftover", "process", processName(pr.PID))
			go func() { done <- pr.stop(500 * time.Millisecond) }()
		}
		for range leftovers[rank] {
			errs = append(errs, <-done)
		}
	}
	for _, name := range slices.Concat(components, helmComponents) {
		_ = os.Remove(s.Paths.PID(name))
	}
	return errors.Join(errs...)
}

// ownedProcesses lists live processes marked as started by the stack in dir.
func ownedProcesses(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || zombie(pid) {
			continue
		}
		if ownedBy(pid, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// choosePorts keeps the recorded ports where they are free and picks new ones
// otherwise. The authenticator's fixed health port must be free.
func (s *Stack) choosePorts() error {
	if pids := listeners(authenticatorHealthPort); len(pids) > 0 {
		return fmt.Errorf("port %d (aws-iam-authenticator health, fixed) is held by %s: stop it, or the stack cannot start",
			authenticatorHealthPort, processName(pids[0]))
	}
	used := map[int]bool{authenticatorHealthPort: true}
	for _, port := range []*int{&s.Ports.Etcd, &s.Ports.EtcdPeer, &s.Ports.APIServer, &s.Ports.Authenticator, &s.Ports.Moto, &s.Ports.Shim,
		&s.Ports.ControllerManager, &s.Ports.Scheduler, &s.Ports.Kwok} {
		if *port != 0 && !used[*port] && portFree(*port) {
			used[*port] = true
			continue
		}
		for {
			p, err := freePort()
			if err != nil {
				return err
			}
			if !used[p] {
				*port = p
				used[p] = true
				break
			}
		}
	}
	b, err := json.MarshalIndent(s.Ports, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(s.Paths.File("ports.json"), b, 0o600)
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHealthy polls a component until its health check passes, failing early
// when the process died.
func (s *Stack) waitHealthy(ctx context.Context, name string) error {
	pr, _ := readProc(s.Paths, name)
	for {
		err := s.check(ctx, name)
		if err == nil {
			return nil
		}
		if !pr.alive() {
			return fmt.Errorf("%s exited during start-up:\n%s", name, tail(s.Paths.Log(name), 15))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w (last check: %w)\n%s", name, ctx.Err(), err, tail(s.Paths.Log(name), 15))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// baseEnv is the environment of every process the stack starts: the caller's,
// without anything that could point AWS or Kubernetes clients elsewhere, plus
// the IMDS guard and the region.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch uk := strings.ToUpper(k); {
		case strings.HasPrefix(uk, "AWS_"), uk == "HTTPS_PROXY", uk == "HTTP_PROXY", uk == "NO_PROXY", uk == "ALL_PROXY",
			uk == "SSL_CERT_FILE", uk == "SSL_CERT_DIR", uk == "KUBECONFIG", uk == ownerVar:
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT="+IMDSGuard,
		// Also disabled where the SDK honours it: the authenticator asks IMDS
		// for its region at start-up and would otherwise retry for seconds.
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_REGION="+Region,
		"AWS_DEFAULT_REGION="+Region,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path) //nolint:gosec // G304: a log file of the stack
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the configured permissions.yml
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Paths locates everything in a state directory.
type Paths struct{ Dir string }

// File returns a path in the state directory.
func (p Paths) File(name string) string { return filepath.Join(p.Dir, name) }

// PKI returns a path in the PKI directory.
func (p Paths) PKI(name string) string { return filepath.Join(p.Dir, "pki", name) }

// PID returns the pidfile of a component.
func (p Paths) PID(name string) string { return filepath.Join(p.Dir, "run", name+".pid") }

// Log returns the log file of a component.
func (p Paths) Log(name string) string { return filepath.Join(p.Dir, "logs", name+".log") }

// AdminKubeconfig is a kubeconfig for cluster admin (O=system:masters).
func (p Paths) AdminKubeconfig() string { return filepath.Join(p.Dir, "admin.kubeconfig") }

// AuditLog is the apiserver's audit log (JSON lines, Metadata level).
func (p Paths) AuditLog() string { return filepath.Join(p.Dir, "logs", "audit.log") }

// ShimCA is the CA file that clients of the shim must trust (SSL_CERT_FILE).
func (p Paths) ShimCA() string { return p.PKI("shim-ca.pem") }

// WithAPIServerStopped stops the kube-apiserver, runs fn, and starts the
// apiserver again with the same flags (etcd keeps the objects), holding the
// stack's lock throughout so that no concurrent Up replaces the stack. The
// restart also happens when fn exits through runtime.Goexit (t.Fatal).
func (s *Stack) WithAPIServerStopped(ctx context.Context, fn func() error) (err error) {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	pr, ok := readProc(s.Paths, apiserverName)
	if !ok || !pr.alive() {
		return errors.New("kube-apiserver is not running")
	}
	if err := pr.stop(1500 * time.Millisecond); err != nil {
		return err
	}
	s.log.Info("stopped kube-apiserver", "pid", pr.PID)
	defer func() {
		restart := func() error {
			if _, err := startProcess(s.Paths, apiserverName, pr.Args, baseEnv()); err != nil {
				return err
			}
			deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
			defer cancel()
			return s.waitHealthy(deadline, apiserverName)
		}
		if rerr := restart(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restart kube-apiserver: %w", rerr))
			return
		}
		s.log.Info("restarted kube-apiserver")
	}()
	return fn()
}
