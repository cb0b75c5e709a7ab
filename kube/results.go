package kube

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	gohash "hash"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/lru"
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
	// Kept is an object a delete left alone: another owner holds it.
	Kept      Result = "kept"
	Scaled    Result = "scaled"
	Restarted Result = "restarted"
	Ready     Result = "ready"
	// Progressing is a rollout or reconciliation not complete yet.
	Progressing Result = "progressing"
	// Failed is a rollout past its progress deadline, a failed Job, or an
	// object whose controller says it stalled.
	Failed Result = "failed"
	// Terminating is an object being deleted.
	Terminating Result = "terminating"
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
	// Note explains a result that needs it (a restore that found the
	// workload scaled up already, an object kept for another owner).
	Note string `json:"note,omitempty"`
	// Readiness is set by status, and by a wait.
	Readiness *Readiness `json:"readiness,omitempty"`
}

// state is what this process knows of an object: whether it exists, its
// uid and resourceVersion, when lambda-eks's apply last changed it (the time
// of its managedFields entry), and a digest of its content.
type state struct {
	exists          bool
	uid             types.UID
	resourceVersion string
	applied         time.Time
	// content hashes the object but its managed fields and resourceVersion:
	// where no one else can have written in between, it tells a change of
	// the object from a write of bookkeeping only (managed fields the API
	// server moved).
	content    string
	generation int64
	// fresh says the state was read in this invocation, just before the
	// apply: then a new generation, with no one else writing a spec in
	// between, is the apply's doing.
	fresh bool
	// intent hashes what was applied last, so that the same intent is not
	// checked by a dry run again.
	intent string
}

// stateOf records obj.
func stateOf(obj metav1.Object) (state, error) {
	content, err := contentOf(obj)
	if err != nil {
		return state{}, err
	}
	return state{exists: true, uid: obj.GetUID(), resourceVersion: obj.GetResourceVersion(), applied: appliedAt(obj),
		content: content, generation: obj.GetGeneration()}, nil
}

// appliedAt is the time of lambda-eks's Apply entry in obj's managed fields.
// The API server moves it only when an apply by this manager changes the
// object (structured-merge-diff returns no object for a no-op), so it says
// whether an apply changed anything without a read before it. It has
// one-second resolution: see ambiguous.
func appliedAt(obj metav1.Object) time.Time {
	for _, e := range obj.GetManagedFields() {
		if e.Manager == FieldManager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" && e.Time != nil {
			return e.Time.Time
		}
	}
	return time.Time{}
}

// ambiguityWindow is how recent lambda-eks's last change may be for the
// managed-fields time to be unable to tell a new change from it (one second
// of resolution, plus clock skew between the function and the API server).
const ambiguityWindow = 3 * time.Second

// ambiguous reports whether an apply after before, at now, could change the
// object within the same second of managed-fields time as before's change.
func (before state) ambiguous(now time.Time) bool {
	return before.applied.IsZero() || now.Sub(before.applied) < ambiguityWindow
}

// resultOf says what an apply did from the object before and after it.
//   - created: there was none, or another object (uid) stands in its place;
//   - exclusive (the apply was preconditioned on before's resourceVersion),
//     and a dry run answered with the resourceVersion just read: nothing but
//     this apply came between, so the object's content, bookkeeping aside,
//     decides;
//   - otherwise others may have written too (status, their own fields): the
//     same resourceVersion means nothing was written; else this apply
//     changed the object if lambda-eks's managed-fields time moved, or, if
//     before was read just now (a busy object), if its spec's generation
//     moved.
func resultOf(before, after state, dryRun, exclusive bool) Result {
	switch {
	case !before.exists || (before.uid != "" && after.uid != before.uid):
		return Created
	case exclusive || (dryRun && after.resourceVersion == before.resourceVersion):
		if after.content != before.content {
			return Configured
		}
		return Unchanged
	case after.resourceVersion == before.resourceVersion && !dryRun:
		return Unchanged
	case after.applied.After(before.applied), before.fresh && after.generation > before.generation:
		return Configured
	}
	return Unchanged
}

// contentOf hashes obj without its managed fields and resourceVersion.
func contentOf(obj metav1.Object) (string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return "", fmt.Errorf("content of %T: not an unstructured object", obj)
	}
	md, _ := u.Object["metadata"].(map[string]any)
	md = maps.Clone(md)
	delete(md, "managedFields")
	delete(md, "resourceVersion")
	whole := maps.Clone(u.Object)
	whole["metadata"] = md
	return hash(whole)
}

// hash is a digest of v, written into the hash as v is walked: map keys
// sorted, each value tagged with its type and length, so that the same
// values give the same digest. No JSON text of the object is built (for a
// large object, encoding/json's grew to several times its size).
func hash(v any) (string, error) {
	h := sha256.New()
	if err := writeCanonical(h, v, make([]byte, 0, 24)); err != nil {
		return "", err
	}
	return string(h.Sum(nil)), nil
}

// writeCanonical writes v into h; scratch is a buffer for numbers.
func writeCanonical(h gohash.Hash, v any, scratch []byte) error {
	tagged := func(tag byte, n int) {
		_, _ = h.Write(strconv.AppendInt(append(scratch[:0], tag), int64(n), 10))
		_, _ = h.Write([]byte{':'})
	}
	switch t := v.(type) {
	case map[string]any:
		tagged('{', len(t))
		for _, k := range slices.Sorted(maps.Keys(t)) {
			tagged('k', len(k))
			_, _ = io.WriteString(h, k)
			if err := writeCanonical(h, t[k], scratch); err != nil {
				return err
			}
		}
	case []any:
		tagged('[', len(t))
		for _, e := range t {
			if err := writeCanonical(h, e, scratch); err != nil {
				return err
			}
		}
	case string:
		tagged('s', len(t))
		_, _ = io.WriteString(h, t)
	default: // numbers, booleans, null: small
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		tagged('v', len(b))
		_, _ = h.Write(b)
	}
	return nil
}

type objectKey struct {
	resource, namespace, name string
}

// maxRemembered bounds the objects a process remembers: past it the least
// recently used is forgotten, and costs one read when it is applied again.
const maxRemembered = 4096

// objectMemory is the bounded, concurrency-safe record of objects as this
// process last wrote or read them.
type objectMemory struct{ cache *lru.Cache }

func newObjectMemory(size int) *objectMemory { return &objectMemory{cache: lru.New(size)} }

func (m *objectMemory) get(k objectKey) (state, bool) {
	v, ok := m.cache.Get(k)
	if !ok {
		return state{}, false
	}
	return v.(state), true
}

func (m *objectMemory) put(k objectKey, s state) { m.cache.Add(k, s) }

func (m *objectMemory) forget(k objectKey) { m.cache.Remove(k) }
