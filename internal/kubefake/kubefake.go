// Package kubefake is a fake Kubernetes API server for unit tests: a
// loopback TLS server that client-go reaches through its real transport,
// discovery and dynamic client, as it reaches an EKS cluster. It stores
// objects of the kinds it serves, answers discovery for them, and answers
// server-side apply, merge patches, the scale subresource, deletes with
// preconditions and dry runs closely enough for lambda-eks's results (see
// Server). It records every request; a test answers a request itself
// (React), fails it in the client's transport (FailTransport), or changes an
// object as another writer would (Edit).
//
// It is imported only by _test files: `go list -deps .` of the function's
// main package must not list it.
//
// A test of kube, with the client the function builds and a fake clock:
//
//	clock := kubefake.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
//	srv := kubefake.New(t, kubefake.WithClock(clock.Now), kubefake.WithObjects(web))
//	cfg, _ := kube.NewRESTConfig(srv.URL(), srv.CAData(), tokenSource)
//	c, _ := kube.NewForConfig(cfg)
//	srv.React(func(r kubefake.Request) error {
//		if r.Verb == "patch" && r.Name == "bad" {
//			return apierrors.NewForbidden(...) // answered as the API server would
//		}
//		return nil // the fake answers
//	})
//	... c.Apply(ctx, m, opts) ...
//	for _, r := range srv.Requests() { ... r.Verb, r.DryRun, r.Header.Get("Authorization") ... }
//	cur, _ := srv.Get(gvr, "team", "web")
//
// A test of a function's handler connects every target to one server: its
// connector returns kube.NewForConfig(srv.RESTConfig()) (which also carries
// FailTransport's faults), or, through the real connector, a fake
// eks:DescribeCluster answers with srv.URL() and srv.CAData().
package kubefake

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/rest"
)

// Kind is a resource the fake serves.
type Kind struct {
	GroupVersionKind schema.GroupVersionKind
	// Resource is the plural resource name, e.g. "deployments".
	Resource   string
	Namespaced bool
	// Scale says the kind has a scale subresource (spec.replicas).
	Scale bool
}

// GroupVersionResource is k's resource.
func (k Kind) GroupVersionResource() schema.GroupVersionResource {
	return k.GroupVersionKind.GroupVersion().WithResource(k.Resource)
}

// DefaultKinds are the kinds every Server serves: the built-in kinds
// lambda-eks's tests and examples use. A CustomResourceDefinition written to
// the fake adds the kinds it defines, as long as it exists.
var DefaultKinds = []Kind{
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, Resource: "namespaces"},
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, Resource: "configmaps", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, Resource: "secrets", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, Resource: "serviceaccounts", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "Service"}, Resource: "services", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: "pods", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"}, Resource: "persistentvolumeclaims", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Resource: "deployments", Namespaced: true, Scale: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}, Resource: "statefulsets", Namespaced: true, Scale: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}, Resource: "daemonsets", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSet"}, Resource: "replicasets", Namespaced: true, Scale: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}, Resource: "jobs", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"}, Resource: "roles", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}, Resource: "rolebindings", Namespaced: true},
	{GroupVersionKind: schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, Resource: "clusterroles"},
	{GroupVersionKind: schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"}, Resource: "clusterrolebindings"},
	{GroupVersionKind: schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}, Resource: "customresourcedefinitions"},
}

var crdGR = schema.GroupResource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}

// Request is one request the fake received. For a request to an object or
// a list, Verb (get, list, create, update, patch, delete, the RBAC verb),
// Resource and the fields after it are set; for discovery and other paths
// only the HTTP fields are, and Verb is "get".
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte

	Verb        string
	Resource    schema.GroupVersionResource
	Subresource string
	Namespace   string
	Name        string
	// PatchType is a patch's Content-Type: types.ApplyPatchType for a
	// server-side apply, types.MergePatchType, types.StrategicMergePatchType.
	PatchType types.PatchType
	// FieldManager and Force are the query's.
	FieldManager string
	Force        bool
	// DryRun is a dryRun=All request, in the query or a delete's options.
	DryRun bool
}

// IsDiscovery reports whether r read discovery (/api, /apis and below
// them, not an object).
func (r Request) IsDiscovery() bool { return r.Resource.Resource == "" && isDiscoveryPath(r.Path) }

// String is r as a test compares it: "patch(dry) configmaps team/a",
// "get deployments.apps/scale team/web", "get /apis".
func (r Request) String() string {
	if r.Resource.Resource == "" {
		return strings.ToLower(r.Method) + " " + r.Path
	}
	v := r.Verb
	if r.DryRun {
		v += "(dry)"
	}
	res := r.Resource.GroupResource().String()
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	obj := r.Name
	if r.Namespace != "" {
		obj = r.Namespace + "/" + r.Name
	}
	return strings.TrimSpace(v + " " + res + " " + obj)
}

