package helmrelease

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Bounds on what is downloaded: an index and a chart are read into memory.
const (
	maxIndexBytes = 64 << 20
	maxChartBytes = 32 << 20
)

// ChartNotFoundError is a chart, or a version of it, that the repository
// or registry does not have.
type ChartNotFoundError struct {
	Ref     ChartRef
	Problem string
	// Err is the registry's answer, when there was one.
	Err error
}

func (e *ChartNotFoundError) Error() string { return e.Ref.String() + ": " + e.Problem }

func (e *ChartNotFoundError) Unwrap() error { return e.Err }

// RepositoryError is a repository or registry that answered, but not with
// a chart: a refusal (401/403) or an answer that is not a chart repository.
type RepositoryError struct {
	Ref    ChartRef
	Status int // HTTP status, when there was one
	Err    error
}

func (e *RepositoryError) Error() string { return e.Ref.String() + ": " + e.Err.Error() }

func (e *RepositoryError) Unwrap() error { return e.Err }

// fetcher downloads charts for one invocation: its HTTP client's timeout
// ends before the invocation's deadline.
type fetcher struct {
	hc    *http.Client
	creds Credentials
	ecr   *ECRTokens
}

// newChartTransport returns the transport of every chart download, from
// repositories and registries alike. The Handler builds it once, so that
// warm invocations reuse its connections (no new DNS look-up and TLS
// handshake) and no idle connections are left behind in dropped transports.
func newChartTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSHandshakeTimeout = 10 * time.Second
	return tr
}

// newFetcher returns a fetcher on the process's transport tr whose every
// request ends by the deadline. A nil tr is http.DefaultTransport.
func newFetcher(ctx context.Context, tr *http.Transport, creds Credentials, ecrTokens *ECRTokens) *fetcher {
	hc := &http.Client{Timeout: 5 * time.Minute}
	if tr != nil {
		hc.Transport = tr
	}
	if d, ok := ctx.Deadline(); ok {
		hc.Timeout = max(time.Until(d), time.Millisecond)
	}
	return &fetcher{hc: hc, creds: creds, ecr: ecrTokens}
}

// credentialsFor returns the credentials for host, if any.
func (f *fetcher) credentialsFor(ctx context.Context, host string) (*BasicAuth, error) {
	if region := f.ecr.region(host); region != "" {
		a, err := f.ecr.auth(ctx, region)
		if err != nil {
			return nil, err
		}
		return &a, nil
	}
	if a, ok := f.creds[host]; ok {
		return &a, nil
	}
	return nil, nil
}

// fetch downloads and loads the chart ref names.
func (f *fetcher) fetch(ctx context.Context, ref ChartRef) (*chartv2.Chart, string, error) {
	var (
		data    []byte
		version string
		err     error
	)
	if ref.OCI != "" {
		data, version, err = f.pullOCI(ctx, ref)
	} else {
		data, version, err = f.getHTTPS(ctx, ref)
	}
	if err != nil {
		return nil, "", err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, "", &RepositoryError{Ref: ref, Err: fmt.Errorf("version %s is not a valid chart archive: %w", version, err)}
	}
	return ch, version, nil
}

// pullOCI resolves the version among the registry's tags and pulls it.
func (f *fetcher) pullOCI(ctx context.Context, ref ChartRef) ([]byte, string, error) {
	u, _ := url.Parse(ref.OCI) // checked by Resolve
	opts := []registry.ClientOption{
		registry.ClientOptHTTPClient(f.hc),
		registry.ClientOptEnableCache(true),
		// No credentials file or docker config: credentials come from
		// the environment or ECR only.
		registry.ClientOptCredentialsFile(os.TempDir() + "/lambda-eks-helm-no-credentials.json"),
	}
	a, err := f.credentialsFor(ctx, u.Host)
	if err != nil {
		return nil, "", err
	}
	if a != nil {
		opts = append(opts, registry.ClientOptBasicAuth(a.Username, a.Password))
	}
	rc, err := registry.NewClient(opts...)
	if err != nil {
		return nil, "", fmt.Errorf("registry client: %w", err)
	}
	base := u.Host + u.Path
	version := ref.Version
	if _, serr := semver.StrictNewVersion(version); serr != nil {
		tags, err := rc.Tags(base)
		if err != nil {
			return nil, "", ociError(ref, err)
		}
		if version, err = matchTag(ref, tags); err != nil {
			return nil, "", err
		}
	}
	// Pull writes a version's "+" as the "_" of its tag (OCI tags have no
	// "+"), as Tags reads it back.
	res, err := rc.Pull(base + ":" + version)
	if err != nil {
		return nil, "", ociError(ref, err)
	}
	if res.Chart == nil || len(res.Chart.Data) == 0 {
		return nil, "", &RepositoryError{Ref: ref, Err: errors.New("the artifact holds no chart")}
	}
	return res.Chart.Data, version, nil
}

// matchTag picks the tag of ref's version among a registry's tags (as
// registry.Client.Tags lists them: semantic versions, newest first): the
// newest that satisfies the constraint, the newest of all with none.
// Helm's own choice (GetTagMatchingVersionOrConstraint) would first take a
// tag equal to the version; for the versions that come here (not strict
// semantic versions, which are pulled as they are) no tag is, so the
// choice is the constraint's.
func matchTag(ref ChartRef, tags []string) (string, error) {
	tag, err := registry.GetTagMatchingVersionOrConstraint(tags, ref.Version)
	if err != nil {
		return "", &ChartNotFoundError{Ref: ref, Problem: fmt.Sprintf("no tag matches (tags: %s)", list(tags))}
	}
	return tag, nil
}

