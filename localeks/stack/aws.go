package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"sigs.k8s.io/aws-iam-authenticator/pkg/token"

	"github.com/lambda-eks/lambda-eks/localeks/shim"
)

// MotoConfig is an AWS config for the harness's own calls, straight to
// moto_server (never through the shim, so they are not counted).
func (s *Stack) MotoConfig() aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIALOCALEKSADMIN000", "localeks", ""),
		BaseEndpoint: aws.String("http://127.0.0.1:" + strconv.Itoa(s.Ports.Moto)),
		HTTPClient:   &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second},
	}
}

// The second account of the replica: a cluster named ClusterName there too
// (moto keeps each account's clusters apart; the shim points every one at
// the local apiserver), and roles a function in Account can chain into.
const (
	TargetAccount = "210987654321"
	// TargetRole is the role a cross-account function assumes; tests map
	// it in aws-auth for as long as they need it.
	TargetRole = "lambda-eks-target"
	// TargetUnmappedRole is never mapped.
	TargetUnmappedRole = "lambda-eks-target-unmapped"
)

// TargetRoleARN returns the ARN of a role in TargetAccount.
func TargetRoleARN(role string) string { return "arn:aws:iam::" + TargetAccount + ":role/" + role }

const trustAnyone = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}`

// setupMoto creates the roles and the clusters the replica answers for.
func (s *Stack) setupMoto(ctx context.Context) error {
	cfg := s.MotoConfig()
	iamc := iam.NewFromConfig(cfg)
	for _, role := range []string{ExecRole, UnmappedRole} {
		_, err := iamc.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(role), AssumeRolePolicyDocument: aws.String(trustAnyone)})
		var exists *iamtypes.EntityAlreadyExistsException
		if err != nil && !errors.As(err, &exists) {
			return fmt.Errorf("create role %s: %w", role, err)
		}
	}
	eksc := eks.NewFromConfig(cfg)
	for _, name := range []string{ClusterName, DownCluster} {
		_, err := eksc.CreateCluster(ctx, &eks.CreateClusterInput{
			Name:               aws.String(name),
			RoleArn:            aws.String(RoleARN("lambda-eks-cluster")),
			ResourcesVpcConfig: &ekstypes.VpcConfigRequest{SubnetIds: []string{"subnet-0000000000000local"}},
		})
		var inUse *ekstypes.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("create cluster %s: %w", name, err)
		}
	}
	return s.SetupTargetAccount(ctx)
}

// SetupTargetAccount creates, idempotently, TargetAccount's roles and its
// cluster ClusterName. It acts in that account the way moto allows: with
// credentials from AssumeRole into a role of it.
func (s *Stack) SetupTargetAccount(ctx context.Context) error {
	out, err := sts.NewFromConfig(s.MotoConfig()).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String(TargetRoleARN(TargetRole)),
		RoleSessionName: aws.String("localeks-setup"),
	})
	if err != nil {
		return fmt.Errorf("act in account %s: %w", TargetAccount, err)
	}
	cfg := s.MotoConfig()
	c := out.Credentials
	cfg.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
	iamc := iam.NewFromConfig(cfg)
	for _, role := range []string{TargetRole, TargetUnmappedRole} {
		_, err := iamc.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(role), AssumeRolePolicyDocument: aws.String(trustAnyone)})
		var exists *iamtypes.EntityAlreadyExistsException
		if err != nil && !errors.As(err, &exists) {
			return fmt.Errorf("create role %s in account %s: %w", role, TargetAccount, err)
		}
	}
	_, err = eks.NewFromConfig(cfg).CreateCluster(ctx, &eks.CreateClusterInput{
		Name:               aws.String(ClusterName),
		RoleArn:            aws.String(TargetRoleARN("lambda-eks-cluster")),
		ResourcesVpcConfig: &ekstypes.VpcConfigRequest{SubnetIds: []string{"subnet-0000000000000local"}},
	})
	var inUse *ekstypes.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("create cluster %s in account %s: %w", ClusterName, TargetAccount, err)
	}
	return nil
}

// checkMotoState fails when moto lost its state (it keeps it in memory).
func (s *Stack) checkMotoState(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := eks.NewFromConfig(s.MotoConfig()).DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(ClusterName)})
	return err
}

// AssumeRole returns credentials for a session of role from moto's STS: the
// same kind (ASIA..., assumed-role) that Lambda injects for an execution role.
func (s *Stack) AssumeRole(ctx context.Context, role, session string) (aws.Credentials, error) {
	return s.AssumeRoleARN(ctx, RoleARN(role), session)
}

// AssumeRoleARN is AssumeRole for a role of any account, e.g.
// TargetRoleARN(TargetRole).
func (s *Stack) AssumeRoleARN(ctx context.Context, role, session string) (aws.Credentials, error) {
	out, err := sts.NewFromConfig(s.MotoConfig()).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String(role),
		RoleSessionName: aws.String(session),
		DurationSeconds: aws.Int32(3600),
	})
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("assume role %s as %s: %w", role, session, err)
	}
	c := out.Credentials
	return aws.Credentials{
		AccessKeyID:     aws.ToString(c.AccessKeyId),
		SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken:    aws.ToString(c.SessionToken),
		CanExpire:       c.Expiration != nil,
		Expires:         aws.ToTime(c.Expiration),
		Source:          "localeks",
	}, nil
}

// mintToken makes an EKS bearer token for creds the way the function does
// (pkg/token, a presigned regional STS GetCallerIdentity). No network.
func mintToken(creds aws.Credentials) (string, error) {
	client := sts.NewFromConfig(aws.Config{
		Region:      Region,
		Credentials: credentials.StaticCredentialsProvider{Value: creds},
	})
	gen, err := token.NewGenerator(false, false)
	if err != nil {
		return "", err
	}
	tok, err := gen.GetWithSTS(ClusterName, client)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return tok.Token, nil
}

// FunctionEnv is the environment that points the function at the replica:
// all AWS traffic through the shim, the given session credentials, the IMDS
// guard. It never sets AWS_ENDPOINT_URL*: a token would then embed an http
// URL and be refused.
func (s *Stack) FunctionEnv(creds aws.Credentials) []string {
	return []string{
		"HTTPS_PROXY=" + s.ShimURL(),
		"NO_PROXY=127.0.0.1,localhost",
		"SSL_CERT_FILE=" + s.Paths.ShimCA(),
		"AWS_REGION=" + Region,
		"AWS_DEFAULT_REGION=" + Region,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + IMDSGuard,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_ACCESS_KEY_ID=" + creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + creds.SecretAccessKey,
		"AWS_SESSION_TOKEN=" + creds.SessionToken,
		"CLUSTER_NAME=" + ClusterName,
	}
}

// ShimCounts returns the shim's per-service request counts.
func (s *Stack) ShimCounts(ctx context.Context) (shim.Counts, error) {
	body, err := s.get(ctx, nil, s.ShimURL()+"/__counts")
	if err != nil {
		return nil, err
	}
	var c shim.Counts
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("decode shim counts: %w", err)
	}
	return c, nil
}

// SetShimFaults replaces the shim's faults (see shim.Faults); the zero
// value clears them.
func (s *Stack) SetShimFaults(ctx context.Context, f shim.Faults) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ShimURL()+"/__faults", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("set shim faults: %s: %s", resp.Status, msg)
	}
	return nil
}

// ResetShimCounts sets the shim's counts to zero.
func (s *Stack) ResetShimCounts(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ShimURL()+"/__counts/reset", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("reset shim counts: %s", resp.Status)
	}
	return nil
}
