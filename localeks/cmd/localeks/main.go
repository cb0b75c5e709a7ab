// Command localeks runs the local EKS replica and invokes the functions'
// bootstraps against it through AWS's Lambda Runtime Interface Emulator.
//
//	localeks up        start the stack (no-op when it is healthy)
//	localeks down      stop it (the Helm parts too)
//	localeks status    say what runs
//	localeks env       print shell exports for the function and kubectl
//	localeks invoke [--helm] EVENT_FILE|-
//	                   invoke the bootstrap once; the response on stdout, or
//	                   the error payload and exit status 1
//	localeks cfn [--helm] EVENT_FILE
//	                   play CloudFormation for a custom-resource request: its
//	                   ResponseURL becomes a presigned moto S3 PUT URL, and the
//	                   body the function PUT there is printed; exit status 0
//	                   for SUCCESS, 1 for FAILED
//	localeks lifecycle EVENT_FILE|-
//	                   run the lifecycle function (./cmd/lifecycle) for an
//	                   Auto Scaling, EC2 or Health event: the replica plays
//	                   the group that sent a lifecycle action event, serves
//	                   the function's Invoke of itself, prints the first
//	                   response and waits for its continuations
//	localeks serve [--port 9000] [--helm-bootstrap PATH] [--lifecycle-bootstrap PATH]
//	                   keep the functions warm behind the Lambda Invoke API
//	                   on 127.0.0.1 until interrupted: lambda-eks (also
//	                   "function"), lambda-eks-helm, lambda-eks-lifecycle
//	localeks route EVENT_FILE|-
//	                   print which function an event is for and how it is
//	                   delivered: lambda-eks|lambda-eks-helm|lambda-eks-lifecycle
//	                   invoke|cfn|codepipeline|lifecycle
//
// --helm runs the Helm function (./cmd/helm) as its own role, mapped in
// aws-auth to the group lambda-eks-helm, and first starts the replica's
// Helm parts: a demo chart served from https://127.0.0.1:8879/charts and
// from the OCI registry 127.0.0.1:5000 (--registry, LOCALEKS_REGISTRY: the
// binary localeks/parts/registry/build.sh builds).
//
// The function runs under AWS's Lambda Runtime Interface Emulator
// (aws-lambda-rie, built into the parts directory), as in `sam local invoke`.
//
// Progress goes to stderr, results to stdout. Configuration comes from flags
// or the environment: LOCALEKS_PARTS (the parts bin dir, from
// localeks/parts/build.sh), LOCALEKS_PERMISSIONS (the project's
// permissions.yml), LOCALEKS_DIR (state dir, default
// ${LAMBDA_EKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks}/stack).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lambda-eks/lambda-eks/localeks/lambdart"
	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// fnSpec is what tells the functions apart when they run on the replica.
type fnSpec struct {
	// name is the function's name, as `aws lambda invoke --function-name`
	// gives it to serve.
	name          string
	role, session string
	memory        int
	// env is added to the replica's function environment.
	env []string
	// vars are passed from the caller's environment to the function, so
	// that e.g. `IMAGE=nginx:1.28 ./local.sh` works.
	vars []string
}

