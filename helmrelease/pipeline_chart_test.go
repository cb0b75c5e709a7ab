package helmrelease

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// testChart is a chart's files, for artifacts.
func testChart(name, version string) map[string]string {
	return map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: " + name + "\nversion: " + version + "\nappVersion: \"4.5\"\n",
		"values.yaml": "message: default\nreplicas: 1\nnested: {a: 1, b: 1}\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n" +
			"data:\n  message: {{ .Values.message | quote }}\n",
	}
}

// under puts files under dir/.
func under(dir string, files map[string]string) map[string]string {
	out := map[string]string{}
	for n, c := range files {
		out[dir+"/"+n] = c
	}
	return out
}

func merged(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func zipOf(tb testing.TB, files map[string]string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func openZip(tb testing.TB, files map[string]string) *codepipeline.Zip {
	tb.Helper()
	z, err := codepipeline.OpenZip(zipOf(tb, files))
	if err != nil {
		tb.Fatal(err)
	}
	return z
}

// tgzOf packages files as helm package does, under name/.
func tgzOf(tb testing.TB, name string, files map[string]string) string {
	tb.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for n, c := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name + "/" + n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			tb.Fatal(err)
		}
		_, _ = tw.Write([]byte(c))
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.String()
}

func TestChartOfZip(t *testing.T) {
	t.Parallel()
	web := testChart("web", "1.2.3")
	sub := under("charts/sub", testChart("sub", "0.1.0"))
	for _, tc := range []struct {
		name    string
		files   map[string]string
		chart   string
		want    string // chart name@version at path
		wantErr string // InvalidEvent naming this
	}{
		{"a directory", merged(under("deploy/web", web), map[string]string{"README.md": "x"}), "deploy/web", "web@1.2.3 deploy/web/", ""},
		{"a directory, with a slash", under("deploy/web", web), "/deploy/web/", "web@1.2.3 deploy/web/", ""},
		{"the only chart", merged(under("deploy/web", web), map[string]string{"k8s/x.yaml": "a: b"}), "", "web@1.2.3 deploy/web/", ""},
		{"the root", web, "", "web@1.2.3 ./", ""},
		{"subcharts are not charts of the artifact", under("web", merged(web, sub)), "", "web@1.2.3 web/", ""},
		{"a package", map[string]string{"dist/web-1.2.3.tgz": tgzOf(t, "web", web)}, "dist/web-1.2.3.tgz", "web@1.2.3 dist/web-1.2.3.tgz", ""},
		{"the only package", map[string]string{"dist/web-1.2.3.tgz": tgzOf(t, "web", web)}, "", "web@1.2.3 dist/web-1.2.3.tgz", ""},
		{"two charts", merged(under("a", web), under("b", web)), "", "", "2 charts (a, b)"},
		{"no chart", map[string]string{"k8s/x.yaml": "a: b"}, "", "", "no chart"},
		{"no Chart.yaml there", under("deploy/web", web), "deploy", "", "chart deploy of the input artifact: no Chart.yaml"},
		{"out of the artifact", under("deploy/web", web), "../web", "", "leaves the input artifact"},
		{"a bad Chart.yaml", under("web", merged(web, map[string]string{"Chart.yaml": "apiVersion: v2\nname: web\n"})), "", "", "chart web of the input artifact does not load: validation: chart.metadata.version is required"},
		{"not an archive", map[string]string{"web.tgz": "not gzip"}, "web.tgz", "", "web.tgz of the input artifact is not a chart archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ac, err := chartOfZip(openZip(t, tc.files), tc.chart)
			if tc.wantErr != "" {
				if err == nil || invoke.AsError(err).Code != invoke.InvalidEvent || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%v, want InvalidEvent naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ac.chart.Metadata.Name + "@" + ac.chart.Metadata.Version + " " + ac.path; got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// .helmignore leaves files out of a chart directory, as helm's directory
// loader does; a subchart's files stay the subchart's.
func TestChartOfZipIgnore(t *testing.T) {
	t.Parallel()
	files := under("web", merged(testChart("web", "1.0.0"), map[string]string{
		".helmignore":           "*.md\nsecrets/\n",
		"README.md":             "left out",
		"secrets/key.txt":       "left out",
		"files/config.txt":      "kept",
		"charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
	}))
	ac, err := chartOfZip(openZip(t, files), "web")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range ac.chart.Files {
		names = append(names, f.Name)
	}
	if diff := cmp.Diff([]string{".helmignore", "files/config.txt"}, names); diff != "" {
		t.Errorf("chart files (-want +got):\n%s", diff)
	}
	if deps := ac.chart.Dependencies(); len(deps) != 1 || deps[0].Name() != "sub" {
		t.Errorf("dependencies %v, want sub", deps)
	}
}

// Values files merge in order, maps merged, and the values object over
// them, as helm -f ... --set does.
func TestValuesOfZip(t *testing.T) {
	t.Parallel()
	z := openZip(t, map[string]string{
		"values/base.yaml": "message: base\nnested: {a: 2, b: 2}\nlist: [1, 2]\n",
		"values/prod.yaml": "message: prod\nnested: {b: 3}\n---\nextra: true\n",
		"values/bad.yaml":  "message: [unclosed\n",
	})
	got, err := valuesOfZip(z, []string{"values/base.yaml", "./values/prod.yaml"}, map[string]any{"nested": map[string]any{"c": "set"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"message": "prod", "nested": map[string]any{"a": float64(2), "b": float64(3), "c": "set"},
		"list": []any{float64(1), float64(2)}, "extra": true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("values (-want +got):\n%s", diff)
	}
	for name, files := range map[string][]string{
		"values file \"values/none.yaml\" is not in the input artifact": {"values/none.yaml"},
		"values file values/bad.yaml of the input artifact":             {"values/bad.yaml"},
		"leaves the input artifact":                                     {"../x.yaml"},
	} {
		if _, err := valuesOfZip(z, files, nil); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: %v, want InvalidEvent naming %q", files, err, name)
		}
	}
	if got, err := valuesOfZip(z, nil, nil); err != nil || got != nil {
		t.Errorf("no values: %v, %v", got, err)
	}
}

func TestDecodePipelineParams(t *testing.T) {
	t.Parallel()
	p, err := DecodePipelineParams(`{"pipeline":"web","release":"web","namespace":"apps","chart":"deploy/web","valuesFiles":["v.yaml"],` +
		`"values":{"a":{"b":1}},"wait":"20m","atomic":true,"createNamespace":true,"roleArn":"arn:aws:iam::123456789012:role/x"}`)
	if err != nil {
		t.Fatal(err)
	}
	if p.Action != "deploy" || p.wait().Minutes() != 20 || p.owner() != "codepipeline/web/deploy" || len(p.ownerLabel()) != 16 {
		t.Errorf("decoded %+v (owner %s, label %s)", p, p.owner(), p.ownerLabel())
	}
	for s, want := range map[string]float64{`{"pipeline":"p","release":"r"}`: 5, `{"pipeline":"p","release":"r","wait":true}`: 5,
		`{"pipeline":"p","release":"r","wait":false}`: 0, `{"pipeline":"p","release":"r","wait":"0s"}`: 0} {
		p, err := DecodePipelineParams(s)
		if err != nil || p.wait().Minutes() != want {
			t.Errorf("%s: wait %s, %v; want %vm", s, p.wait(), err, want)
		}
	}
	for name, s := range map[string]string{
		"empty":           ``,
		"not an object":   `[1]`,
		"unknown field":   `{"pipeline":"p","release":"r","repository":"https://x"}`,
		"wrong case":      `{"Pipeline":"p","release":"r"}`,
		"no pipeline":     `{"release":"r"}`,
		"wait too long":   `{"pipeline":"p","release":"r","wait":"2h"}`,
		"wait a number":   `{"pipeline":"p","release":"r","wait":5}`,
		"values a list":   `{"pipeline":"p","release":"r","values":[1]}`,
		"values repeated": `{"pipeline":"p","release":"r","values":{"a":1,"a":2}}`,
		"oci chart":       `{"pipeline":"p","release":"r","chart":"oci://r.example/c"}`,
		"control":         "{\"pipeline\":\"p\\n\",\"release\":\"r\"}",
		"trailing":        `{"pipeline":"p","release":"r"} {}`,
	} {
		_, err := DecodePipelineParams(s)
		if e := invoke.AsError(err); err == nil || e.Code != invoke.InvalidEvent || !strings.Contains(e.Message, "UserParameters") && name != "control" {
			t.Errorf("%s: %v, want InvalidEvent about UserParameters", name, err)
		}
	}
	// What only Resolve checks: the release's name and the target.
	for _, s := range []string{`{"pipeline":"p"}`, `{"pipeline":"p","release":"Bad_Name"}`, `{"pipeline":"p","release":"r","namespace":"Bad"}`} {
		p, err := DecodePipelineParams(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if _, err := p.request(testDefaults); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
			t.Errorf("%s: %v, want InvalidEvent", s, err)
		}
	}
}
