// Package shim is a loopback HTTPS-intercepting proxy that puts real AWS host
// names in front of moto_server and covers the gaps between moto and what the
// aws-iam-authenticator and the function expect from STS and EKS.
//
// Clients reach it through HTTPS_PROXY and trust its CA through SSL_CERT_FILE.
// It accepts CONNECT only for *.amazonaws.com, terminates TLS with a per-host
// leaf certificate from its own CA, and forwards each request to moto_server
// keeping the Host header. On the way it
//   - copies the signature of a presigned request into an Authorization
//     header, because moto identifies the caller only from that header;
//   - appends ContentType=JSON to query-protocol requests that accept JSON,
//     because moto answers JSON only then;
//   - rewrites the endpoint and CA of EKS DescribeCluster responses to the
//     local kube-apiserver's, because moto invents random ones.
//
// It counts the requests it forwards per AWS service, so tests can prove that
// a warm invocation made none: GET /__counts, POST /__counts/reset. And it
// plays faults and a trust-policy check that moto lacks, switched by tests:
// GET and POST /__faults (see Faults). It answers CodePipeline's
// PutJobSuccessResult and PutJobFailureResult, which moto lacks, and
// records them: GET /__codepipeline (codepipeline.go). It answers Auto
// Scaling's CompleteLifecycleAction and RecordLifecycleActionHeartbeat
// against lifecycle actions registered by whoever plays the group, and
// records them: /__lifecycle (lifecycle.go). It forwards Lambda Invoke to
// a registered Invoke API on loopback, so that a function can invoke
// itself: /__lambda (lambda.go).
package shim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version names what this shim answers, at GET /__version: a stack whose
// shim answers another is given one of this build (stack.Up).
const Version = "lifecycle-timeout-3"

// Cluster is what DescribeCluster answers for one cluster name.
type Cluster struct {
	Endpoint string `json:"endpoint"`
	// CAData is the base64 of the PEM CA bundle, as EKS returns it.
	CAData string `json:"caData"`
}

// Config is the shim's configuration, written by the stack as JSON.
type Config struct {
	// Listen is the loopback address of the proxy, e.g. 127.0.0.1:4566.
	Listen string `json:"listen"`
	// Upstream is moto_server's base URL, e.g. http://127.0.0.1:5000.
	Upstream string `json:"upstream"`
	// CACert and CAKey are PEM files of the CA that signs per-host leaves.
	CACert string `json:"caCert"`
	CAKey  string `json:"caKey"`
	// Clusters maps a cluster name to its DescribeCluster rewrite; the entry
	// "*" applies to every other name.
	Clusters map[string]Cluster `json:"clusters"`
}

// Counts maps an AWS service to the number of requests forwarded for it.
// Requests signed in an Authorization header (SDK clients such as the
// function) count under the service name, e.g. "eks"; replayed presigned URLs
// (the authenticator verifying a token) count under "<service>:presigned".
// Each request also counts under the same key suffixed with "@<access key
// ID>" of its signer, so that a test can count one client's requests on a
// shared shim.
type Counts map[string]int

// Fault modes of an AWS service (Faults.STS, Faults.EKS, ...).
const (
	// Freeze leaves requests unanswered until the client gives up: an
	// endpoint that accepts connections and never answers.
	Freeze = "freeze"
	// FreezeConnect leaves the proxy's CONNECT unanswered: an endpoint the
	// proxy cannot reach. It holds every client, the authenticator too.
	FreezeConnect = "freeze-connect"
	// Close closes the connection without an answer: an endpoint that
	// refuses or resets connections.
	Close = "close"
)

// Faults are switches for tests. Freeze and Close act only on requests
// signed in an Authorization header (SDK clients such as the function): the
// authenticator's replays of presigned tokens still reach STS, as EKS's own
// path to STS does when only the function's path to AWS is broken.
type Faults struct {
	STS         string `json:"sts,omitempty"`
	EKS         string `json:"eks,omitempty"`
	AutoScaling string `json:"autoscaling,omitempty"`
	EC2         string `json:"ec2,omitempty"`
	Lambda      string `json:"lambda,omitempty"`
	// ExternalIDs maps a role ARN to the external ID its trust policy
	// demands (an sts:ExternalId condition, which moto does not enforce):
	// AssumeRole of that role with another or no external ID is answered
	// AccessDenied, naming the caller, as STS does.
	ExternalIDs map[string]string `json:"externalIds,omitempty"`
}