var (
	mainFunction = fnSpec{name: "lambda-eks", role: stack.ExecRole, session: stack.SessionName, memory: 128,
		vars: []string{"CLUSTER_NAME", "CLUSTER_REGION", "NAMESPACE", "NAME", "IMAGE", "REPLICAS",
			"DEFAULT_ACTION", "ROLE_ARN", "EXTERNAL_ID", "ROLE_SESSION_NAME"}}
	// helmFunction runs as its own role, mapped to its own group, with the
	// template's memory size, and reaches the replica's registry with its
	// credentials.
	helmFunction = fnSpec{name: "lambda-eks-helm", role: stack.HelmRole, session: stack.HelmSessionName, memory: 512,
		env:  stack.HelmFunctionEnv(),
		vars: []string{"CLUSTER_NAME", "CLUSTER_REGION", "NAMESPACE", "ROLE_ARN", "EXTERNAL_ID", "ROLE_SESSION_NAME"}}
	// lifecycleFunction drains nodes on Auto Scaling, EC2 and Health
	// events, as its own role, mapped to the username and group
	// lambda-eks-lifecycle.
	lifecycleFunction = fnSpec{name: "lambda-eks-lifecycle", role: stack.LifecycleRole, session: stack.LifecycleSessionName, memory: 128,
		vars: []string{"CLUSTER_NAME", "CLUSTER_REGION", "ROLE_ARN", "EXTERNAL_ID", "ROLE_SESSION_NAME",
			"DRAIN_TIMEOUT", "LAUNCH_TIMEOUT", "POLL_INTERVAL", "TERMINATE_TIMEOUT_RESULT", "LAUNCH_TIMEOUT_RESULT",
			"EMPTYDIR_DATA", "REBALANCE_DRAIN", "MANAGED_NODES"}}
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	var err error
	switch args[0] {
	case "up":
		err = up(ctx, args[1:])
	case "down":
		err = down(ctx, args[1:])
	case "status":
		return status(ctx, args[1:])
	case "env":
		err = env(ctx, args[1:])
	case "invoke":
		return invoke(ctx, args[1:])
	case "cfn":
		return cfnInvoke(ctx, args[1:])
	case "codepipeline":
		return codepipelineInvoke(ctx, args[1:])
	case "lifecycle":
		return lifecycleInvoke(ctx, args[1:])
	case "serve":
		err = serve(ctx, args[1:])
	case "route":
		return routeCommand(args[1:])
	case "shim":
		err = runShim(ctx, args[1:])
	case "charts":
		err = charts(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		usage()
		return 0
	default:
		usage()
		return 2
	}
	if err != nil {
		slog.Error("localeks failed", "command", args[0], "err", err)
		return 1
	}
	return 0
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: localeks up|down|status|env|invoke [--helm] EVENT_FILE|-|cfn [--helm] EVENT_FILE|codepipeline EVENT_FILE|lifecycle EVENT_FILE|-|serve [--port N] [--helm-bootstrap PATH] [--lifecycle-bootstrap PATH]|route EVENT_FILE|-   (see go doc ./cmd/localeks)`)
}

// stackFlags are shared by the commands that may start the stack.
type stackFlags struct {
	dir, parts, permissions string
}

func (sf *stackFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.dir, "dir", stack.DefaultDir(), "state `directory`")
	fs.StringVar(&sf.parts, "parts", os.Getenv("LOCALEKS_PARTS"), "`directory` of the parts: kube-apiserver, etcd, aws-iam-authenticator, aws-lambda-rie, ... (localeks/parts/build.sh)")
	fs.StringVar(&sf.permissions, "permissions", os.Getenv("LOCALEKS_PERMISSIONS"), "the project's permissions.yml")
}

func (sf *stackFlags) config() (stack.Config, error) {
	self, err := os.Executable()
	if err != nil {
		return stack.Config{}, err
	}
	return stack.Config{Dir: sf.dir, Parts: sf.parts, Self: self, Permissions: sf.permissions}, nil
}

// stackConfig parses the arguments of a command that has only the stack's
// flags, and returns the stack's configuration.
func stackConfig(command string, args []string) (stack.Config, error) {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	var sf stackFlags
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return stack.Config{}, err
	}
	return sf.config()
}

// functionFlags are shared by the commands that start a function: the
// stack's flags and how to run the bootstrap.
type functionFlags struct {
	stackFlags
	bootstrap     string
	timeout       time.Duration
	helm          bool
	lifecycle     bool
	registry      string
	role, session string
	extra         multiFlag
}

// helmTimeout is the default --timeout of the Helm function: a wait for a
// rollout takes longer than an apply. lifecycleTimeout is the lifecycle
// function's: a drain that takes longer continues in a new invocation.
const (
	helmTimeout      = 60 * time.Second
	lifecycleTimeout = 60 * time.Second
)

// register adds the flags to fs, with timeout as the default of --timeout.
func (ff *functionFlags) register(fs *flag.FlagSet, timeout time.Duration) {
	ff.stackFlags.register(fs)
	fs.StringVar(&ff.bootstrap, "bootstrap", "bootstrap", "the function binary (built by build-handler.sh for this machine's arch)")
	fs.DurationVar(&ff.timeout, "timeout", timeout, "invocation timeout (the function's Lambda Timeout; the Helm function's at least 60s unless given)")
	fs.BoolVar(&ff.helm, "helm", false, "the bootstrap is the Helm function (./cmd/helm): it runs as its own role, and the replica serves the demo chart")
	fs.StringVar(&ff.registry, "registry", os.Getenv("LOCALEKS_REGISTRY"), "the OCI registry `binary` the replica serves charts from (localeks/parts/registry/build.sh registry)")
	fs.StringVar(&ff.role, "role", "", "execution role the function runs as (default: the function's own)")
	fs.StringVar(&ff.session, "session", "", "role session name (default: the function's own)")
	fs.Var(&ff.extra, "env", "extra `KEY=VALUE` for the function (repeatable)")
}

// parsed applies the defaults that depend on other flags, once fs is parsed.
func (ff *functionFlags) parsed(fs *flag.FlagSet) {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "timeout" })
	if ff.helm && !given && ff.timeout < helmTimeout {
		ff.timeout = helmTimeout
	}
	if ff.lifecycle && !given && ff.timeout < lifecycleTimeout {
		ff.timeout = lifecycleTimeout
	}
}

// up starts the stack unless it runs, and with helm the Helm parts (chart
// repository, registry, the Helm role's mapping) unless they run.
func (ff *functionFlags) up(ctx context.Context, helm bool) (*stack.Stack, stack.Config, error) {
	cfg, err := ff.config()
	if err != nil {
		return nil, cfg, err
	}
	if cfg.Parts == "" {
		return nil, cfg, errors.New("no parts directory (--parts, LOCALEKS_PARTS): run localeks/parts/build.sh")
	}
	s, err := stack.Up(ctx, cfg)
	if err != nil {
		return nil, cfg, err
	}
	if helm {
		if err := s.UpHelm(ctx, ff.registry); err != nil {
			return nil, cfg, fmt.Errorf("start the Helm parts: %w", err)
		}
	}
	return s, cfg, nil
}

// startFunction starts bootstrap under aws-lambda-rie as a session of the
// function's role (or --role), with the replica's environment.
func (ff *functionFlags) startFunction(ctx context.Context, s *stack.Stack, cfg stack.Config, spec fnSpec, bootstrap string) (*lambdart.Function, error) {
	fn, _, err := ff.startFunctionAs(ctx, s, cfg, spec, bootstrap)
	return fn, err
}

// startFunctionAs is startFunction that also returns the access key ID the
// function signs its AWS requests with.
func (ff *functionFlags) startFunctionAs(ctx context.Context, s *stack.Stack, cfg stack.Config, spec fnSpec, bootstrap string) (*lambdart.Function, string, error) {
	role, session := spec.role, spec.session
	if ff.role != "" {
		role = ff.role
	}
	if ff.session != "" {
		session = ff.session
	}
	creds, err := s.AssumeRole(ctx, role, session)
	if err != nil {
		return nil, "", err
	}
	fnEnv := append(s.FunctionEnv(creds), spec.env...)
	for _, k := range spec.vars {
		if v, ok := os.LookupEnv(k); ok {
			fnEnv = append(fnEnv, k+"="+v)
		}
	}
	fnEnv = append(fnEnv, ff.extra...)
	fn, err := lambdart.Start(ctx, bootstrap, fnEnv, ff.timeout, lambdart.WithName(spec.name), lambdart.WithMemory(spec.memory),
		lambdart.WithLogOutput(os.Stderr), lambdart.WithRIE(filepath.Join(cfg.Parts, "aws-lambda-rie")))
	return fn, creds.AccessKeyID, err
}

// start starts the stack unless it runs, and the one function of
// --bootstrap (--helm: the Helm function). It returns the function and the
// stack.
func (ff *functionFlags) start(ctx context.Context) (*lambdart.Function, *stack.Stack, error) {
	spec := mainFunction
	if ff.helm {
		spec = helmFunction
	}
	s, cfg, err := ff.up(ctx, ff.helm)
	if err != nil {
		return nil, nil, err
	}
	fn, err := ff.startFunction(ctx, s, cfg, spec, ff.bootstrap)
	return fn, s, err
}

func up(ctx context.Context, args []string) error {
	cfg, err := stackConfig("up", args)
	if err != nil {
		return err
	}
	s, err := stack.Up(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println(s.APIServerURL())
	return nil
}

func down(ctx context.Context, args []string) error {
	cfg, err := stackConfig("down", args)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := stack.Down(ctx, cfg); err != nil {
		return err
	}
	slog.Info("stack stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// status prints one line per component; exit status 0 only when all are
// healthy, 3 when no stack was ever started.
func status(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var sf stackFlags
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := sf.config()
	if err != nil {
		slog.Error("status", "err", err)
		return 1
	}
	sts, err := stack.Status(ctx, cfg)
	if err != nil {
		fmt.Println("stopped:", err)
		return 3
	}
	code := 0
	for _, st := range sts {
		state := "healthy"
		switch {
		case !st.Running:
			state, code = "stopped", 1
		case !st.Healthy:
			state, code = "unhealthy: "+st.Detail, 1
		}
		fmt.Printf("%-24s pid %-7d %s\n", st.Name, st.PID, state)
	}
	if s, err := stack.Open(cfg); err == nil {
		fmt.Printf("%-24s %s\n", "apiserver", s.APIServerURL())
		fmt.Printf("%-24s %s\n", "admin kubeconfig", s.Paths.AdminKubeconfig())
		fmt.Printf("%-24s %s\n", "logs", s.Paths.File("logs"))
	}
	return code
}

// env prints shell exports: KUBECONFIG for admin kubectl, and the function's
// environment with fresh session credentials of the execution role.
func env(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("env", flag.ContinueOnError)
	var sf stackFlags
	sf.register(fs)
	role := fs.String("role", stack.ExecRole, "role to assume for the function's credentials")
	session := fs.String("session", stack.SessionName, "role session name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := sf.config()
	if err != nil {
		return err
	}
	s, err := stack.Open(cfg)
	if err != nil {
		return err
	}
	creds, err := s.AssumeRole(ctx, *role, *session)
	if err != nil {
		return err
	}
	fmt.Printf("export KUBECONFIG=%s\n", shellQuote(s.Paths.AdminKubeconfig()))
	for _, kv := range s.FunctionEnv(creds) {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Printf("export %s=%s\n", k, shellQuote(v))
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// invoke runs the bootstrap once against the replica, starting the stack if
// needed. Exit status: 0 success, 1 function error, 2 usage, 4 harness failure.
func invoke(ctx context.Context, args []string) int {
	c := eventCommand{name: "invoke"}
	if code := c.parse(args, 30*time.Second); code != 0 {
		return code
	}
	fn, _, err := c.start(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer fn.Stop()
	resp, fnErr, took, err := timedInvoke(ctx, fn, c.event)
	if err != nil {
		return c.fail(err)
	}
	if fnErr != nil {
		return functionFailed("invocation failed", fnErr, took.Round(time.Microsecond))
	}
	slog.Info("invocation succeeded", "took", took.Round(time.Microsecond))
	fmt.Println(strings.TrimSpace(string(resp)))
	return 0
}

// eventCommand is invoke or cfn: a command that starts the function and
// invokes it once with an event.
type eventCommand struct {
	functionFlags
	name  string // the command
	file  string // EVENT_FILE, or - for stdin
	event []byte
}

// parse parses args, with timeout as the default of --timeout, and reads the
// event. A nonzero code is the exit status to end with: 2 for usage, 4 when
// the event cannot be read.
// extra registers flags of the command's own.
func (c *eventCommand) parse(args []string, timeout time.Duration, extra ...func(*flag.FlagSet)) (code int) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.register(fs, timeout)
	for _, f := range extra {
		f(fs)
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c.parsed(fs)
	if fs.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "usage: localeks %s [flags] EVENT_FILE|-\n", c.name)
		return 2
	}
	c.file = fs.Arg(0)
	event, err := readEvent(c.file)
	if err != nil {
		return c.fail(err)
	}
	c.event = event
	return 0
}

// fail logs err as the command's failure, and returns the exit status of a
// harness failure.
func (c *eventCommand) fail(err error) int {
	slog.Error(c.name+" failed", "err", err)
	return 4
}

// timedInvoke invokes fn once with payload, and says how long that took.
func timedInvoke(ctx context.Context, fn *lambdart.Function, payload []byte) (resp []byte, fnErr *lambdart.FunctionError, took time.Duration, err error) {
	start := time.Now()
	resp, fnErr, err = fn.Invoke(ctx, payload)
	return resp, fnErr, time.Since(start), err
}

// functionFailed logs the function's error as msg, with the time its
// invocation took, prints the error payload on stdout, and returns the exit
// status of a function error.
func functionFailed(msg string, fnErr *lambdart.FunctionError, took time.Duration) int {
	slog.Info(msg, "errorType", fnErr.Type, "took", took)
	b, _ := json.Marshal(fnErr)
	fmt.Println(string(b))
	return 1
}

func readEvent(name string) ([]byte, error) {
	b, err := readRaw(name)
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("event %s is not valid JSON", name)
	}
	return b, nil
}

// readRaw reads an event file, or stdin for -, up to Lambda's 6 MB.
func readRaw(name string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name) //nolint:gosec // G703: the event file the user names
		if err != nil {
			return nil, fmt.Errorf("read event: %w", err)
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, 6<<20))
	if err != nil {
		return nil, fmt.Errorf("read event: %w", err)
	}
	return b, nil
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return errors.New("want KEY=VALUE")
	}
	*m = append(*m, v)
	return nil
}

// runShim is the shim process the stack starts.
func runShim(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("shim", flag.ContinueOnError)
	path := fs.String("config", "", "shim configuration (JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	var cfg shim.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("decode %s: %w", *path, err)
	}
	srv, err := shim.New(cfg)
	if err != nil {
		return err
	}
	slog.Info("shim listening", "addr", cfg.Listen, "upstream", cfg.Upstream)
	return srv.Serve(ctx)
}
