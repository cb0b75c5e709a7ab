package lambdart

import "testing"

// FuzzClassify: any answer of the emulator is exactly one of a response, a
// function error with a type, or an emulator error, and never a panic.
func FuzzClassify(f *testing.F) {
	f.Add(200, []byte(`{"errorType":"Forbidden","errorMessage":"no"}`))
	f.Add(200, []byte(`not json`))
	f.Add(502, []byte(`{"errorType":"Runtime.ExitError"}`))
	f.Add(200, []byte(`Task timed out after 1.00 seconds`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		resp, fnErr, err := Classify(status, body)
		n := 0
		if resp != nil {
			n++
		}
		if fnErr != nil {
			n++
			if fnErr.Type == "" {
				t.Fatalf("Classify(%d, %q): a function error without a type", status, body)
			}
		}
		if err != nil {
			n++
		}
		if n > 1 || n == 0 && (status != 200 || len(body) != 0) {
			t.Fatalf("Classify(%d, %q) = %q, %v, %v: want exactly one", status, body, resp, fnErr, err)
		}
	})
}
