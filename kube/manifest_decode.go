package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// document is one document of a manifest, a slice of the event's bytes.
type document struct {
	data []byte
	json bool // read as JSON (utiljson), else as YAML
}

// splitManifest cuts data into its documents without copying them, as
// apimachinery's yaml.NewYAMLOrJSONDecoder reads a stream (which buffers
// and copies each document, and YAML once more as JSON text): when the
// first non-space byte of the first 4,096 is '{', a stream of JSON values
// while they parse, the rest YAML once the first or second fails; else
// YAML documents between "---" lines. Documents before an error are
// returned with it.
func splitManifest(data []byte) ([]document, error) {
	var docs []document
	if head := data[:min(len(data), 4096)]; bytes.HasPrefix(bytes.TrimLeftFunc(head, unicode.IsSpace), []byte("{")) {
		rest := data
		for {
			rest = bytes.TrimLeft(rest, " \t\r\n")
			if len(rest) == 0 {
				return docs, nil
			}
			end, ok := jsonValueEnd(rest)
			if !ok || !json.Valid(rest[:end]) {
				break
			}
			docs = append(docs, document{data: rest[:end], json: true})
			rest = rest[end:]
		}
		jsonErr := fmt.Errorf("invalid JSON in document %d", len(docs)+1)
		if len(docs) > 1 {
			return docs, jsonErr
		}
		// As the stream decoder: YAML from the end of the last JSON value,
		// after white space up to the first line end, when it can read 4
		// bytes there at each step (a quirk kept, not a choice).
		p := 0
		if len(docs) == 1 {
			p = cap(data) - cap(docs[0].data) + len(docs[0].data)
		}
		for {
			if len(data)-p < 4 {
				return docs, jsonErr
			}
			r, size := utf8.DecodeRune(data[p:])
			if r == utf8.RuneError {
				return docs, jsonErr
			}
			if !unicode.IsSpace(r) {
				break
			}
			p += size
			if r == '\n' {
				break
			}
		}
		data = data[p:]
	}
	start, end := 0, 0 // the current document: data[start:end]
	for i := 0; i < len(data); {
		lineEnd := len(data)
		if j := bytes.IndexByte(data[i:], '\n'); j >= 0 {
			lineEnd = i + j + 1
		}
		line := data[i:lineEnd]
		if bytes.HasPrefix(line, []byte("---")) {
			if rest := bytes.TrimSpace(line[3:]); len(rest) > 0 && rest[0] != '#' {
				return docs, fmt.Errorf("invalid Yaml document separator: %s", rest)
			}
			// A separator ends a document; one that starts a document is
			// its first line (as apimachinery's YAMLReader has it).
			if end > start {
				docs = append(docs, document{data: data[start:end]})
				start = lineEnd
			}
		}
		end = lineEnd
		i = lineEnd
	}
	if end > start {
		last := data[start:end]
		if last[len(last)-1] != '\n' {
			// The reader ends every line with one: a block scalar on the
			// last line keeps its line end. Only here is a document copied.
			last = append(last[:len(last):len(last)], '\n')
		}
		docs = append(docs, document{data: last})
	}
	return docs, nil
}

// jsonValueEnd returns the length of the JSON object or array b starts
// with, counting brackets outside strings; json.Valid then checks it.
func jsonValueEnd(b []byte) (int, bool) {
	depth, inString, escaped := 0, false, false
	for i, c := range b {
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
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case depth == 0:
			return 0, false
		}
	}
	return 0, false
}

// decodeDocument decodes one document into what utiljson would give for it
// (JSON's types, integers as int64): JSON directly, YAML through go-yaml and
// a walk of its values (what sigs.k8s.io/yaml.YAMLToJSON then
// utiljson.Unmarshal give, without the JSON text between them).
func decodeDocument(doc []byte, isJSON bool) (any, error) {
	var v any
	if isJSON {
		err := utiljson.Unmarshal(doc, &v)
		return v, err
	}
	if err := yamlv2.Unmarshal(doc, &v); err != nil {
		return nil, err
	}
	return jsonable(v)
}

func jsonable(v any) (any, error) {
	switch t := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			ks, err := keyString(k)
			if err != nil {
				return nil, err
			}
			if m[ks], err = jsonable(e); err != nil {
				return nil, err
			}
		}
		return m, nil
	case []any:
		for i, e := range t {
			var err error
			if t[i], err = jsonable(e); err != nil {
				return nil, err
			}
		}
		return t, nil
	case int:
		return int64(t), nil
	case int64:
		return t, nil
	case uint64:
		if t <= math.MaxInt64 {
			return int64(t), nil
		}
		return float64(t), nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, fmt.Errorf("unsupported value: %v", t)
		}
		// What JSON text then util/json made of it: the shortest decimal
		// (encoding/json's, without an exponent below 1e21), an integer
		// when that parses as an int64.
		if t == math.Trunc(t) && math.Abs(t) < 1e21 {
			if n, err := strconv.ParseInt(strconv.FormatFloat(t, 'f', -1, 64), 10, 64); err == nil {
				return n, nil
			}
		}
		return t, nil
	}
	return v, nil // string, bool, nil
}

func keyString(k any) (string, error) {
	switch t := k.(type) {
	case string:
		return t, nil
	case int:
		return strconv.Itoa(t), nil
	case int64:
		return strconv.FormatInt(t, 10), nil
	case uint64:
		return strconv.FormatUint(t, 10), nil
	case float64:
		s := strconv.FormatFloat(t, 'g', -1, 32)
		switch s {
		case "+Inf":
			s = ".inf"
		case "-Inf":
			s = "-.inf"
		case "NaN":
			s = ".nan"
		}
		return s, nil
	case bool:
		return strconv.FormatBool(t), nil
	}
	return "", fmt.Errorf("unsupported map key of type: %T, key: %+#v", k, k)
}

// maxStructure bounds the separators of a manifest, an upper bound of its
// YAML or JSON nodes (each costs some 200 bytes while decoding): a 5 MiB
// bundle of CRDs has about 190,000; a flow list of 2.6 million 1s has as
// many and would take 700 MiB.
const maxStructure = 250_000

func structuralBytes(b []byte) int {
	n := 0
	for _, c := range b {
		switch c {
		case ',', ':', '-', '\n', '[', '{':
			n++
		}
	}
	return n
}
