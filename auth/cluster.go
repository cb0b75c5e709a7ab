package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"sigs.k8s.io/aws-iam-authenticator/pkg/arn"
)

// Cluster is what a client needs to reach an EKS cluster's API server.
type Cluster struct {
	Name     string
	ARN      string
	Endpoint string
	CAData   []byte
}

// ClusterNotFoundError says eks:DescribeCluster does not know the cluster.
type ClusterNotFoundError struct {
	Name, Region string
	// Err is EKS's answer (an *ekstypes.ResourceNotFoundException inside
	// the SDK's operation error), or nil; Error does not read it, Unwrap
	// returns it.
	Err error
}

func (e *ClusterNotFoundError) Error() string {
	return fmt.Sprintf("cluster %s not found in region %s", e.Name, e.Region)
}

func (e *ClusterNotFoundError) Unwrap() error { return e.Err }

// ClusterNotActiveError says the cluster exists but cannot serve requests.
type ClusterNotActiveError struct {
	Name, Status string
}

func (e *ClusterNotActiveError) Error() string {
	return fmt.Sprintf("cluster %s is %s, not ACTIVE", e.Name, e.Status)
}

// DescribeCluster looks up the endpoint and CA of an ACTIVE cluster. An
// endpoint that does not answer is an *EndpointError.
func DescribeCluster(ctx context.Context, cfg aws.Config, name string) (Cluster, error) {
	out, err := awsCall(ctx, "EKS", regionalEndpoint(cfg, "eks"), func(ctx context.Context) (*eks.DescribeClusterOutput, error) {
		return eks.NewFromConfig(cfg).DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(name)})
	})
	if err != nil {
		var nf *ekstypes.ResourceNotFoundException
		if errors.As(err, &nf) {
			return Cluster{}, &ClusterNotFoundError{Name: name, Region: cfg.Region, Err: err}
		}
		return Cluster{}, fmt.Errorf("describe cluster %s: %w", name, err)
	}
	c := out.Cluster
	if c == nil {
		return Cluster{}, fmt.Errorf("describe cluster %s: empty answer", name)
	}
	if c.Status != ekstypes.ClusterStatusActive {
		return Cluster{}, &ClusterNotActiveError{Name: name, Status: string(c.Status)}
	}
	endpoint := aws.ToString(c.Endpoint)
	if endpoint == "" || c.CertificateAuthority == nil || aws.ToString(c.CertificateAuthority.Data) == "" {
		return Cluster{}, fmt.Errorf("describe cluster %s: no endpoint or certificate authority", name)
	}
	ca, err := base64.StdEncoding.DecodeString(aws.ToString(c.CertificateAuthority.Data))
	if err != nil {
		return Cluster{}, fmt.Errorf("describe cluster %s: certificate authority: %w", name, err)
	}
	return Cluster{Name: name, ARN: aws.ToString(c.Arn), Endpoint: endpoint, CAData: ca}, nil
}

// CallerARN returns the ARN a cluster sees for cfg's credentials, in the
// canonical form the cluster's mapping must name: an assumed-role session
// becomes its role ARN, with any path stripped. It calls STS, so it is meant
// for diagnosing a 401, not for the hot path.
func CallerARN(ctx context.Context, cfg aws.Config) (string, error) {
	out, err := awsCall(ctx, "STS", regionalEndpoint(cfg, "sts"), func(ctx context.Context) (*sts.GetCallerIdentityOutput, error) {
		return sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	})
	if err != nil {
		return "", fmt.Errorf("get caller identity: %w", err)
	}
	return CanonicalARN(aws.ToString(out.Arn))
}

// CanonicalARN maps an IAM or STS ARN to the form aws-iam-authenticator
// compares with its mappings.
func CanonicalARN(principal string) (string, error) {
	_, canonical, err := arn.Canonicalize(principal)
	if err != nil {
		return "", fmt.Errorf("canonicalize %s: %w", principal, err)
	}
	// Mappings name roles without their path (role/a/b/R is role/R).
	stripped, err := arn.StripPath(canonical)
	if err != nil {
		return "", fmt.Errorf("canonicalize %s: %w", principal, err)
	}
	return stripped, nil
}
