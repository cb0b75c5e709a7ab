package kubefake

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// The fake's writes: create, update, patch (apply and merge), scale and
// delete, with their dry runs, managed fields and CRDs.

// decodeBody reads a request's JSON or YAML object.
func decodeBody(body []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(body)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(j, &obj); err != nil || obj == nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not an object: %v", err))
	}
	return obj, nil
}

func (s *Server) serveCreate(req Request, k Kind) (int, any, error) {
	obj, err := decodeBody(req.Body)
	if err != nil {
		return 0, nil, err
	}
	u := &unstructured.Unstructured{Object: obj}
	if req.Namespace != "" {
		u.SetNamespace(req.Namespace)
	}
	key := objectKey{k.GroupVersionKind.Group, k.Resource, req.Namespace, u.GetName()}
	if _, exists := s.objects[key]; exists {
		return 0, nil, apierrors.NewAlreadyExists(req.Resource.GroupResource(), u.GetName())
	}
	s.created(u)
	s.stamp(u, req.FieldManager, metav1.ManagedFieldsOperationUpdate, "")
	if !req.DryRun {
		s.store(key, u)
	}
	return http.StatusCreated, u.Object, nil
}

// created gives a new object what the API server gives it.
func (s *Server) created(u *unstructured.Unstructured) {
	u.SetUID(s.nextUID())
	u.SetResourceVersion(s.nextRV())
	u.SetCreationTimestamp(metav1.NewTime(s.now().Truncate(1e9)))
	if _, hasSpec := u.Object["spec"]; hasSpec {
		u.SetGeneration(1)
	}
}

func (s *Server) serveUpdate(req Request, key objectKey, gr schema.GroupResource) (int, any, error) {
	obj, err := decodeBody(req.Body)
	if err != nil {
		return 0, nil, err
	}
	cur, ok := s.objects[key]
	if !ok {
		return 0, nil, apierrors.NewNotFound(gr, req.Name)
	}
	u := &unstructured.Unstructured{Object: obj}
	if rv := u.GetResourceVersion(); rv != "" && rv != cur.GetResourceVersion() {
		return 0, nil, modified(gr, req.Name)
	}
	u.SetUID(cur.GetUID())
	u.SetCreationTimestamp(cur.GetCreationTimestamp())
	u.SetGeneration(cur.GetGeneration())
	u.SetManagedFields(cur.GetManagedFields())
	return s.write(req, key, cur, u, metav1.ManagedFieldsOperationUpdate, "")
}

// write stores next in place of cur if it differs, and answers with what
// is stored (or, in a dry run, would be); s.mu is held.
func (s *Server) write(req Request, key objectKey, cur, next *unstructured.Unstructured, op metav1.ManagedFieldsOperationType, sub string) (int, any, error) {
	next.SetResourceVersion(cur.GetResourceVersion())
	if reflect.DeepEqual(next.Object, cur.Object) {
		return http.StatusOK, cur.Object, nil // a no-op writes nothing
	}
	if !reflect.DeepEqual(next.Object["spec"], cur.Object["spec"]) {
		next.SetGeneration(cur.GetGeneration() + 1)
	}
	s.stamp(next, req.FieldManager, op, sub)
	if req.DryRun {
		return http.StatusOK, next.Object, nil
	}
	next.SetResourceVersion(s.nextRV())
	s.store(key, next)
	return http.StatusOK, next.Object, nil
}