// Reactor sees a request before the fake answers it. A nil error lets the
// fake answer; an error answers the request instead: an API status error
// (apierrors.NewForbidden, NewUnauthorized, NewConflict, ...) with its
// status and code, ErrDropConnection by closing the connection, anything
// else as a 500. A reactor may call the Server's methods (Edit, Get).
type Reactor func(Request) error

// ErrDropConnection is the error a Reactor returns to close the connection
// without an answer: client-go sees EOF. Note that client-go retries a GET that fails
// so ten times, a second apart; Close makes connections fail at once.
var ErrDropConnection = errors.New("kubefake: drop the connection")

// Option configures a Server.
type Option func(*Server)

// WithObjects stores objs before the server starts, as if created by
// someone else; a missing uid or resourceVersion is filled in. Their kinds
// must be served.
func WithObjects(objs ...*unstructured.Unstructured) Option {
	return func(s *Server) { s.initial = append(s.initial, objs...) }
}

// WithKinds serves kinds besides DefaultKinds.
func WithKinds(kinds ...Kind) Option {
	return func(s *Server) { s.kinds = append(s.kinds, kinds...) }
}

// WithClock makes now the fake's time: of managed-fields entries and
// creation timestamps. Share it with the client under test (see Clock).
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// Server is the fake API server. It is safe for concurrent use.
//
// What it does as an API server does:
//   - server-side apply (PATCH application/apply-patch+yaml): creates an
//     absent object; otherwise merges the applied object into the stored one
//     (objects merge recursively, anything else is replaced, null removes)
//     and writes only if that changes it: a new resourceVersion, the
//     generation one higher when spec changed, and the field manager's Apply
//     entry in managedFields set to now. A metadata.resourceVersion in the body is a
//     precondition (409 Conflict when it differs, or the object is gone).
//     Field ownership is not modelled: no field-manager conflicts unless a
//     Reactor returns one.
//   - merge and strategic merge patches: as a JSON merge patch (RFC 7386),
//     with the same resourceVersion precondition, writing only on a change
//     (managedFields: the manager's Update entry).
//   - create, update (resourceVersion precondition), the scale subresource
//     (get and update spec.replicas), delete with uid and resourceVersion
//     preconditions, list with a label selector, and dryRun=All on every
//     write: checked and answered, not stored.
//   - a CustomResourceDefinition written to it is Established at once and
//     serves its kinds until it is deleted (its objects go with it).
//
// It does not check schemas, admission, namespaces' existence or RBAC, and
// does not cascade deletes of namespaces: tests that need those react.
type Server struct {
	srv     *httptest.Server
	now     func() time.Time
	initial []*unstructured.Unstructured

	mu       sync.Mutex
	kinds    []Kind
	crdKinds map[string][]Kind // kinds a CRD (by name) added
	objects  map[objectKey]*unstructured.Unstructured
	rv, uid  int
	requests []Request
	reactors []Reactor
	fail     func(Request) error
}

type objectKey struct {
	group, resource, namespace, name string
}

// New starts a Server on loopback with TLS, stopped when tb's test ends.
func New(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := &Server{now: time.Now, kinds: slices.Clone(DefaultKinds), crdKinds: map[string][]Kind{},
		objects: map[objectKey]*unstructured.Unstructured{}, rv: 100}
	for _, o := range opts {
		o(s)
	}
	for _, obj := range s.initial {
		if err := s.Create(obj); err != nil {
			tb.Fatalf("kubefake: %v", err)
		}
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	// Handshakes that tests fail on purpose (a wrong CA) are not news.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	tb.Cleanup(s.srv.Close)
	return s
}

// URL is the server's https URL, the cluster endpoint.
func (s *Server) URL() string { return s.srv.URL }

// CAData is the PEM of the certificate the server presents, to be trusted
// as the cluster's certificate authority.
func (s *Server) CAData() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// RESTConfig is a client-go configuration that reaches the server, trusting
// its certificate, with no credentials; its transport fails the requests
// FailTransport says to.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{Host: s.URL(), TLSClientConfig: rest.TLSClientConfig{CAData: s.CAData()},
		WrapTransport: s.WrapTransport}
}

// WrapTransport wraps a client's transport so that it fails the requests
// FailTransport says to, before they reach the server. RESTConfig uses it;
// a configuration built otherwise (kube.NewRESTConfig) can chain it after
// its own.
func (s *Server) WrapTransport(rt http.RoundTripper) http.RoundTripper {
	return faultTransport{s: s, next: rt}
}

