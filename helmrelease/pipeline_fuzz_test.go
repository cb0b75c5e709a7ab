package helmrelease

import (
	"errors"
	"testing"

	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// FuzzPipelineParams feeds UserParameters to the decoder: a refusal is an
// InvalidEvent *invoke.Error (never a panic, never another code), and
// parameters that decode either resolve to a request whose target
// auth.Target.Validate accepts or are refused as InvalidEvent too.
func FuzzPipelineParams(f *testing.F) {
	for _, seed := range []string{
		`{"pipeline":"web","release":"web","namespace":"apps","chart":"deploy/web","valuesFiles":["a.yaml","b.yaml"],"values":{"a":{"b":[1]}},"wait":"10m","atomic":true}`,
		`{"pipeline":"web","action":"Helm","release":"web","wait":false,"dryRun":true,"createNamespace":true}`,
		`{"pipeline":"web","release":"web","roleArn":"arn:aws:iam::210987654321:role/x","externalId":"e","cluster":"c","region":"eu-west-1"}`,
		`{"pipeline":"web","release":"web","wait":true,"wait":false}`, `[]`, ``, `{"values":null}`, `{"chart":"../x"}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := DecodePipelineParams(s)
		invalidOnly(t, "DecodePipelineParams", err)
		if err != nil {
			return
		}
		req, err := p.request(testDefaults)
		invalidOnly(t, "request", err)
		if err == nil {
			if verr := req.Target.Validate(); verr != nil {
				t.Fatalf("request accepted target %+v that Validate refuses: %v", req.Target, verr)
			}
		}
	})
}

// FuzzArtifact feeds zips to the chart and values loaders: whatever an
// artifact holds, the job's answer is an InvalidEvent (a
// ConfigurationError), never a panic.
func FuzzArtifact(f *testing.F) {
	f.Add(zipOf(f, merged(under("web", testChart("web", "1.0.0")), map[string]string{"values.yaml": "a: 1\n"})))
	f.Add(zipOf(f, map[string]string{"web.tgz": tgzOf(f, "web", testChart("web", "1.0.0")), "v.yaml": "[1, 2]"}))
	f.Add(zipOf(f, map[string]string{"Chart.yaml": "name: x\n", ".helmignore": "[\n", "values.yaml": "a: {b: 1}\n---\nc: 2\n"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		z, err := codepipeline.OpenZip(b)
		invalidOnly(t, "OpenZip", err)
		if err != nil {
			return
		}
		_, err = chartOfZip(z, "")
		invalidOnly(t, "chartOfZip", err)
		for _, n := range z.Names() {
			_, err = valuesOfZip(z, []string{n}, nil)
			invalidOnly(t, "valuesOfZip "+n, err)
		}
	})
}

func invalidOnly(t *testing.T, what string, err error) {
	t.Helper()
	var e *invoke.Error
	if err != nil && (!errors.As(err, &e) || e.Code != invoke.InvalidEvent) {
		t.Fatalf("%s: error %v (%T) is not an InvalidEvent *invoke.Error", what, err, err)
	}
}
