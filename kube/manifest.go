package kube

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxDocuments is the default bound on the objects of one manifest.
const MaxDocuments = 500

// ManifestError is a manifest document that cannot be applied as written.
// Index is the document's position (1-based, counting the documents that
// are not empty); Item is the position inside a List document, or 0.
type ManifestError struct {
	Index   int
	Item    int
	Kind    string
	Name    string
	Problem string
	// Err is the error Problem was worded from (a decoder's, a parser's),
	// or nil; Error does not read it, Unwrap returns it.
	Err error
}

func (e *ManifestError) Error() string {
	where := fmt.Sprintf("manifest document %d", e.Index)
	if e.Item > 0 {
		where += fmt.Sprintf(" (List item %d)", e.Item)
	}
	if e.Kind != "" || e.Name != "" {
		where += fmt.Sprintf(" (%s %q)", shortValue(e.Kind), shortValue(e.Name))
	}
	return where + ": " + e.Problem
}

func (e *ManifestError) Unwrap() error { return e.Err }

// problem words a problem as fmt.Errorf does, so that %w keeps the cause
// (returned as cause) while the text is what %v would print.
func problem(format string, args ...any) (text string, cause error) {
	err := fmt.Errorf(format, ShortQuoted(format, args)...)
	if cause := errors.Unwrap(err); cause != nil {
		return err.Error(), cause
	}
	var multi interface{ Unwrap() []error }
	if errors.As(err, &multi) {
		return err.Error(), err // several %w: keep them all
	}
	return err.Error(), nil
}

// Manifest is a decoded manifest: its objects in document order, each with
// where it came from.
type Manifest []ManifestObject

// ManifestObject is one object of a manifest.
type ManifestObject struct {
	Index, Item int
	Object      *unstructured.Unstructured
}

// errorf is a problem with o's document; format is fmt.Errorf's, so a %w
// cause is the error's Err.
func (o ManifestObject) errorf(format string, args ...any) *ManifestError {
	text, cause := problem(format, args...)
	return &ManifestError{Index: o.Index, Item: o.Item, Kind: o.Object.GetKind(), Name: o.Object.GetName(),
		Problem: text, Err: cause}
}

// DecodeManifest decodes one or more YAML or JSON documents, expanding List
// documents, and checks what can be checked without a cluster: apiVersion,
// kind, a valid name and namespace. At most maxDocs objects are accepted.
// It does not touch the network, so a manifest is refused before anything
// is written.
func DecodeManifest(data []byte, maxDocs int) (Manifest, error) {
	if n := structuralBytes(data); n > maxStructure {
		return nil, &ManifestError{Index: 1, Problem: fmt.Sprintf("the manifest has %d separators (, : - [ { and line ends); at most %d are decoded: split it over several manifests", n, maxStructure)}
	}
	docs, splitErr := splitManifest(data)
	var m Manifest
	index := 0
	for _, d := range docs {
		index++
		v, err := decodeDocument(d.data, d.json)
		if err != nil {
			return nil, &ManifestError{Index: index, Problem: "not valid YAML or JSON: " + err.Error(), Err: err}
		}
		if v == nil {
			continue // an empty document: a trailing ---, only comments, null
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, &ManifestError{Index: index, Problem: fmt.Sprintf("not an object: a %T", v)}
		}
		u := &unstructured.Unstructured{Object: obj}
		items, isList, err := listItems(u)
		if err != nil {
			return nil, &ManifestError{Index: index, Kind: u.GetKind(), Problem: err.Error(), Err: err}
		}
		if !isList {
			items = []map[string]any{obj}
		}
		for i, item := range items {
			mo := ManifestObject{Index: index, Object: &unstructured.Unstructured{Object: item}}
			if isList {
				mo.Item = i + 1
			}
			if len(m) == maxDocs {
				return nil, &ManifestError{Index: index, Item: mo.Item,
					Problem: fmt.Sprintf("the manifest has more than %d objects; split it over several events", maxDocs)}
			}
			if err := checkObject(mo); err != nil {
				return nil, err
			}
			m = append(m, mo)
		}
	}
	if splitErr != nil {
		return nil, &ManifestError{Index: index + 1, Problem: "not valid YAML or JSON: " + splitErr.Error(), Err: splitErr}
	}
	if len(m) == 0 {
		return nil, &ManifestError{Index: 1, Problem: "the manifest holds no objects"}
	}
	return m, nil
}

