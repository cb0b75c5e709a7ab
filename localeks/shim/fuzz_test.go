package shim

import (
	"encoding/json"
	"testing"
)

// FuzzRewriteCluster: whatever moto answers, the rewrite never panics, and
// what it returns is JSON.
func FuzzRewriteCluster(f *testing.F) {
	f.Add([]byte(`{"cluster":{"name":"demo","endpoint":"https://x","certificateAuthority":{"data":"eA=="}}}`))
	f.Add([]byte(`{"cluster":null}`))
	f.Add([]byte(`{"cluster":{"name":7}}`))
	f.Add([]byte(`[]`))
	s := &Server{cfg: Config{Clusters: map[string]Cluster{"*": {Endpoint: "https://127.0.0.1:6443", CAData: "TE9DQUw="}}}}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := s.rewriteCluster(body)
		if err == nil && !json.Valid(out) {
			t.Fatalf("rewrite of %q gave invalid JSON %q", body, out)
		}
	})
}
