package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// localeks cfn EVENT_FILE|-
//
// plays CloudFormation for one custom resource request: the event's
// ResponseURL is replaced by a presigned S3 PUT URL of the replica's moto
// (the kind CloudFormation sends), the bootstrap is invoked once, and the
// body CloudFormation would have received is read back from moto and
// printed on stdout. Exit status: 0 SUCCESS, 1 FAILED (or no answer at
// all), 2 usage, 4 harness failure. Flags as for invoke.

// cfnBucket is moto's bucket for the answers.
const cfnBucket = "localeks-cfn-responses"

func cfnInvoke(ctx context.Context, args []string) int {
	c := eventCommand{name: "cfn"}
	if code := c.parse(args, 60*time.Second); code != 0 {
		return code
	}
	var event map[string]any
	if err := json.Unmarshal(c.event, &event); err != nil || event["RequestType"] == nil {
		return c.fail(fmt.Errorf("%s is not a CloudFormation custom resource request (no RequestType)", c.file))
	}
	fn, s, err := c.start(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer fn.Stop()
	direct, presign := cfnS3(s)
	if err := ensureBucket(ctx, direct); err != nil {
		return c.fail(err)
	}
	key := fmt.Sprintf("responses/%d", time.Now().UnixNano())
	signed, err := presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key)},
		s3.WithPresignExpires(time.Hour))
	if err != nil {
		return c.fail(fmt.Errorf("presign the ResponseURL: %w", err))
	}
	event["ResponseURL"] = signed.URL
	payload, err := json.Marshal(event)
	if err != nil {
		return c.fail(err)
	}

	resp, fnErr, took, err := timedInvoke(ctx, fn, payload)
	if err != nil {
		return c.fail(err)
	}
	if fnErr != nil {
		return functionFailed("no answer: the function failed", fnErr, took.Round(time.Millisecond))
	}
	obj, err := direct.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(cfnBucket), Key: aws.String(key)})
	if err != nil {
		return c.fail(fmt.Errorf("no answer reached the ResponseURL (the function returned %s): %w", bytes.TrimSpace(resp), err))
	}
	body, err := io.ReadAll(obj.Body)
	_ = obj.Body.Close()
	if err != nil {
		return c.fail(err)
	}
	var answer struct{ Status string }
	if err := json.Unmarshal(body, &answer); err != nil {
		return c.fail(fmt.Errorf("the answer is not JSON: %w: %s", err, body))
	}
	slog.Info("CloudFormation received", "status", answer.Status, "bytes", len(body), "took", took.Round(time.Millisecond))
	fmt.Println(strings.TrimSpace(string(body)))
	if answer.Status != "SUCCESS" {
		return 1
	}
	return 0
}

// cfnS3 returns an S3 client straight to moto (for the harness) and a
// presigner for the URL CloudFormation would send: https, virtual-hosted,
// reached by the function through the shim.
func cfnS3(s *stack.Stack) (*s3.Client, *s3.PresignClient) {
	cfg := s.MotoConfig()
	direct := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	presign := s3.NewPresignClient(s3.NewFromConfig(aws.Config{
		Region:                     stack.Region,
		Credentials:                cfg.Credentials,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	}))
	return direct, presign
}

func ensureBucket(ctx context.Context, c *s3.Client) error {
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(cfnBucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	var exists *s3types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("create bucket %s in moto: %w", cfnBucket, err)
	}
	return nil
}