func (s *Server) servePatch(req Request, key objectKey) (int, any, error) {
	gr := req.Resource.GroupResource()
	switch req.PatchType {
	case types.ApplyPatchType, types.MergePatchType, types.StrategicMergePatchType:
	default:
		return 0, nil, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason: metav1.StatusReasonUnsupportedMediaType, Message: "the body of the request was in an unknown format: " + string(req.PatchType)}}
	}
	patch, err := decodeBody(req.Body)
	if err != nil {
		return 0, nil, err
	}
	md, _ := patch["metadata"].(map[string]any)
	precondition, _ := md["resourceVersion"].(string)
	delete(md, "resourceVersion")
	apply := req.PatchType == types.ApplyPatchType
	if apply && req.FieldManager == "" {
		return 0, nil, apierrors.NewBadRequest("PATCH requests with apply content type require fieldManager")
	}
	cur, exists := s.objects[key]
	switch {
	case !exists && apply && precondition == "":
		u := &unstructured.Unstructured{Object: patch}
		if req.Namespace != "" {
			u.SetNamespace(req.Namespace)
		}
		u.SetName(req.Name)
		s.created(u)
		s.stamp(u, req.FieldManager, metav1.ManagedFieldsOperationApply, "")
		if !req.DryRun {
			s.store(key, u)
		}
		return http.StatusCreated, u.Object, nil
	case !exists && apply:
		return 0, nil, apierrors.NewConflict(gr, req.Name, errors.New("the object has been deleted"))
	case !exists:
		return 0, nil, apierrors.NewNotFound(gr, req.Name)
	case precondition != "" && precondition != cur.GetResourceVersion():
		return 0, nil, modified(gr, req.Name)
	}
	next := cur.DeepCopy()
	merge(next.Object, patch)
	op := metav1.ManagedFieldsOperationUpdate
	if apply {
		op = metav1.ManagedFieldsOperationApply
	}
	return s.write(req, key, cur, next, op, "")
}

func modified(gr schema.GroupResource, name string) error {
	return apierrors.NewConflict(gr, name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
}

// merge merges src into dst as a JSON merge patch does: objects merge
// recursively, null removes, anything else replaces.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		if sv, ok := v.(map[string]any); ok {
			if dv, ok := dst[k].(map[string]any); ok {
				merge(dv, sv)
				continue
			}
			dv := map[string]any{}
			merge(dv, sv)
			dst[k] = dv
			continue
		}
		dst[k] = v
	}
}

// stamp sets the time of manager's entry for op in u's managed fields to
// now, adding the entry if it has none; s.mu is held.
func (s *Server) stamp(u *unstructured.Unstructured, manager string, op metav1.ManagedFieldsOperationType, sub string) {
	if manager == "" {
		return
	}
	t := metav1.NewTime(s.now().Truncate(1e9)) // the API's one-second resolution
	entries := u.GetManagedFields()
	i := slices.IndexFunc(entries, func(e metav1.ManagedFieldsEntry) bool {
		return e.Manager == manager && e.Operation == op && e.Subresource == sub
	})
	if i < 0 {
		entries = append(entries, metav1.ManagedFieldsEntry{Manager: manager, Operation: op, Subresource: sub, APIVersion: u.GetAPIVersion()})
		i = len(entries) - 1
	}
	entries[i].Time = &t
	u.SetManagedFields(entries)
	// SetManagedFields writes through encoding/json: keep numbers as a
	// decoded request has them.
	if n, err := normalize(u.Object); err == nil {
		u.Object = n.Object
	}
}

func (s *Server) serveScale(req Request, key objectKey, gr schema.GroupResource) (int, any, error) {
	cur, ok := s.objects[key]
	if !ok {
		return 0, nil, apierrors.NewNotFound(gr, req.Name)
	}
	scaleOf := func(u *unstructured.Unstructured) map[string]any {
		replicas, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
		current, _, _ := unstructured.NestedInt64(u.Object, "status", "replicas")
		return map[string]any{"apiVersion": "autoscaling/v1", "kind": "Scale",
			"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace(), "uid": string(u.GetUID()), "resourceVersion": u.GetResourceVersion()},
			"spec":     map[string]any{"replicas": replicas}, "status": map[string]any{"replicas": current}}
	}
	switch req.Verb {
	case "get":
		return http.StatusOK, scaleOf(cur), nil
	case "update":
	default:
		return 0, nil, apierrors.NewMethodNotSupported(gr, req.Verb+" scale")
	}
	obj, err := decodeBody(req.Body)
	if err != nil {
		return 0, nil, err
	}
	sc := &unstructured.Unstructured{Object: obj}
	if rv := sc.GetResourceVersion(); rv != "" && rv != cur.GetResourceVersion() {
		return 0, nil, modified(gr, req.Name)
	}
	replicas, _, _ := unstructured.NestedInt64(sc.Object, "spec", "replicas")
	next := cur.DeepCopy()
	if err := unstructured.SetNestedField(next.Object, replicas, "spec", "replicas"); err != nil {
		return 0, nil, apierrors.NewBadRequest(err.Error())
	}
	_, out, err := s.write(req, key, cur, next, metav1.ManagedFieldsOperationUpdate, "scale")
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, scaleOf(&unstructured.Unstructured{Object: out.(map[string]any)}), nil
}

