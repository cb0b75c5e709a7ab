package handler

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/invoke"
	"github.com/lambda-eks/lambda-eks/kube"
)

// ObjectGetter is the part of an S3 client that reads manifests.
type ObjectGetter interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// ReadManifestS3 reads a manifest (at most 16 MiB) with s3:GetObject.
// Errors are worded for the caller: a missing object is NotFound, a denied
// read Forbidden naming the permission.
func ReadManifestS3(ctx context.Context, get ObjectGetter, bucket, key string) (string, error) {
	uri := "s3://" + bucket + "/" + key
	out, err := get.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		var (
			noKey    *s3types.NoSuchKey
			notFound *s3types.NotFound
			apiErr   smithy.APIError
		)
		switch {
		case errors.As(err, &noKey), errors.As(err, &notFound),
			// GetObject models NoSuchKey only: a missing bucket comes as a
			// generic error with its code.
			errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchBucket":
			errors.As(err, &apiErr)
			return "", &invoke.Error{Code: invoke.NotFound, Err: err, Message: fmt.Sprintf("ManifestS3 %s: %s; upload the manifest there or fix the URI", uri, apiErr.ErrorCode())}
		case errors.As(err, &apiErr) && isS3Denied(apiErr.ErrorCode()):
			// S3 models no type for a denied read: its code is all there is.
			return "", &invoke.Error{Code: invoke.Forbidden, Err: err, Message: fmt.Sprintf(
				"ManifestS3 %s: access denied; the function's execution role needs s3:GetObject on arn:aws:s3:::%s/%s (template.yml grants it for the ManifestBucket parameter)", uri, bucket, key)}
		}
		// A transport failure names S3's endpoint (Unavailable).
		return "", fmt.Errorf("read ManifestS3 %s: %w", uri, auth.AsEndpointError(ctx, err))
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxManifestS3Bytes+1))
	if err != nil {
		return "", fmt.Errorf("read ManifestS3 %s: %w", uri, err)
	}
	if len(b) > maxManifestS3Bytes {
		return "", invoke.Invalid("ManifestS3 %s is larger than %d bytes; split it over several resources", uri, maxManifestS3Bytes)
	}
	return string(b), nil
}

// s3Getter returns the S3 client manifests are read with (WithS3).
func (h *Handler) s3Getter() (ObjectGetter, error) {
	if h.s3 == nil {
		return nil, errors.New("this handler has no S3 client (handler.WithS3)")
	}
	return h.s3, nil
}

func isS3Denied(code string) bool {
	return code == "AccessDenied" || code == "Forbidden" || code == "AllAccessDisabled"
}

// readManifest reads and decodes the manifest req names in S3, with the
// same checks as a manifest in the event.
func (h *Handler) readManifest(ctx context.Context, req Request) (kube.Manifest, error) {
	get, err := h.s3Getter()
	if err != nil {
		return nil, err
	}
	text, err := ReadManifestS3(ctx, get, req.ManifestS3Bucket, req.ManifestS3Key)
	if err != nil {
		return nil, err
	}
	m, err := kube.DecodeManifest([]byte(text), req.MaxDocuments)
	if err != nil {
		return nil, &invoke.Error{Code: invoke.InvalidEvent, Err: err,
			Message: fmt.Sprintf("manifestS3 s3://%s/%s: %s; nothing was changed", req.ManifestS3Bucket, req.ManifestS3Key, err.Error())}
	}
	return m, nil
}