func (f Faults) of(service string) string {
	switch service {
	case "sts":
		return f.STS
	case "eks":
		return f.EKS
	case "autoscaling":
		return f.AutoScaling
	case "ec2":
		return f.EC2
	case "lambda":
		return f.Lambda
	}
	return ""
}

func (f Faults) check() error {
	for _, mode := range []string{f.STS, f.EKS, f.AutoScaling, f.EC2, f.Lambda} {
		switch mode {
		case "", Freeze, FreezeConnect, Close:
		default:
			return fmt.Errorf("fault %q: want %q, %q, %q or none", mode, Freeze, FreezeConnect, Close)
		}
	}
	return nil
}

// Server is a running shim.
type Server struct {
	cfg      Config
	upstream *url.URL
	certs    *leafCache
	client   *http.Client
	tunnels  *connListener
	inner    *http.Server
	outer    *http.Server

	mu     sync.Mutex
	counts Counts
	faults Faults
	jobs   jobBook
	// lifecycle and lambda have locks of their own.
	lifecycle lifecycleBook
	lambda    lambdaBook
	// stop ends frozen requests when the shim shuts down.
	stop chan struct{}
}

// New builds a shim from cfg. It does not listen yet.
func New(cfg Config) (*Server, error) {
	up, err := url.Parse(cfg.Upstream)
	if err != nil || up.Scheme != "http" || !isLoopback(up.Hostname()) {
		return nil, fmt.Errorf("upstream %q: want an http URL on loopback", cfg.Upstream)
	}
	certs, err := newLeafCache(cfg.CACert, cfg.CAKey)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		upstream: up,
		certs:    certs,
		client: &http.Client{
			// Never follow redirects or use a proxy: moto is on loopback.
			Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       30 * time.Second,
		},
		tunnels: newConnListener(),
		counts:  Counts{},
		stop:    make(chan struct{}),
	}
	s.inner = &http.Server{Handler: http.HandlerFunc(s.forward), ReadHeaderTimeout: 10 * time.Second}
	s.outer = &http.Server{Handler: http.HandlerFunc(s.front), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Serve listens on cfg.Listen and serves until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	if host, _, err := net.SplitHostPort(s.cfg.Listen); err != nil || !isLoopback(host) {
		return fmt.Errorf("listen address %q: want loopback", s.cfg.Listen)
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx is done.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	go func() { _ = s.inner.Serve(s.tunnels) }()
	go func() {
		<-ctx.Done()
		close(s.stop)
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.outer.Shutdown(shut)
		_ = s.inner.Shutdown(shut)
	}()
	if err := s.outer.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Counts returns a copy of the request counts.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(Counts, len(s.counts))
	for k, v := range s.counts {
		c[k] = v
	}
	return c
}

// front handles what arrives on the proxy port: CONNECT tunnels for AWS
// hosts, and the shim's own small API.
func (s *Server) front(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		s.connect(w, r)
	case r.URL.IsAbs():
		http.Error(w, "localeks shim: only HTTPS via CONNECT to *.amazonaws.com is proxied", http.StatusForbidden)
	case r.URL.Path == "/__health":
		_, _ = io.WriteString(w, "ok\n")
	case r.URL.Path == "/__version":
		_, _ = io.WriteString(w, Version+"\n")
	case strings.HasPrefix(r.URL.Path, "/__codepipeline") && s.codepipelineAPI(w, r):
	case strings.HasPrefix(r.URL.Path, "/__lifecycle") && s.lifecycleAPI(w, r):
	case strings.HasPrefix(r.URL.Path, "/__lambda") && s.lambdaAPI(w, r):
	case r.URL.Path == "/__counts" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Counts())
	case r.URL.Path == "/__counts/reset" && r.Method == http.MethodPost:
		s.mu.Lock()
		s.counts = Counts{}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/__faults" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Faults())
	case r.URL.Path == "/__faults" && r.Method == http.MethodPost:
		var f Faults
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			http.Error(w, "localeks shim: faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := f.check(); err != nil {
			http.Error(w, "localeks shim: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.SetFaults(f)
		slog.Info("faults set", "sts", f.STS, "eks", f.EKS, "autoscaling", f.AutoScaling, "ec2", f.EC2, "lambda", f.Lambda, "externalIds", len(f.ExternalIDs))
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// Faults returns the faults in force.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// SetFaults replaces the faults in force.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// hang holds a request unanswered until its client gives up or the shim
// stops.
func (s *Server) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.stop:
	}
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != "443" || !strings.HasSuffix(host, ".amazonaws.com") {
		slog.Warn("refused connect", "host", r.Host)
		http.Error(w, "localeks shim: CONNECT only to *.amazonaws.com:443", http.StatusForbidden)
		return
	}
	if s.Faults().of(serviceOf(host)) == FreezeConnect {
		slog.Info("fault: connect left unanswered", "host", host)
		s.hang(r)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "hijack unsupported", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		slog.Error("hijack", "err", err)
		return
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		_ = conn.Close()
		return
	}
	raw := conn
	if n := rw.Reader.Buffered(); n > 0 {
		// The client may have pipelined its ClientHello after CONNECT.
		buf, _ := rw.Peek(n)
		raw = &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(buf)), conn)}
	}
	tlsConn := tls.Server(raw, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" {
				name = host
			}
			if !strings.HasSuffix(name, ".amazonaws.com") {
				return nil, fmt.Errorf("server name %q is not an AWS host", name)
			}
			return s.certs.get(name)
		},
	})
	s.tunnels.push(tlsConn)
}

