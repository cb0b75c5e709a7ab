package helmrelease

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// FuzzDecodeEvent feeds raw payloads and custom resource properties to the
// decoders. Whatever comes in: a refusal is an *invoke.Error of code
// InvalidEvent (never a panic, never another code); an event that decodes
// encodes again to one that decodes to the same Event; and a request that
// Resolve accepts names a target that auth.Target.Validate accepts.
func FuzzDecodeEvent(f *testing.F) {
	for _, seed := range []string{
		`{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://charts.example.com","values":{"a":[1,{"b":null}]},"wait":"5m"}`,
		`{"action":"helm-upgrade","release":"web","chart":"oci://r.example/c/demo","version":">=1.0.0 <2","atomic":true,"dryRun":true}`,
		`{"action":"helm-rollback","release":"web","revision":2,"wait":true}`,
		`{"action":"helm-uninstall","release":"web","namespace":"apps","cluster":"demo","region":"eu-west-1","roleArn":"arn:aws:iam::210987654321:role/x"}`,
		`{"action":"helm-status","release":"web","release":"x"}`,
		`{"Release":"web","Chart":"demo","Repository":"https://x.example","Values":"{\"a\":1}","Wait":"120","Atomic":"true"}`,
		`[]`, `null`, `{"values":` + `{"a":{"a":{"a":1}}}` + `}`, `{"wait":"1m30s","values":null}`,
	} {
		f.Add([]byte(seed))
	}
	defaults := invoke.Defaults{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"}
	invalid := func(t *testing.T, what string, err error) {
		t.Helper()
		var e *invoke.Error
		if err != nil && (!errors.As(err, &e) || e.Code != invoke.InvalidEvent) {
			t.Fatalf("%s: error %v (%T) is not an InvalidEvent *invoke.Error", what, err, err)
		}
	}
	resolve := func(t *testing.T, what string, ev Event) {
		t.Helper()
		req, err := Resolve(ev, defaults)
		invalid(t, what, err)
		if err == nil {
			if verr := req.Target.Validate(); verr != nil {
				t.Fatalf("%s: Resolve accepted target %+v that Validate refuses: %v", what, req.Target, verr)
			}
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := DecodeEvent(raw)
		invalid(t, "DecodeEvent", err)
		if err == nil {
			again, merr := json.Marshal(ev)
			if merr != nil {
				t.Fatalf("encode %+v: %v", ev, merr)
			}
			back, derr := DecodeEvent(again)
			if derr != nil {
				t.Fatalf("%s decodes, but not its encoding %s: %v", raw, again, derr)
			}
			if diff := cmp.Diff(normal(ev), normal(back)); diff != "" {
				t.Fatalf("%s: the encoding %s decodes to another event (-first +second):\n%s", raw, again, diff)
			}
			resolve(t, "Resolve", ev)
		}
		ev, err = decodeHelmProperties(json.RawMessage(raw), "ResourceProperties", ActionUpgrade)
		invalid(t, "decodeHelmProperties", err)
		if err == nil {
			resolve(t, "Resolve of properties", ev)
		}
	})
}

// normal is ev with its values in a normal form (keys sorted, no spacing,
// the same escapes): encoding may respell the payload's JSON, never change
// what it says.
func normal(ev Event) Event {
	if len(ev.Values) > 0 {
		dec := json.NewDecoder(bytes.NewReader(ev.Values))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) == nil {
			if b, err := json.Marshal(v); err == nil {
				ev.Values = b
			}
		}
	}
	return ev
}
