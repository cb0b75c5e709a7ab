package kubefake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	s.mu.Lock()
	req := s.parse(r, body)
	s.requests = append(s.requests, req)
	reactors := slices.Clone(s.reactors)
	s.mu.Unlock()

	for _, react := range reactors {
		if err := react(req); err != nil {
			if errors.Is(err, ErrDropConnection) {
				drop(w)
				return
			}
			writeError(w, err)
			return
		}
	}
	if req.Resource.Resource == "" {
		s.serveDiscovery(w, req)
		return
	}
	s.mu.Lock()
	code, out, err := s.serveResource(req)
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, code, out)
}

func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// parse reads what r asks for; s.mu is held.
func (s *Server) parse(r *http.Request, body []byte) Request {
	q := r.URL.Query()
	req := Request{Method: r.Method, Path: r.URL.Path, Query: q, Header: r.Header.Clone(), Body: body, Verb: "get",
		PatchType: types.PatchType(r.Header.Get("Content-Type")), FieldManager: q.Get("fieldManager"),
		Force: q.Get("force") == "true", DryRun: slices.Contains(q["dryRun"], metav1.DryRunAll)}
	if r.Method != http.MethodPatch {
		req.PatchType = ""
	}
	gv, rest, ok := splitAPIPath(r.URL.Path)
	if !ok || len(rest) == 0 {
		return req
	}
	var resource string
	switch {
	case rest[0] == "namespaces" && len(rest) >= 3 && s.served(gv.WithResource(rest[2])):
		req.Namespace, resource, rest = rest[1], rest[2], rest[3:]
	default:
		resource, rest = rest[0], rest[1:]
	}
	req.Resource = gv.WithResource(resource)
	if len(rest) > 0 {
		req.Name = rest[0]
	}
	if len(rest) > 1 {
		req.Subresource = rest[1]
	}
	switch r.Method {
	case http.MethodGet:
		req.Verb = "get"
		if req.Name == "" {
			req.Verb = "list"
		}
	case http.MethodPost:
		req.Verb = "create"
	case http.MethodPut:
		req.Verb = "update"
	case http.MethodPatch:
		req.Verb = "patch"
	case http.MethodDelete:
		req.Verb = "delete"
		var opts metav1.DeleteOptions
		if len(body) > 0 && json.Unmarshal(body, &opts) == nil && slices.Contains(opts.DryRun, metav1.DryRunAll) {
			req.DryRun = true
		}
	default:
		req.Verb = strings.ToLower(r.Method)
	}
	return req
}

// splitAPIPath splits /api/v1/... and /apis/group/version/... into the
// group version and the rest.
func splitAPIPath(path string) (schema.GroupVersion, []string, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		return schema.GroupVersion{Version: parts[1]}, parts[2:], true
	case len(parts) >= 3 && parts[0] == "apis":
		return schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:], true
	}
	return schema.GroupVersion{}, nil, false
}

func isDiscoveryPath(path string) bool {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch parts[0] {
	case "api":
		return len(parts) <= 2
	case "apis":
		return len(parts) <= 3
	}
	return false
}

// served reports whether gvr is a resource the fake serves; s.mu is held.
func (s *Server) served(gvr schema.GroupVersionResource) bool {
	_, ok := s.kindFor(gvr)
	return ok
}

func (s *Server) kindFor(gvr schema.GroupVersionResource) (Kind, bool) {
	for _, k := range s.kinds {
		if k.GroupVersionResource() == gvr {
			return k, true
		}
	}
	return Kind{}, false
}

func (s *Server) kindOf(gvk schema.GroupVersionKind) (Kind, bool) {
	for _, k := range s.kinds {
		if k.GroupVersionKind == gvk {
			return k, true
		}
	}
	return Kind{}, false
}

