package lambdart

import "testing"

// FuzzDecodeError: any error payload a runtime posts yields an error with a
// type, and never a panic.
func FuzzDecodeError(f *testing.F) {
	f.Add("Forbidden", `{"errorType":"Forbidden","errorMessage":"no"}`, false)
	f.Add("", `not json`, false)
	f.Add("T", `eyJlcnJvclR5cGUiOiJYIn0=`, true)
	f.Fuzz(func(t *testing.T, typ, body string, b64 bool) {
		fe := decodeError(typ, body, b64)
		if fe == nil {
			t.Fatal("nil error")
		}
		if typ != "" && fe.Type == "" {
			t.Fatalf("decodeError(%q, %q) lost the type", typ, body)
		}
	})
}
