package kube

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// decodeDocumentsBefore is how DecodeManifest read documents before issue
// 15 (apimachinery's YAML-or-JSON stream decoder, YAML through JSON text,
// then util/json): the reference the in-place split and the direct decode
// must agree with. It returns each non-empty document's value, or whether
// decoding failed.
func decodeDocumentsBefore(data []byte) ([]any, bool) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []any
	for {
		var raw runtime.RawExtension
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return out, true
		}
		if err != nil {
			return out, false
		}
		doc := bytes.TrimSpace(raw.Raw)
		if len(doc) == 0 || bytes.Equal(doc, []byte("null")) {
			continue
		}
		var v map[string]any // DecodeManifest refuses anything else
		if err := utiljson.Unmarshal(doc, &v); err != nil {
			return out, false
		}
		out = append(out, v)
	}
}

// decodeDocumentsNow is the same walk over DecodeManifest's split and decode.
func decodeDocumentsNow(data []byte) ([]any, bool) {
	docs, err := splitManifest(data)
	var out []any
	for _, d := range docs {
		v, err := decodeDocument(d.data, d.json)
		if err != nil {
			return out, false
		}
		if v == nil {
			continue
		}
		if _, ok := v.(map[string]any); !ok {
			return out, false
		}
		out = append(out, v)
	}
	return out, err == nil
}

var decodeCorpus = []string{
	"", "---", "---\n", "\n---\n---\n", "# only a comment\n", "--- # comment\na: 1\n", "a: 1\n--- #x\nb: 2\n",
	"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n",
	"a: 1\r\n---\r\nb: 2\r\n", "a: 1\n---\n\n---\nb: 2\n---\n", "a: 1\n...\n", "- 1\n- 2\n", "a: [", "a: b: c", "\ta: 1",
	"a: &x {b: 1}\nc: *x\n", "a: 1\na: 2\n", "1: a\n2.5: b\ntrue: c\n~: d\n", "a: ~\nb: null\nc:\n", "a: yes\nb: no\nc: on\nd: 'yes'\n",
	"a: 1.0\nb: 1e3\nc: 1.5\nd: -0\ne: 0x1F\nf: 0o17\ng: 017\nh: .inf\n", "a: 9223372036854775807\nb: 9223372036854775808\nc: 18446744073709551616\n",
	"a: 1e20\nb: 1e21\nc: 123456789012345678901234567890\nd: -9223372036854775808\n", "a: 2001-12-14t21:59:43.10-05:00\nb: 2002-12-14\n",
	"a: !!binary aGVsbG8=\n", "a: !!str 1\n", "a: \"\\u00e9<>&\"\nb: 'it''s'\n", "a: |\n  line\n  two\nb: >\n  folded\n  text\n",
	"{\"a\":1}", "{\"a\":1}\n{\"b\":2}", " \n {\"a\": 1.0, \"b\": 1e3, \"c\": 12345678901234567890}", "{\"a\":1} [1]", "{\"a\":1} 5",
	"{\"a\": \"}\\\"{\"}", "{\"a\":[{\"b\":{}}]}{\"c\":null}", "{", "{\"a\":1", "{\"a\":1}}", "[1, 2]", "null", "{}\n---\nb: 1\n",
	"---\n{\"a\": 1}\n---\nb: 2\n", "a: 1\n---foo\nb: 2\n", "a: 1\n--- foo\nb: 2\n", "a: 1\n----\nb: 2\n", " ---\na: 1\n",
	"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n",
	strings.Repeat("a: 1\n---\n", 50), "a: " + strings.Repeat("x", 5000) + "\n", strings.Repeat(" ", 5000) + "{\"a\":1}",
	"a:\n  - b: 1\n    c: [1, {d: e}]\n", "? [a, b]\n: c\n", "a: {b: [1, 2], c: {d: e}}\n", "'a': 1\n\"b\": 2\n",
}

// TestDecodeAsBefore: the in-place split and direct decode give, document
// for document, the values the old stream decoder gave, and refuse what it
// refused.
func TestDecodeAsBefore(t *testing.T) {
	t.Parallel()
	for _, in := range decodeCorpus {
		want, wantOK := decodeDocumentsBefore([]byte(in))
		got, gotOK := decodeDocumentsNow([]byte(in))
		if wantOK != gotOK {
			t.Errorf("%.120q: decodes %v, before %v", in, gotOK, wantOK)
			continue
		}
		if !wantOK {
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%.120q (-before +now):\n%s", in, diff)
		}
	}
}

// FuzzDecodeAsBefore looks for an input on which the two disagree.
func FuzzDecodeAsBefore(f *testing.F) {
	for _, in := range decodeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantOK := decodeDocumentsBefore(data)
		got, gotOK := decodeDocumentsNow(data)
		if wantOK != gotOK {
			t.Fatalf("decodes %v, before %v", gotOK, wantOK)
		}
		if wantOK {
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("(-before +now):\n%s", diff)
			}
		}
	})
}
