package handler

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

func TestDecodePipelineJob(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../events/codepipeline-job.json")
	if err != nil {
		t.Fatal(err)
	}
	if !IsPipelineJob(raw) {
		t.Fatal("the sample is not a pipeline job")
	}
	ev, err := DecodePipelineJob(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Job.Data.ArtifactCredentials.ExpirationTime != 1796583600000 || ev.Job.Data.InputArtifacts[0].Location.S3Location.ObjectKey == "" {
		t.Errorf("decoded %+v", ev.Job.Data)
	}
	if s := fmt.Sprintf("%v %+v", ev.Job.Data.ArtifactCredentials, ev.Job.Data); strings.Contains(s, "replaced-by-local-sh") {
		t.Errorf("the artifact credentials print: %s", s)
	}
	for name, bad := range map[string]string{
		"unknown field":   strings.Replace(string(raw), `"accountId"`, `"acountId"`, 1),
		"wrong case":      strings.Replace(string(raw), `"inputArtifacts"`, `"InputArtifacts"`, 1),
		"no id":           strings.Replace(string(raw), `"id": "c0d3b1e5-0000-4000-8000-00000000cafe",`, ``, 1),
		"trailing":        string(raw) + "{}",
		"not an object":   `["CodePipeline.job"]`,
		"duplicate field": strings.Replace(string(raw), `"accountId": "123456789012",`, `"accountId": "1", "accountId": "2",`, 1),
	} {
		if _, err := DecodePipelineJob([]byte(bad)); err == nil || invoke.AsError(err).Code != invoke.InvalidEvent {
			t.Errorf("%s: %v, want InvalidEvent", name, err)
		}
	}
	if IsPipelineJob([]byte(`{"action":"apply"}`)) || IsPipelineJob([]byte(`{"RequestType":"Create"}`)) {
		t.Error("an event or a custom resource taken for a job")
	}
}

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

func TestFailureType(t *testing.T) {
	t.Parallel()
	for code, want := range map[invoke.Code]string{invoke.InvalidEvent: "ConfigurationError", invoke.Forbidden: "PermissionError",
		invoke.Unauthorized: "PermissionError", invoke.Unavailable: "SystemUnavailable", invoke.Conflict: "JobFailed", RolloutFailed: "JobFailed"} {
		if got := failureType(code); got != want {
			t.Errorf("%s: %s, want %s", code, got, want)
		}
	}
	if n := len(jobMessage(strings.Repeat("x", 9000))); n > 5000 {
		t.Errorf("message of %d characters", n)
	}
}