func (s *Server) serveDelete(req Request, key objectKey, gr schema.GroupResource) (int, any, error) {
	cur, ok := s.objects[key]
	if !ok {
		return 0, nil, apierrors.NewNotFound(gr, req.Name)
	}
	var opts metav1.DeleteOptions
	if len(req.Body) > 0 {
		if err := json.Unmarshal(req.Body, &opts); err != nil {
			return 0, nil, apierrors.NewBadRequest(err.Error())
		}
	}
	if p := opts.Preconditions; p != nil {
		if p.UID != nil && *p.UID != cur.GetUID() {
			return 0, nil, apierrors.NewConflict(gr, req.Name, fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", *p.UID, cur.GetUID()))
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != cur.GetResourceVersion() {
			return 0, nil, apierrors.NewConflict(gr, req.Name, fmt.Errorf("precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s",
				*p.ResourceVersion, cur.GetResourceVersion()))
		}
	}
	if !req.DryRun {
		s.remove(key)
	}
	return http.StatusOK, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess,
		Details: &metav1.StatusDetails{Name: req.Name, Group: gr.Group, Kind: gr.Resource, UID: cur.GetUID()}}, nil
}

// store puts u at key, and follows a CustomResourceDefinition; s.mu is held.
func (s *Server) store(key objectKey, u *unstructured.Unstructured) {
	if (schema.GroupResource{Group: key.group, Resource: key.resource}) == crdGR {
		s.establish(u)
	}
	s.objects[key] = u
}

// remove deletes the object at key; a CustomResourceDefinition takes its
// kinds and their objects with it. s.mu is held.
func (s *Server) remove(key objectKey) {
	delete(s.objects, key)
	if (schema.GroupResource{Group: key.group, Resource: key.resource}) != crdGR {
		return
	}
	for _, k := range s.crdKinds[key.name] {
		s.kinds = slices.DeleteFunc(s.kinds, func(x Kind) bool { return x == k })
		maps.DeleteFunc(s.objects, func(ok objectKey, _ *unstructured.Unstructured) bool {
			return ok.group == k.GroupVersionKind.Group && ok.resource == k.Resource
		})
	}
	delete(s.crdKinds, key.name)
}

// establish serves the kinds a CustomResourceDefinition defines and marks it
// Established, as the API server does within moments; s.mu is held.
func (s *Server) establish(crd *unstructured.Unstructured) {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	scope, _, _ := unstructured.NestedString(crd.Object, "spec", "scope")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, k := range s.crdKinds[crd.GetName()] {
		s.kinds = slices.DeleteFunc(s.kinds, func(x Kind) bool { return x == k })
	}
	var added []Kind
	for _, v := range versions {
		vm, _ := v.(map[string]any)
		name, _ := vm["name"].(string)
		if served, _ := vm["served"].(bool); !served || name == "" || group == "" || kind == "" || plural == "" {
			continue
		}
		k := Kind{GroupVersionKind: schema.GroupVersionKind{Group: group, Version: name, Kind: kind}, Resource: plural, Namespaced: scope == "Namespaced"}
		added = append(added, k)
		s.kinds = append(s.kinds, k)
	}
	s.crdKinds[crd.GetName()] = added
	_ = unstructured.SetNestedSlice(crd.Object, []any{
		map[string]any{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
		map[string]any{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
	}, "status", "conditions")
}
