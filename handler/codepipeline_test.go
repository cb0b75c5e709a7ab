package handler

import (
	"archive/zip"
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func TestDecodePipelineParams(t *testing.T) {
	t.Parallel()
	p, err := DecodePipelineParams(`{"pipeline":"web","namespace":"apps","files":["a.yaml"],"prune":false,"wait":"10m"}`)
	if err != nil {
		t.Fatal(err)
	}
	if p.owner() != "codepipeline/web/deploy" || *p.Prune || p.Wait != "10m" {
		t.Errorf("%+v owner %s", p, p.owner())
	}
	for _, bad := range []string{``, `{}`, `{"pipeline":"web","Namespace":"x"}`, `{"pipeline":"web","files":["a"],"directory":"k8s"}`,
		`{"pipeline":"we\u0000b"}`, `not json`, `{"pipeline":"web","replicas":2}`} {
		if _, err := DecodePipelineParams(bad); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
			t.Errorf("UserParameters %q: %v, want InvalidEvent", bad, err)
		}
	}
}

func zipOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestManifestsOfZip(t *testing.T) {
	t.Parallel()
	z := zipOf(t, map[string]string{"k8s/b.yaml": "b: 1\n", "k8s/a.yml": "---\na: 1\n", "k8s/sub/c.json": "{}", "README.md": "x", "other/d.yaml": "d: 1\n"})
	for _, tc := range []struct {
		p    PipelineParams
		want string
		err  string
	}{
		{PipelineParams{}, "a: 1\n\n---\nb: 1\n\n---\n{}\n---\nd: 1\n", ""},
		{PipelineParams{Directory: "k8s"}, "a: 1\n\n---\nb: 1\n\n---\n{}", ""},
		{PipelineParams{Directory: "/k8s/sub/"}, "{}", ""},
		{PipelineParams{Files: []string{"other/d.yaml", "k8s/b.yaml"}}, "d: 1\n\n---\nb: 1\n", ""},
		{PipelineParams{Files: []string{"missing.yaml"}}, "", "not in the input artifact"},
		{PipelineParams{Directory: "nothing"}, "", "no .yaml"},
	} {
		got, err := manifestsOfZip(z, tc.p)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: %v, want %q", tc.p, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.p, err)
		} else if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%+v (-want +got):\n%s", tc.p, diff)
		}
	}
	if _, err := manifestsOfZip([]byte("not a zip"), PipelineParams{}); err == nil {
		t.Error("a non-zip accepted")
	}
}
