package kube

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Result says what a request did to one object.
type Result string

// Results of writes and reads.
const (
	Created    Result = "created"
	Configured Result = "configured"
	Unchanged  Result = "unchanged"
	Deleted    Result = "deleted"
	Absent     Result = "absent" // delete or status of an object that does not exist
	Scaled     Result = "scaled"
	Restarted  Result = "restarted"
	Ready      Result = "ready"
	// Progressing is a rollout not complete yet.
	Progressing Result = "progressing"
	// Failed is a rollout past its progress deadline, or a failed Job.
	Failed Result = "failed"
)

// ObjectResult is one line of an invocation's response. The optional fields
// are set only by the actions they belong to, so ensure-nginx's line keeps
// its five fields.
type ObjectResult struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Result     Result `json:"result"`
	// From and To are the replicas before and after a scale.
	From *int32 `json:"from,omitempty"`
	To   *int32 `json:"to,omitempty"`
	// Readiness is set by status, and by a wait.
	Readiness *Readiness `json:"readiness,omitempty"`
}

// Client performs lambda-eks's operations on one cluster. It is built once
// per process and cluster and is safe for concurrent use.
type Client struct {
	cs kubernetes.Interface
	// dyn and mapper serve manifests of any kind. The mapper reads discovery
	// on first use only, so ensure-nginx never pays for it.
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapperWithContext
	now    func() time.Time

	mu sync.Mutex
	// seen holds each object as this process last wrote or read it. A warm
	// apply sends its resourceVersion as a precondition, so that one request
	// both writes and tells whether anything changed.
	seen map[objectKey]seenObject
}

// seenObject is an object's state as last seen: absent, or present with a
// resourceVersion and a fingerprint of its content (for servers, such as
// client-go's fake clientset, that keep no resourceVersions).
type seenObject struct {
	exists          bool
	uid             string
	resourceVersion string
	fingerprint     string
}

func seenOf(obj metav1.Object) (seenObject, error) {
	fp, err := fingerprint(obj)
	if err != nil {
		return seenObject{}, err
	}
	return seenObject{exists: true, uid: string(obj.GetUID()), resourceVersion: obj.GetResourceVersion(), fingerprint: fp}, nil
}

// createdSince says whether now is a new object: there was none before, or
// the one before was deleted and another made in its place (an apply
// preconditioned on a resourceVersion creates a missing object all the same).
func (now seenObject) createdSince(before seenObject) bool {
	return !before.exists || (now.uid != "" && before.uid != "" && now.uid != before.uid)
}

// changedSince says whether now differs from before. An unchanged
// resourceVersion settles it in one comparison; a changed one may be
// bookkeeping only - the API server records a "before-first-apply" field
// manager the second time an object that lambda-eks owned no field of (a
// bare Namespace) is applied - so the content decides.
func (now seenObject) changedSince(before seenObject) bool {
	if now.resourceVersion != "" && now.resourceVersion == before.resourceVersion {
		return false
	}
	return now.fingerprint != before.fingerprint
}

// resultOf says what an apply did, from the object before and after it. A
// dry run's answer keeps the resourceVersion even where it would change
// the object, so there the content alone decides.
func resultOf(before, after seenObject, dryRun bool) Result {
	switch {
	case after.createdSince(before):
		return Created
	case dryRun && after.fingerprint != before.fingerprint:
		return Configured
	case !dryRun && after.changedSince(before):
		return Configured
	}
	return Unchanged
}

// fingerprint hashes an object's content without the fields every write
// touches (resourceVersion, managedFields timestamps).
func fingerprint(obj metav1.Object) (string, error) {
	ro, ok := obj.(runtime.Object)
	if !ok {
		return "", fmt.Errorf("fingerprint: %T is not a runtime.Object", obj)
	}
	cp, ok := ro.DeepCopyObject().(metav1.Object)
	if !ok {
		return "", fmt.Errorf("fingerprint: copy of %T is not a metav1.Object", obj)
	}
	cp.SetResourceVersion("")
	cp.SetManagedFields(nil)
	b, err := json.Marshal(cp)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.Sum256(b)
	return string(sum[:]), nil
}

type objectKey struct {
	resource, namespace, name string
}

// New returns a Client using cs for typed requests, dyn for objects of any
// kind, and mapper to find a kind's resource. dyn and mapper may be nil for
// a client that only ensures Deployments.
func New(cs kubernetes.Interface, dyn dynamic.Interface, mapper meta.ResettableRESTMapperWithContext) *Client {
	return &Client{cs: cs, dyn: dyn, mapper: mapper, now: time.Now, seen: make(map[objectKey]seenObject)}
}

func (c *Client) lastSeen(k objectKey) (seenObject, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.seen[k]
	return s, ok
}

func (c *Client) remember(k objectKey, s seenObject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[k] = s
}

func (c *Client) forget(k objectKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, k)
}