// FailTransport makes the transports WrapTransport wraps fail each request
// for which fail returns an error, as a transport fails that never reaches
// the server: net/http returns the error in a *url.Error, and the server
// neither sees nor records the request. Use it for what a server cannot
// answer: a refused connect (&net.OpError{Op: "dial", Net: "tcp", Err:
// syscall.ECONNREFUSED}), which client-go does not retry, where
// ErrDropConnection's EOF makes it retry a GET ten times a second apart.
// fail sees the request without its body; nil stops the faults.
func (s *Server) FailTransport(fail func(Request) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

type faultTransport struct {
	s    *Server
	next http.RoundTripper
}

func (t faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.s.mu.Lock()
	fail := t.s.fail
	var req Request
	if fail != nil {
		req = t.s.parse(r, nil)
	}
	t.s.mu.Unlock()
	if fail != nil {
		if err := fail(req); err != nil {
			return nil, err
		}
	}
	return t.next.RoundTrip(r)
}

// TLSConfig trusts the server's certificate, for a client built by hand.
func (s *Server) TLSConfig() *tls.Config {
	return s.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

// Close stops the server: connections to it are refused from then on. It
// is called when the test ends.
func (s *Server) Close() { s.srv.Close() }

// React adds a Reactor; reactors see each request in the order they were
// added, and the first error answers it.
func (s *Server) React(r Reactor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reactors = append(s.reactors, r)
}

// Requests returns the requests received since the start or the last
// ClearRequests, in arrival order (requests in flight together arrive in
// any order).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ClearRequests forgets the requests received so far.
func (s *Server) ClearRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// Get returns a copy of a stored object, or the API's NotFound error.
func (s *Server) Get(gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.objects[objectKey{gvr.Group, gvr.Resource, namespace, name}]
	if !ok {
		return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	return u.DeepCopy(), nil
}

// List returns copies of the stored objects of gvr in namespace (every
// namespace if ""), sorted by namespace and name.
func (s *Server) List(gvr schema.GroupVersionResource, namespace string) []*unstructured.Unstructured {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list(gvr.GroupResource(), namespace, nil)
}

// Create stores obj as another writer would create it (no managed-fields
// entry), filling in a uid and resourceVersion it lacks. An object already
// there is the API's AlreadyExists error.
func (s *Server) Create(obj *unstructured.Unstructured) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.kindOf(obj.GroupVersionKind())
	if !ok {
		return fmt.Errorf("kind %s is not served", obj.GroupVersionKind())
	}
	u, err := normalize(obj.Object)
	if err != nil {
		return err
	}
	key := objectKey{k.GroupVersionKind.Group, k.Resource, u.GetNamespace(), u.GetName()}
	if !k.Namespaced {
		key.namespace = ""
	}
	if _, exists := s.objects[key]; exists {
		return apierrors.NewAlreadyExists(schema.GroupResource{Group: key.group, Resource: key.resource}, key.name)
	}
	if u.GetUID() == "" {
		u.SetUID(s.nextUID())
	}
	if u.GetResourceVersion() == "" {
		u.SetResourceVersion(s.nextRV())
	}
	s.store(key, u)
	return nil
}

// Edit changes a stored object as another writer would: fn changes a copy,
// which is stored with a new resourceVersion (managedFields untouched).
func (s *Server) Edit(gvr schema.GroupVersionResource, namespace, name string, fn func(*unstructured.Unstructured)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := objectKey{gvr.Group, gvr.Resource, namespace, name}
	cur, ok := s.objects[key]
	if !ok {
		return apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	u := cur.DeepCopy()
	fn(u)
	u, err := normalize(u.Object)
	if err != nil {
		return err
	}
	u.SetResourceVersion(s.nextRV())
	s.store(key, u)
	return nil
}

func (s *Server) nextRV() string { s.rv++; return strconv.Itoa(s.rv) }

func (s *Server) nextUID() types.UID { s.uid++; return types.UID(fmt.Sprintf("uid-%d", s.uid)) }

// normalize copies obj through JSON, so that its numbers are int64 or
// float64 as in a decoded request and stored objects compare equal.
func normalize(obj map[string]any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := utiljson.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: out}, nil
}

// Clock is a test's time, for the fake and the client under test alike: it
// moves only when the test advances it or something sleeps on it, so that
// waits, backoffs and "seconds later" cost no real time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d (back, if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Sleep is a sleep on the clock: it advances the clock by d and returns at
// once, or returns ctx's error if ctx has ended. It has the signature of an
// injectable sleep(ctx, d).
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.Advance(d)
	return nil
}
