package helmrelease

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/lambda-eks/lambda-eks/handler"
)

// FuzzDecodeEvent feeds raw payloads and custom resource properties to the
// decoders: a request that passes is one Resolve accepts or refuses with
// InvalidEvent, never a panic or another code.
func FuzzDecodeEvent(f *testing.F) {
	for _, seed := range []string{
		`{"action":"helm-upgrade","release":"web","chart":"demo","repository":"https://charts.example.com","values":{"a":[1,{"b":null}]},"wait":"5m"}`,
		`{"action":"helm-upgrade","release":"web","chart":"oci://r.example/c/demo","version":">=1.0.0 <2","atomic":true,"dryRun":true}`,
		`{"action":"helm-rollback","release":"web","revision":2,"wait":true}`,
		`{"action":"helm-uninstall","release":"web","namespace":"apps","cluster":"demo","region":"eu-west-1","roleArn":"arn:aws:iam::210987654321:role/x"}`,
		`{"action":"helm-status","release":"web","release":"x"}`,
		`{"Release":"web","Chart":"demo","Repository":"https://x.example","Values":"{\"a\":1}","Wait":"120","Atomic":"true"}`,
		`[]`, `null`, `{"values":` + `{"a":{"a":{"a":1}}}` + `}`,
	} {
		f.Add([]byte(seed))
	}
	cfg := handler.Config{Cluster: "demo", Region: "us-east-1", Namespace: "default", SessionName: "lambda-eks"}
	check := func(t *testing.T, err error) {
		var e *handler.Error
		if err != nil && (!errors.As(err, &e) || e.Code != handler.InvalidEvent) {
			t.Fatalf("error %v is not InvalidEvent", err)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := DecodeEvent(raw)
		check(t, err)
		if err == nil {
			_, err = Resolve(ev, cfg)
			check(t, err)
		}
		ev, err = decodeHelmProperties(json.RawMessage(raw), "ResourceProperties", ActionUpgrade)
		check(t, err)
		if err == nil {
			_, err = Resolve(ev, cfg)
			check(t, err)
		}
	})
}
