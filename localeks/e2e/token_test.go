package e2e

import (
	"context"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// Claim 2: the identity is the real one. A token minted by the project's auth
// package for a session of the execution role passes a SelfSubjectReview as
// lambda:<session> in group lambda-eks, after the authenticator verified it
// against moto's STS (through the shim); a garbage token does not.
func TestTokenIdentity(t *testing.T) {
	h := mustHarness(t)
	ctx := context.Background()
	const session = "lambda-eks-e2e-token"
	creds, err := h.stack.AssumeRole(ctx, stack.ExecRole, session)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := auth.LoadConfig(ctx,
		config.WithRegion(stack.Region),
		config.WithCredentialsProvider(aws.NewCredentialsCache(credentials.StaticCredentialsProvider{Value: creds})))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := auth.NewTokenSource(cfg, stack.ClusterName)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.stack.ResetShimCounts(ctx); err != nil {
		t.Fatal(err)
	}

	got, err := selfSubjectReview(ctx, h, tok.AccessToken)
	if err != nil {
		t.Fatalf("SelfSubjectReview with the auth package's token: %v", err)
	}
	if !slices.Contains(got.Groups, stack.Group) {
		t.Errorf("groups %v, want %s among them", got.Groups, stack.Group)
	}
	if diff := cmp.Diff("lambda:"+session, got.Username); diff != "" {
		t.Errorf("username (-want +got):\n%s", diff)
	}
	counts, err := h.stack.ShimCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := counts["sts:presigned@"+creds.AccessKeyID]; n != 1 {
		t.Errorf("the authenticator replayed %d presigned STS requests signed by the session for a new token, want 1 (shim counts %v)", n, counts)
	}

	_, err = selfSubjectReview(ctx, h, "k8s-aws-v1.bm90LWEtcHJlc2lnbmVkLXVybA")
	if !apierrors.IsUnauthorized(err) {
		t.Errorf("SelfSubjectReview with a garbage token: %v, want Unauthorized", err)
	}
}

func selfSubjectReview(ctx context.Context, h *harness, token string) (authenticationv1.UserInfo, error) {
	cs, err := kubernetes.NewForConfig(h.stack.BearerConfig(token))
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	return r.Status.UserInfo, nil
}