// ociError words a registry error from the error types oras returns: a
// missing repository or tag (404, NAME_UNKNOWN, MANIFEST_UNKNOWN, or a
// manifest HEAD answered 404: errdef.ErrNotFound) is NotFound; any other
// answer keeps its status.
func ociError(ref ChartRef, err error) error {
	var resp *errcode.ErrorResponse
	status := 0
	if errors.As(err, &resp) {
		status = resp.StatusCode
	}
	if errors.Is(err, errdef.ErrNotFound) || status == http.StatusNotFound ||
		hasErrorCode(resp, errcode.ErrorCodeNameUnknown, errcode.ErrorCodeManifestUnknown) {
		return &ChartNotFoundError{Ref: ref, Problem: "the registry has no such repository or tag: " + err.Error(), Err: err}
	}
	return &RepositoryError{Ref: ref, Status: status, Err: err}
}

// hasErrorCode reports whether the registry's answer resp lists one of the
// distribution error codes.
func hasErrorCode(resp *errcode.ErrorResponse, codes ...string) bool {
	if resp == nil {
		return false
	}
	for _, e := range resp.Errors {
		if slices.Contains(codes, e.Code) {
			return true
		}
	}
	return false
}

// getHTTPS reads the repository's index.yaml, picks the version and
// downloads the chart, checking its digest when the index has one.
func (f *fetcher) getHTTPS(ctx context.Context, ref ChartRef) ([]byte, string, error) {
	indexURL := strings.TrimSuffix(ref.Repository, "/") + "/index.yaml"
	raw, err := f.get(ctx, ref, indexURL, maxIndexBytes)
	if err != nil {
		return nil, "", err
	}
	tmp, err := os.CreateTemp("", "helm-index-*.yaml")
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(raw); err != nil {
		_ = tmp.Close()
		return nil, "", err
	}
	if err := tmp.Close(); err != nil {
		return nil, "", err
	}
	idx, err := repo.LoadIndexFile(tmp.Name())
	if err != nil {
		return nil, "", &RepositoryError{Ref: ref, Err: fmt.Errorf("%s is not a chart repository index: %w", indexURL, err)}
	}
	cv, err := idx.Get(ref.Name, ref.Version)
	if err != nil {
		var versions []string
		for _, v := range idx.Entries[ref.Name] {
			versions = append(versions, v.Version)
		}
		if len(versions) == 0 {
			return nil, "", &ChartNotFoundError{Ref: ref, Problem: "the repository has no chart of that name"}
		}
		return nil, "", &ChartNotFoundError{Ref: ref, Problem: fmt.Sprintf("no such version (versions: %s)", list(versions))}
	}
	if len(cv.URLs) == 0 {
		return nil, "", &RepositoryError{Ref: ref, Err: fmt.Errorf("version %s has no download URL in the index", cv.Version)}
	}
	chartURL, err := repo.ResolveReferenceURL(ref.Repository, cv.URLs[0])
	if err != nil {
		return nil, "", &RepositoryError{Ref: ref, Err: err}
	}
	if !strings.HasPrefix(chartURL, "https://") {
		return nil, "", &RepositoryError{Ref: ref, Err: fmt.Errorf("version %s is served from %s: only https is accepted", cv.Version, chartURL)}
	}
	data, err := f.get(ctx, ref, chartURL, maxChartBytes)
	if err != nil {
		return nil, "", err
	}
	if cv.Digest != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, strings.TrimPrefix(cv.Digest, "sha256:")) {
			return nil, "", &RepositoryError{Ref: ref, Err: fmt.Errorf("version %s: the archive's sha256 %s is not the index's digest %s", cv.Version, got, cv.Digest)}
		}
	}
	return data, cv.Version, nil
}

// get reads at most limit bytes of rawURL, with the host's credentials.
func (f *fetcher) get(ctx context.Context, ref ChartRef, rawURL string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, &RepositoryError{Ref: ref, Err: err}
	}
	a, err := f.credentialsFor(ctx, req.URL.Host)
	if err != nil {
		return nil, err
	}
	if a != nil {
		req.SetBasicAuth(a.Username, a.Password)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", rawURL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch {
	case resp.StatusCode == http.StatusNotFound && strings.HasSuffix(rawURL, "/index.yaml"):
		return nil, &RepositoryError{Ref: ref, Status: resp.StatusCode, Err: fmt.Errorf("%s answered 404: not a chart repository", rawURL)}
	case resp.StatusCode == http.StatusNotFound:
		return nil, &ChartNotFoundError{Ref: ref, Problem: rawURL + " answered 404"}
	case resp.StatusCode != http.StatusOK:
		return nil, &RepositoryError{Ref: ref, Status: resp.StatusCode, Err: fmt.Errorf("%s answered %s", rawURL, resp.Status)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", rawURL, err)
	}
	if int64(len(data)) > limit {
		return nil, &RepositoryError{Ref: ref, Err: fmt.Errorf("%s is larger than %d bytes", rawURL, limit)}
	}
	return data, nil
}

// list names at most ten items.
func list(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	if len(items) > 10 {
		return strings.Join(items[:10], ", ") + ", ..."
	}
	return strings.Join(items, ", ")
}