// forward handles one request that arrived inside a CONNECT tunnel.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	service := serviceOf(r.Host)
	q := r.URL.Query()
	presigned := q.Get("X-Amz-Signature") != ""
	if presigned && r.Header.Get("Authorization") == "" {
		// moto reads the caller's access key only from this header.
		r.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
			q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature")))
		if tok := q.Get("X-Amz-Security-Token"); tok != "" && r.Header.Get("X-Amz-Security-Token") == "" {
			r.Header.Set("X-Amz-Security-Token", tok)
		}
	}
	rawQuery := r.URL.RawQuery
	if q.Get("Action") != "" && q.Get("ContentType") == "" && strings.Contains(r.Header.Get("Accept"), "application/json") {
		// A query-protocol API (STS): moto answers JSON only when asked this way.
		rawQuery += "&ContentType=JSON"
	}
	s.count(service, presigned, accessKeyID(r.Header.Get("Authorization")))
	if !presigned && s.fault(w, r, service) {
		return
	}
	if service == "codepipeline" {
		s.codepipeline(w, r) // moto lacks the job-worker answers
		return
	}
	if service == "autoscaling" && s.autoscaling(w, r) {
		return // moto lacks the lifecycle actions
	}
	if service == "lambda" && s.lambdaInvoke(w, r) {
		return // moto would run the function in Docker
	}

	// The upstream is moto on loopback, checked in New; only path and query
	// come from the client.
	out, err := http.NewRequestWithContext(r.Context(), r.Method, s.upstream.String()+r.URL.Path, r.Body) //nolint:gosec // G704: see above
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.URL.RawQuery = rawQuery
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	for k, vs := range r.Header {
		if hopByHop(k) || strings.EqualFold(k, "Accept-Encoding") {
			continue
		}
		out.Header[k] = vs
	}
	resp, err := s.client.Do(out) //nolint:gosec // G704: loopback upstream only
	if err != nil {
		slog.Error("forward to moto", "service", service, "path", r.URL.Path, "err", err)
		http.Error(w, "localeks shim: moto unreachable", http.StatusBadGateway)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		http.Error(w, "localeks shim: read moto response", http.StatusBadGateway)
		return
	}
	if service == "eks" && r.Method == http.MethodGet && resp.StatusCode == http.StatusOK && strings.HasPrefix(r.URL.Path, "/clusters/") {
		if b, err := s.rewriteCluster(body); err != nil {
			slog.Error("rewrite describe cluster", "err", err)
		} else {
			body = b
		}
	}
	for k, vs := range resp.Header {
		if hopByHop(k) || strings.EqualFold(k, "Content-Length") {
			continue
		}
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
	slog.Info("forwarded", "service", service, "method", r.Method, "path", r.URL.Path, "presigned", presigned, "status", resp.StatusCode)
}