func (s *Server) serveDiscovery(w http.ResponseWriter, req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := strings.Trim(req.Path, "/")
	switch path {
	case "version":
		writeJSON(w, http.StatusOK, map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.0-kubefake"})
		return
	case "api":
		writeJSON(w, http.StatusOK, metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: strings.TrimPrefix(s.srv.URL, "https://")}}})
		return
	case "apis":
		list := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}}
		for _, gv := range s.groupVersions() {
			if gv.Group == "" {
				continue
			}
			i := slices.IndexFunc(list.Groups, func(g metav1.APIGroup) bool { return g.Name == gv.Group })
			v := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
			if i < 0 {
				list.Groups = append(list.Groups, metav1.APIGroup{Name: gv.Group, PreferredVersion: v})
				i = len(list.Groups) - 1
			}
			list.Groups[i].Versions = append(list.Groups[i].Versions, v)
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	gv, rest, ok := splitAPIPath(req.Path)
	if ok && len(rest) == 0 && slices.Contains(s.groupVersions(), gv) {
		list := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
		for _, k := range s.kinds {
			if k.GroupVersionKind.GroupVersion() != gv {
				continue
			}
			list.APIResources = append(list.APIResources, metav1.APIResource{Name: k.Resource, SingularName: strings.ToLower(k.GroupVersionKind.Kind),
				Namespaced: k.Namespaced, Kind: k.GroupVersionKind.Kind,
				Verbs: metav1.Verbs{"create", "delete", "get", "list", "patch", "update"}})
			if k.Scale {
				list.APIResources = append(list.APIResources, metav1.APIResource{Name: k.Resource + "/scale", Namespaced: k.Namespaced,
					Group: "autoscaling", Version: "v1", Kind: "Scale", Verbs: metav1.Verbs{"get", "patch", "update"}})
			}
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	writeError(w, notFound())
}

// groupVersions lists the served group versions in the order their kinds
// were added.
func (s *Server) groupVersions() []schema.GroupVersion {
	var out []schema.GroupVersion
	for _, k := range s.kinds {
		if gv := k.GroupVersionKind.GroupVersion(); !slices.Contains(out, gv) {
			out = append(out, gv)
		}
	}
	return out
}

func notFound() error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound,
		Reason: metav1.StatusReasonNotFound, Message: "the server could not find the requested resource"}}
}

// serveResource answers a request for objects; s.mu is held.
func (s *Server) serveResource(req Request) (int, any, error) {
	k, ok := s.kindFor(req.Resource)
	if !ok || (req.Namespace != "" && !k.Namespaced) {
		return 0, nil, notFound()
	}
	key := objectKey{k.GroupVersionKind.Group, k.Resource, req.Namespace, req.Name}
	gr := req.Resource.GroupResource()
	switch {
	case req.Subresource == "scale" && k.Scale:
		return s.serveScale(req, key, gr)
	case req.Subresource != "":
		return 0, nil, notFound()
	}
	switch req.Verb {
	case "list":
		sel := labels.Everything()
		if q := req.Query.Get("labelSelector"); q != "" {
			var err error
			if sel, err = labels.Parse(q); err != nil {
				return 0, nil, apierrors.NewBadRequest(err.Error())
			}
		}
		items := []any{}
		for _, u := range s.list(gr, req.Namespace, sel) {
			items = append(items, u.Object)
		}
		return http.StatusOK, map[string]any{"apiVersion": k.GroupVersionKind.GroupVersion().String(), "kind": k.GroupVersionKind.Kind + "List",
			"metadata": map[string]any{"resourceVersion": fmt.Sprint(s.rv)}, "items": items}, nil
	case "get":
		cur, ok := s.objects[key]
		if !ok {
			return 0, nil, apierrors.NewNotFound(gr, req.Name)
		}
		return http.StatusOK, cur.Object, nil
	case "create":
		return s.serveCreate(req, k)
	case "update":
		return s.serveUpdate(req, key, gr)
	case "patch":
		return s.servePatch(req, key)
	case "delete":
		return s.serveDelete(req, key, gr)
	}
	return 0, nil, apierrors.NewMethodNotSupported(gr, req.Verb)
}

// list returns copies of the objects of gr in namespace ("" every one)
// that sel matches (nil: all), by namespace and name; s.mu is held.
func (s *Server) list(gr schema.GroupResource, namespace string, sel labels.Selector) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, key := range slices.SortedFunc(maps.Keys(s.objects), func(a, b objectKey) int {
		return strings.Compare(a.namespace+"/"+a.name, b.namespace+"/"+b.name)
	}) {
		if key.group != gr.Group || key.resource != gr.Resource || (namespace != "" && key.namespace != namespace) {
			continue
		}
		u := s.objects[key]
		if sel != nil && !sel.Matches(labels.Set(u.GetLabels())) {
			continue
		}
		out = append(out, u.DeepCopy())
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeError answers with err's API status, or a 500 for any other error.
func writeError(w http.ResponseWriter, err error) {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		status = apierrors.NewInternalError(err)
	}
	st := status.Status()
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	if st.Status == "" {
		st.Status = metav1.StatusFailure
	}
	if st.Code == 0 {
		st.Code = http.StatusInternalServerError
	}
	if d := st.Details; d != nil && d.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(d.RetryAfterSeconds))
	}
	writeJSON(w, int(st.Code), st)
}
