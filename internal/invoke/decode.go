package invoke

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	sigsjson "sigs.k8s.io/json"
)

// MaxEventBytes bounds what is decoded at all: Lambda's own cap on a
// synchronous payload, so an event Lambda accepts is never refused here.
const MaxEventBytes = 6 << 20

// jsonSpace is JSON's whitespace; bytes.TrimSpace would also drop Unicode
// spaces that JSON does not allow.
const jsonSpace = " \t\r\n"

// Trim refuses a payload larger than MaxEventBytes, before anything reads
// it, and returns it without the JSON whitespace around it.
func Trim(raw []byte) ([]byte, error) {
	if len(raw) > MaxEventBytes {
		return nil, Invalid("event is %d bytes; at most %d are accepted", len(raw), MaxEventBytes)
	}
	return bytes.Trim(raw, jsonSpace), nil
}

// CheckObject refuses, before any decoder recurses into it, a trimmed
// payload that is not a JSON object, is not UTF-8, or nests deeper than
// depth.
func CheckObject(b []byte, depth int) error {
	if len(b) == 0 || b[0] != '{' {
		if kind := DescribeValue(b); kind != "" {
			return Invalid("event must be a JSON object, not %s", kind)
		}
		return Invalid("event must be a JSON object; it is not JSON")
	}
	if !utf8.Valid(b) {
		return Invalid("event is not valid UTF-8")
	}
	return CheckDepth(b, depth)
}

// CheckDepth refuses JSON nested deeper than limit, counting brackets
// outside strings.
func CheckDepth(b []byte, limit int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > limit {
				return Invalid("event nests deeper than %d levels", limit)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// DescribeValue names the kind of JSON value b starts with, or "".
func DescribeValue(b []byte) string {
	if len(b) == 0 {
		return "empty"
	}
	switch c := b[0]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	}
	return ""
}

// Strict decodes b into v as sigs.k8s.io/json's strict mode does (names
// matched case-sensitively, unknown and repeated fields refused, integers
// kept) and words any failure as InvalidEvent; fields lists v's JSON names
// for the message about an unknown one. An *Error returned by a field's
// UnmarshalJSON is returned as it is.
func Strict(b []byte, v any, fields string) error {
	strictErrs, err := sigsjson.UnmarshalStrict(b, v)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return Invalid("%s", describeJSONError(b, err))
	}
	if len(strictErrs) > 0 {
		return Invalid("%s", describeStrictErrors(strictErrs, fields))
	}
	return nil
}

// maxStrictErrors bounds how many unknown or repeated fields one message lists.
const maxStrictErrors = 5

// describeStrictErrors words sigs.k8s.io/json's strict errors: unknown
// fields (a misspelt or wrongly cased name) and repeated fields (which of
// two values counts is ambiguous, so neither does).
func describeStrictErrors(errs []error, fields string) string {
	msgs := make([]string, 0, min(len(errs), maxStrictErrors))
	unknown := false
	for _, err := range errs[:min(len(errs), maxStrictErrors)] {
		msgs = append(msgs, err.Error())
		unknown = unknown || strings.HasPrefix(err.Error(), "unknown field")
	}
	if len(errs) > maxStrictErrors {
		msgs = append(msgs, fmt.Sprintf("and %d more", len(errs)-maxStrictErrors))
	}
	msg := strings.Join(msgs, "; ")
	if unknown && fields != "" {
		msg += "; field names are case-sensitive; known fields: " + fields
	}
	return msg
}

func describeJSONError(b []byte, err error) string {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return fmt.Sprintf("field %q must be a JSON %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("event must be a JSON %s, not %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case hasTrailingData(b):
		return "event has data after its JSON object"
	}
	if ok, offset := sigsjson.SyntaxErrorOffset(err); ok {
		return fmt.Sprintf("event is not valid JSON at byte %d: %s", offset, err.Error())
	}
	return "event: " + err.Error()
}

// hasTrailingData reports whether b holds one valid JSON value followed by
// more than whitespace.
func hasTrailingData(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	if dec.Decode(&v) != nil {
		return false
	}
	_, err := dec.Token()
	return !errors.Is(err, io.EOF)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	}
	return goKind
}

// CheckControls refuses a control character (U+0000 to U+001F, U+007F to
// U+009F) in any of the named values (name, value pairs): it is never part
// of a valid name, selector or image, and some parsers stop at it (a
// selector "app=web\x00" would read as "app=web").
func CheckControls(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		name, v := pairs[i], pairs[i+1]
		if j := strings.IndexFunc(v, unicode.IsControl); j >= 0 {
			return Invalid("%s %q has control character %U at byte %d; names, selectors and images never hold one",
				name, v, []rune(v[j:])[0], j)
		}
	}
	return nil
}