// fault plays the fault in force for service on a client's request, and
// says whether it answered (or left unanswered) the request.
func (s *Server) fault(w http.ResponseWriter, r *http.Request, service string) bool {
	f := s.Faults()
	switch f.of(service) {
	case Freeze:
		slog.Info("fault: request left unanswered", "service", service, "path", r.URL.Path)
		s.hang(r)
		return true
	case Close:
		slog.Info("fault: connection closed", "service", service, "path", r.URL.Path)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler) // closes the connection too
	}
	if service == "sts" && len(f.ExternalIDs) > 0 && r.Method == http.MethodPost {
		return s.checkExternalID(w, r, f.ExternalIDs)
	}
	return false
}

// checkExternalID answers AccessDenied, as STS does, to an AssumeRole whose
// role demands an external ID the request does not carry. It leaves the
// request's body readable for forwarding.
func (s *Server) checkExternalID(w http.ResponseWriter, r *http.Request, want map[string]string) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "localeks shim: read request", http.StatusBadRequest)
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "AssumeRole" {
		return false
	}
	role := form.Get("RoleArn")
	id, ok := want[role]
	if !ok || form.Get("ExternalId") == id {
		return false
	}
	caller := s.callerARN(r)
	slog.Info("fault: external ID does not match", "role", role, "caller", caller)
	var msg strings.Builder
	_ = xml.EscapeText(&msg, []byte(fmt.Sprintf("User: %s is not authorized to perform: sts:AssumeRole on resource: %s", caller, role)))
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusForbidden)
	_, _ = fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>`+
		`<Code>AccessDenied</Code><Message>%s</Message></Error><RequestId>localeks-shim</RequestId></ErrorResponse>`, msg.String())
	return true
}

// callerARN asks moto who signed r, as STS names the caller in a refusal.
func (s *Server) callerARN(r *http.Request) string {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, s.upstream.String()+"/",
		strings.NewReader("Action=GetCallerIdentity&Version=2011-06-15"))
	if err != nil {
		return "unknown"
	}
	req.Host = r.Host
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, k := range []string{"Authorization", "X-Amz-Security-Token", "X-Amz-Date"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.client.Do(req) //nolint:gosec // G704: loopback upstream only
	if err != nil {
		return "unknown"
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		ARN string `xml:"GetCallerIdentityResult>Arn"`
	}
	if err := xml.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil || out.ARN == "" {
		return "unknown"
	}
	return out.ARN
}

// rewriteCluster points a DescribeCluster answer at the local apiserver. It
// keeps every other field as moto wrote it.
func (s *Server) rewriteCluster(body []byte) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	raw, ok := doc["cluster"]
	if !ok {
		return body, nil
	}
	var cluster map[string]any
	if err := json.Unmarshal(raw, &cluster); err != nil {
		return nil, fmt.Errorf("decode cluster: %w", err)
	}
	if cluster == nil {
		return body, nil
	}
	name, _ := cluster["name"].(string)
	c, ok := s.cfg.Clusters[name]
	if !ok {
		c, ok = s.cfg.Clusters["*"]
	}
	if !ok {
		return body, nil
	}
	cluster["endpoint"] = c.Endpoint
	cluster["certificateAuthority"] = map[string]any{"data": c.CAData}
	b, err := json.Marshal(cluster)
	if err != nil {
		return nil, err
	}
	doc["cluster"] = b
	return json.Marshal(doc)
}

func (s *Server) count(service string, presigned bool, keyID string) {
	key := service
	if presigned {
		key += ":presigned"
	}
	s.mu.Lock()
	s.counts[key]++
	if keyID != "" {
		s.counts[key+"@"+keyID]++
	}
	s.mu.Unlock()
}

// accessKeyID reads the signer's access key ID from a SigV4 Authorization
// header: "AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...".
func accessKeyID(authorization string) string {
	_, cred, ok := strings.Cut(authorization, "Credential=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(cred, "/")
	return id
}

// serviceOf returns the service part of an AWS host name:
// sts.us-east-1.amazonaws.com -> sts.
func serviceOf(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	service, _, _ := strings.Cut(host, ".")
	return service
}

func hopByHop(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// prefixConn replays bytes already buffered by the CONNECT reader.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands tunnelled TLS connections to an http.Server.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