// listItems returns the items of a List document (kind List, or any kind
// ending in List with an items array, as kubectl accepts).
func listItems(u *unstructured.Unstructured) ([]map[string]any, bool, error) {
	raw, hasItems := u.Object["items"]
	if !strings.HasSuffix(u.GetKind(), "List") || !hasItems {
		return nil, false, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, false, fmt.Errorf("items must be a list")
	}
	items := make([]map[string]any, 0, len(list))
	for i, it := range list {
		obj, ok := it.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("item %d of the List is not an object", i+1)
		}
		items = append(items, obj)
	}
	return items, true, nil
}

// checkObject checks what every object needs, whatever its kind.
func checkObject(o ManifestObject) error {
	u := o.Object
	for _, f := range []string{"apiVersion", "kind"} {
		v, ok := u.Object[f]
		if s, isString := v.(string); !ok || !isString || s == "" {
			return o.errorf("%s is missing or not a string", f)
		}
	}
	md, ok := u.Object["metadata"].(map[string]any)
	if !ok {
		return o.errorf("metadata is missing or not an object")
	}
	for _, f := range []string{"name", "namespace", "generateName"} {
		if v, set := md[f]; set {
			if _, isString := v.(string); !isString {
				return o.errorf("metadata.%s is not a string (YAML reads y, n, yes, no, on, off as booleans: quote it)", f)
			}
		}
	}
	if _, err := schema.ParseGroupVersion(u.GetAPIVersion()); err != nil {
		return o.errorf("apiVersion %q: %w", u.GetAPIVersion(), err)
	}
	name := u.GetName()
	switch {
	case name == "" && u.GetGenerateName() != "":
		return o.errorf("metadata.generateName is not supported: apply needs a metadata.name")
	case name == "":
		return o.errorf("metadata.name is missing")
	case len(name) > validation.DNS1123SubdomainMaxLength:
		return o.errorf("metadata.name is longer than %d characters", validation.DNS1123SubdomainMaxLength)
	}
	if errs := content.IsPathSegmentName(name); len(errs) > 0 {
		return o.errorf("metadata.name %q: %s", name, strings.Join(errs, "; "))
	}
	if ns := u.GetNamespace(); ns != "" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return o.errorf("metadata.namespace %q: %s", ns, strings.Join(errs, "; "))
		}
	}
	return nil
}

// MaxQuoted bounds the bytes of a value a message quotes: an event or a
// manifest may carry a name, image or apiVersion of megabytes, and its echo
// would fill the error, the log and the function's memory.
const MaxQuoted = 256

// ShortQuoted returns args with each string that a %q of format quotes cut
// to its first MaxQuoted bytes (whole runes) and its length; other
// arguments (an API server's message, a list of known fields) are kept.
func ShortQuoted(format string, args []any) []any {
	out := slices.Clone(args)
	n := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		// Skip flags, width and precision up to the verb.
		j := i + 1
		for j < len(format) && strings.IndexByte("+-# 0123456789.", format[j]) >= 0 {
			j++
		}
		if j == len(format) {
			break
		}
		i = j
		if format[j] == '%' {
			continue
		}
		if format[j] == 'q' && n < len(out) {
			if s, ok := out[n].(string); ok {
				out[n] = shortValue(s)
			}
		}
		n++
	}
	return out
}

func shortValue(s string) string {
	if len(s) <= MaxQuoted {
		return s
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "... (" + strconv.Itoa(len(s)) + " bytes)"
}
