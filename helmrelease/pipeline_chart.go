package helmrelease

import (
	"bytes"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/ignore"

	"github.com/lambda-eks/lambda-eks/internal/codepipeline"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// maxValuesBytes bounds the values files a job reads from its artifact.
const maxValuesBytes = 4 << 20

// artifactChart is the chart a job deploys, loaded from its artifact.
type artifactChart struct {
	chart *chartv2.Chart
	// path is where it is in the artifact: a directory ("." for the root)
	// or a .tgz.
	path string
}

// chartOfZip loads the chart at name in the artifact z: a directory holding
// Chart.yaml (loaded as helm loads a chart directory, .helmignore
// honoured) or a packaged .tgz. An empty name is the artifact's only chart.
// Nothing is written to disk: the files are loaded from memory.
func chartOfZip(z *codepipeline.Zip, name string) (artifactChart, error) {
	if name == "" {
		found := chartsInZip(z)
		switch len(found) {
		case 0:
			return artifactChart{}, invoke.Invalid("the input artifact holds no chart (no Chart.yaml, no .tgz); give the chart's path in UserParameters' chart")
		case 1:
			name = found[0]
		default:
			return artifactChart{}, invoke.Invalid("the input artifact holds %d charts (%s): name one in UserParameters' chart", len(found), list(found))
		}
	}
	p, err := cleanArtifactPath("chart", name)
	if err != nil {
		return artifactChart{}, err
	}
	var ch *chartv2.Chart
	if strings.HasSuffix(p, ".tgz") && z.Has(p) {
		data, err := z.Read(p, maxChartBytes)
		if err != nil {
			return artifactChart{}, err
		}
		if len(data) > maxChartBytes {
			return artifactChart{}, invoke.Invalid("chart %s of the input artifact is larger than %d bytes", p, maxChartBytes)
		}
		if ch, err = loader.LoadArchive(bytes.NewReader(data)); err != nil {
			return artifactChart{}, invoke.Invalid("chart %s of the input artifact is not a chart archive: %s", p, err.Error())
		}
	} else {
		if ch, err = loadZipDir(z, p); err != nil {
			return artifactChart{}, err
		}
		if p == "." {
			p = "./"
		} else {
			p += "/"
		}
	}
	return artifactChart{chart: ch, path: p}, nil
}

// chartsInZip lists the artifact's charts: the directories holding a
// Chart.yaml ("." for the root) and the .tgz files, except those inside
// another chart (its subcharts).
func chartsInZip(z *codepipeline.Zip) []string {
	var dirs []string
	for _, n := range z.Names() {
		if path.Base(n) == "Chart.yaml" {
			dirs = append(dirs, path.Dir(n))
		}
	}
	inside := func(n string) bool {
		return slices.ContainsFunc(dirs, func(d string) bool { return d != n && (d == "." || strings.HasPrefix(n, d+"/")) })
	}
	var found []string
	for _, d := range dirs {
		if !inside(d) {
			found = append(found, d)
		}
	}
	for _, n := range z.Names() {
		if strings.HasSuffix(n, ".tgz") && !inside(n) {
			found = append(found, n)
		}
	}
	slices.Sort(found)
	return found
}

// loadZipDir loads the chart directory dir of the artifact as helm's
// directory loader does: its .helmignore (with helm's defaults) leaves
// files out, and the rest are the chart's files.
func loadZipDir(z *codepipeline.Zip, dir string) (*chartv2.Chart, error) {
	prefix := dir + "/"
	if dir == "." {
		prefix = ""
	}
	if !z.Has(prefix + "Chart.yaml") {
		return nil, invoke.Invalid("chart %s of the input artifact: no Chart.yaml there (give a chart directory or a .tgz)", dir)
	}
	rules := ignore.Empty()
	if z.Has(prefix + ignore.HelmIgnore) {
		data, err := z.Read(prefix+ignore.HelmIgnore, maxValuesBytes)
		if err != nil {
			return nil, err
		}
		if rules, err = ignore.Parse(bytes.NewReader(data)); err != nil {
			return nil, invoke.Invalid("chart %s of the input artifact: %s: %s", dir, ignore.HelmIgnore, err.Error())
		}
	}
	rules.AddDefaults()
	var files []*archive.BufferedFile
	total := 0
	for _, n := range z.Names() {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		rel := strings.TrimPrefix(n, prefix)
		if ignored(rules, rel) {
			continue
		}
		data, err := z.Read(n, maxChartBytes-total)
		if err != nil {
			return nil, err
		}
		if total += len(data); total > maxChartBytes {
			return nil, invoke.Invalid("chart %s of the input artifact is larger than %d bytes", dir, maxChartBytes)
		}
		files = append(files, &archive.BufferedFile{Name: rel, Data: data})
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, invoke.Invalid("chart %s of the input artifact does not load: %s", dir, err.Error())
	}
	if err := ch.Validate(); err != nil {
		return nil, invoke.Invalid("chart %s of the input artifact is not valid: %s", dir, err.Error())
	}
	return ch, nil
}

// ignored reports a file of the chart (rel, slash-separated) that the rules
// leave out: the file itself, or a directory it is in.
func ignored(rules *ignore.Rules, rel string) bool {
	if rel == "Chart.yaml" {
		return false // helm's loader never ignores it
	}
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		if rules.Ignore(strings.Join(parts[:i], "/"), entry{name: parts[i-1], dir: true}) {
			return true
		}
	}
	return rules.Ignore(rel, entry{name: parts[len(parts)-1]})
}

// entry is a zip entry as the ignore rules see a file (fs.FileInfo).
type entry struct {
	name string
	dir  bool
}

func (e entry) Name() string { return e.name }
func (e entry) Size() int64  { return 0 }
func (e entry) Mode() fs.FileMode {
	if e.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (e entry) ModTime() time.Time { return time.Time{} }
func (e entry) IsDir() bool        { return e.dir }
func (e entry) Sys() any           { return nil }

// valuesOfZip merges the values files of the artifact in order (a later
// file's keys win, maps merged, as helm -f merges them), then vals over
// them, as helm merges --set over -f.
func valuesOfZip(z *codepipeline.Zip, names []string, vals map[string]any) (map[string]any, error) {
	out := map[string]any{}
	total := 0
	for _, name := range names {
		p, err := cleanArtifactPath("valuesFiles", name)
		if err != nil {
			return nil, err
		}
		if !z.Has(p) {
			return nil, invoke.Invalid("UserParameters: values file %q is not in the input artifact", name)
		}
		data, err := z.Read(p, maxValuesBytes-total)
		if err != nil {
			return nil, err
		}
		if total += len(data); total > maxValuesBytes {
			return nil, invoke.Invalid("the values files of the input artifact are larger than %d bytes", maxValuesBytes)
		}
		v, err := loader.LoadValues(bytes.NewReader(data))
		if err != nil {
			return nil, invoke.Invalid("values file %s of the input artifact: %s", p, err.Error())
		}
		out = loader.MergeMaps(out, v)
	}
	if vals != nil {
		out = loader.MergeMaps(out, vals)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
