package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// localeks codepipeline EVENT_FILE|-
//
// plays CodePipeline for one CodePipeline.job event: a sample artifact zip
// (k8s/web.yaml: a ConfigMap and a Deployment named web-pipeline) is
// uploaded to moto's S3 where the event's input artifact says, the job gets
// a fresh id and artifact credentials from moto's STS (a session of its
// own, as CodePipeline issues), the bootstrap is invoked, again with each
// continuation token it answers, and the shim's record of the answers to
// that job (/__codepipeline) is printed on stdout. Exit status: 0 when the
// job succeeded, 1 when it failed or got no answer, 2 usage, 4 harness
// failure. Flags as for invoke.
//
// A job whose UserParameters name a release (route; or --helm) is the Helm
// function's: its sample artifact is the replica's demo chart 0.1.0 as a
// directory, chart/, and a values file, values/pipeline.yaml; the Helm
// function runs as its own role with the replica's Helm parts.

// helmValues is the Helm sample artifact's values/pipeline.yaml.
const helmValues = "message: hello from CodePipeline\n"

// sampleArtifact is what the sample job deploys.
var sampleArtifact = map[string]string{
	"k8s/web.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: web-pipeline
data:
  greeting: hello from CodePipeline
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-pipeline
spec:
  replicas: 1
  selector:
    matchLabels: {app: web-pipeline}
  template:
    metadata:
      labels: {app: web-pipeline}
    spec:
      containers:
        - name: web
          image: nginx:1.27
`,
	"README.md": "not a manifest: the action takes k8s/*.yaml\n",
}

func codepipelineInvoke(ctx context.Context, args []string) int {
	c := eventCommand{name: "codepipeline"}
	if code := c.parse(args, 60*time.Second); code != 0 {
		return code
	}
	var event map[string]map[string]any
	if err := json.Unmarshal(c.event, &event); err != nil || event["CodePipeline.job"] == nil {
		return c.fail(fmt.Errorf("%s is not a CodePipeline.job event", c.file))
	}
	job := event["CodePipeline.job"]
	data, _ := job["data"].(map[string]any)
	arts, _ := data["inputArtifacts"].([]any)
	if len(arts) == 0 {
		return c.fail(fmt.Errorf("%s has no input artifact", c.file))
	}
	loc, _ := arts[0].(map[string]any)["location"].(map[string]any)["s3Location"].(map[string]any)
	bucket, _ := loc["bucketName"].(string)
	key, _ := loc["objectKey"].(string)

	spec, files := mainFunction, sampleArtifact
	if fn, _ := route(c.event); fn == helmFunction.name || c.helm {
		c.helm, spec = true, helmFunction
		var err error
		if files, err = helmSampleArtifact(); err != nil {
			return c.fail(err)
		}
	}
	s, cfg, err := c.up(ctx, c.helm)
	if err != nil {
		return c.fail(err)
	}
	proxy, stop, err := codepipelineShim(ctx, s)
	if err != nil {
		return c.fail(err)
	}
	defer stop()
	if proxy != "" {
		c.extra = append(c.extra, "HTTPS_PROXY="+proxy, "https_proxy="+proxy)
	}
	fn, err := c.startFunction(ctx, s, cfg, spec, c.bootstrap)
	if err != nil {
		return c.fail(err)
	}
	defer fn.Stop()

	direct := s3.NewFromConfig(s.MotoConfig(), func(o *s3.Options) { o.UsePathStyle = true })
	if err := uploadArtifact(ctx, direct, bucket, key, files); err != nil {
		return c.fail(err)
	}
	creds, err := s.AssumeRole(ctx, stack.ExecRole, "codepipeline-job")
	if err != nil {
		return c.fail(err)
	}
	data["artifactCredentials"] = map[string]any{"accessKeyId": creds.AccessKeyID, "secretAccessKey": creds.SecretAccessKey,
		"sessionToken": creds.SessionToken, "expirationTime": creds.Expires.UnixMilli()}
	id := newJobID()
	job["id"] = id
	slog.Info("codepipeline job", "id", id, "artifact", "s3://"+bucket+"/"+key)

	shimURL := proxy
	if shimURL == "" {
		shimURL = "http://127.0.0.1:" + strconv.Itoa(s.Ports.Shim)
	}
	var calls []shim.JobCall
	for range 20 {
		payload, err := json.Marshal(event)
		if err != nil {
			return c.fail(err)
		}
		_, fnErr, took, err := timedInvoke(ctx, fn, payload)
		if err != nil {
			return c.fail(err)
		}
		if fnErr != nil {
			return functionFailed("no answer: the function failed", fnErr, took.Round(time.Millisecond))
		}
		if calls, err = jobCalls(ctx, shimURL, id); err != nil {
			return c.fail(err)
		}
		if len(calls) == 0 {
			return c.fail(errors.New("the function returned, but no answer reached CodePipeline"))
		}
		last := calls[len(calls)-1]
		if last.ContinuationToken == "" || last.Status != http.StatusOK {
			break
		}
		slog.Info("continuation", "token", last.ContinuationToken, "summary", last.ExecutionSummary)
		data["continuationToken"] = last.ContinuationToken
	}
	out, _ := json.MarshalIndent(calls, "", "  ")
	fmt.Println(string(out))
	if last := calls[len(calls)-1]; last.Result != "success" || last.ContinuationToken != "" || last.Status != http.StatusOK {
		return 1
	}
	return 0
}

// codepipelineShim returns "" when the replica's shim answers CodePipeline
// (it lists /__codepipeline); else, for a replica started by an older
// localeks, it starts a shim of this build configured as the replica's and
// returns its URL for the function's HTTPS_PROXY.
func codepipelineShim(ctx context.Context, s *stack.Stack) (string, func(), error) {
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(s.Ports.Shim) + "/__codepipeline")
	if err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return "", func() {}, nil
		}
	}
	b, err := os.ReadFile(filepath.Join(s.Paths.Dir, "shim.json"))
	if err != nil {
		return "", nil, err
	}
	var cfg shim.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", nil, err
	}
	srv, err := shim.New(cfg)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeListener(ctx, ln) }()
	slog.Info("the replica's shim predates CodePipeline answers: using one of this build", "addr", ln.Addr().String())
	return "http://" + ln.Addr().String(), func() { cancel(); <-done }, nil
}

// helmSampleArtifact is the Helm sample job's artifact: the demo chart
// 0.1.0 unpacked under chart/, and values/pipeline.yaml.
func helmSampleArtifact() (map[string]string, error) {
	tgz, err := stack.DemoChartArchive("0.1.0")
	if err != nil {
		return nil, err
	}
	gz, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	files := map[string]string{"values/pipeline.yaml": helmValues, "README.md": "the chart is chart/, its values values/pipeline.yaml\n"}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return nil, err
		}
		_, name, _ := strings.Cut(hdr.Name, "/")
		files["chart/"+name] = string(b)
	}
}

func uploadArtifact(ctx context.Context, c *s3.Client, bucket, key string, files map[string]string) error {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(body)); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	var exists *s3types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("create bucket %s in moto: %w", bucket, err)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(buf.Bytes())}); err != nil {
		return fmt.Errorf("upload the artifact to moto: %w", err)
	}
	return nil
}

func jobCalls(ctx context.Context, shimURL, id string) ([]shim.JobCall, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, shimURL+"/__codepipeline", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var all, out []shim.JobCall
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		return nil, fmt.Errorf("decode /__codepipeline: %w", err)
	}
	for _, c := range all {
		if c.JobID == id {
			out = append(out, c)
		}
	}
	return out, nil
}

func newJobID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
