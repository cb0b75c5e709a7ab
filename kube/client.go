package kube

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// seen holds each object as this process last wrote or read it, so that
	// a warm apply is one request that both writes and, compared with this,
	// tells whether anything changed.
	seen map[objectKey]seenObject
}

// seenObject is an object's state as last seen: absent, or present with its
// uid, resourceVersion, generation and a fingerprint of the values at the
// fields lambda-eks applies.
type seenObject struct {
	exists          bool
	uid             string
	resourceVersion string
	generation      int64
	fingerprint     string
}

// seenOf records obj; intent is what lambda-eks applies to it, whose fields
// the fingerprint covers.
func seenOf(obj metav1.Object, intent map[string]any) (seenObject, error) {
	fp, err := fingerprint(obj, intent)
	if err != nil {
		return seenObject{}, err
	}
	return seenObject{exists: true, uid: string(obj.GetUID()), resourceVersion: obj.GetResourceVersion(),
		generation: obj.GetGeneration(), fingerprint: fp}, nil
}

// createdSince says whether now is a new object: there was none before, or
// the one before was deleted and another made in its place.
func (now seenObject) createdSince(before seenObject) bool {
	return !before.exists || (now.uid != "" && before.uid != "" && now.uid != before.uid)
}

// changedSince says whether an apply changed the object: before is how this
// process saw it last, now is the apply's answer. An unchanged
// resourceVersion settles it. Otherwise someone wrote the object - the
// apply, a controller updating its status, another manager's fields, the
// API server's bookkeeping - and the values at the fields lambda-eks applies
// decide, with the generation catching a spec that another writer changed
// and this apply (with force) changed back.
func (now seenObject) changedSince(before seenObject) bool {
	if now.resourceVersion != "" && now.resourceVersion == before.resourceVersion {
		return false
	}
	return now.fingerprint != before.fingerprint || now.generation != before.generation
}

// resultOf says what an apply did, from the object before and after it. A
// dry run's answer keeps the resourceVersion and generation even where it
// would change the object, so there the values alone decide.
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

// fingerprint hashes the values obj holds at the fields intent sets: what an
// apply of intent owns, without status, other managers' fields or the
// bookkeeping every write touches.
func fingerprint(obj metav1.Object, intent map[string]any) (string, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	var live map[string]any
	if err := json.Unmarshal(b, &live); err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	// encoding/json writes map keys sorted: the same values, the same bytes.
	if b, err = json.Marshal(project(intent, live)); err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.Sum256(b)
	return string(sum[:]), nil
}

// project returns the parts of live at the paths intent sets. Lists are
// taken whole: without the schema their merge keys are unknown.
func project(intent, live any) any {
	im, ok := intent.(map[string]any)
	if !ok {
		return live
	}
	lm, ok := live.(map[string]any)
	if !ok {
		return live
	}
	out := make(map[string]any, len(im))
	for k, iv := range im {
		if lv, ok := lm[k]; ok {
			out[k] = project(iv, lv)
		}
	}
	return out
}

// asMap is v (an apply configuration, an object) as JSON's map form.
func asMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
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
