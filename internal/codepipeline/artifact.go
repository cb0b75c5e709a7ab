package codepipeline

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// MaxArtifactBytes bounds the input artifact's zip.
const MaxArtifactBytes = 32 << 20

// ReadArtifact reads the artifact's zip with the job's credentials, never
// the function's role: cfg gives the rest (region, HTTP client).
func ReadArtifact(ctx context.Context, cfg aws.Config, art Artifact, creds Credentials) ([]byte, error) {
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return nil, &invoke.Error{Code: invoke.Forbidden, Message: "the job has no artifactCredentials"}
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	})
	loc := art.Location.S3Location
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(loc.BucketName), Key: aws.String(loc.ObjectKey)})
	if err != nil {
		return nil, s3Error(ctx, art, err)
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(out.Body, MaxArtifactBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read input artifact %s: %w", art.Name, err)
	}
	if len(b) > MaxArtifactBytes {
		return nil, invoke.Invalid("input artifact %s is larger than %d bytes", art.Name, MaxArtifactBytes)
	}
	return b, nil
}

// s3Error words GetObject's error: a missing object is NotFound, a denied
// read Forbidden, the rest as invoke.Classify words AWS errors.
func s3Error(ctx context.Context, art Artifact, err error) error {
	loc := art.Location.S3Location
	where := fmt.Sprintf("input artifact %s at s3://%s/%s", art.Name, loc.BucketName, loc.ObjectKey)
	var (
		noKey    *s3types.NoSuchKey
		notFound *s3types.NotFound
		apiErr   smithy.APIError
	)
	hasCode := errors.As(err, &apiErr)
	switch {
	case errors.As(err, &noKey), errors.As(err, &notFound),
		// GetObject models NoSuchKey only: a missing bucket comes as a
		// generic error with its code.
		hasCode && apiErr.ErrorCode() == "NoSuchBucket":
		code := "NotFound"
		if hasCode {
			code = apiErr.ErrorCode()
		}
		return &invoke.Error{Code: invoke.NotFound, Err: err, Message: fmt.Sprintf("%s: %s; upload the manifest there or fix the URI", where, code)}
	case hasCode && (apiErr.ErrorCode() == "AccessDenied" || apiErr.ErrorCode() == "Forbidden" || apiErr.ErrorCode() == "AllAccessDisabled"):
		// S3 models no type for a denied read: its code is all there is.
		return &invoke.Error{Code: invoke.Forbidden, Err: err, Message: where + ": access denied with the job's artifact credentials"}
	}
	wrapped := fmt.Errorf("read %s: %w", where, auth.AsEndpointError(ctx, err))
	// The framework's typed checks: S3 throttling (SlowDown) or a 5xx
	// after the SDK's retries, an endpoint that did not answer, is
	// Unavailable (SystemUnavailable to CodePipeline, which may retry the
	// action), expired job credentials Unauthorized; only what nothing
	// recognises stays Internal.
	return invoke.Classify(ctx, wrapped, invoke.Diagnosis{})
}

// Zip is an input artifact's zip: its files (not directories) by clean
// name.
type Zip struct {
	files map[string]*zip.File
}

// OpenZip reads the zip b.
func OpenZip(b []byte) (*Zip, error) {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, invoke.Invalid("the input artifact is not a zip: %v", err)
	}
	z := &Zip{files: map[string]*zip.File{}}
	for _, f := range zr.File {
		if !f.FileInfo().IsDir() {
			z.files[path.Clean(f.Name)] = f
		}
	}
	return z, nil
}

// Has reports a file named name (cleaned).
func (z *Zip) Has(name string) bool {
	_, ok := z.files[path.Clean(name)]
	return ok
}

// Names returns the files' clean names, sorted.
func (z *Zip) Names() []string {
	names := make([]string, 0, len(z.files))
	for n := range z.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Read returns at most limit+1 bytes of the file named name (cleaned), so
// that the caller sees a file larger than limit without reading all of it.
func (z *Zip) Read(name string, limit int) ([]byte, error) {
	f, ok := z.files[path.Clean(name)]
	if !ok {
		return nil, invoke.Invalid("input artifact file %s: not in the artifact", name)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, invoke.Invalid("input artifact file %s: %v", name, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	_ = rc.Close()
	if err != nil {
		return nil, invoke.Invalid("input artifact file %s: %v", name, err)
	}
	return data, nil
}
