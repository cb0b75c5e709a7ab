package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/google/go-cmp/cmp"
)

// fakeEKS answers DescribeCluster for the clusters it holds, on loopback.
func fakeEKS(tb testing.TB, clusters map[string]string) aws.Config {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[len("/clusters/"):]
		body, ok := clusters[name]
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.Header().Set("X-Amzn-Errortype", "ResourceNotFoundException")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"message":"No cluster found for name: ` + name + `."}`))
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	tb.Cleanup(srv.Close)
	cfg := testConfig("us-east-1", staticCreds)
	cfg.BaseEndpoint = aws.String(srv.URL)
	return cfg
}

func TestDescribeCluster(t *testing.T) {
	cfg := fakeEKS(t, map[string]string{
		"demo": `{"cluster":{"name":"demo","arn":"arn:aws:eks:us-east-1:123456789012:cluster/demo","status":"ACTIVE",
			"endpoint":"https://ABC.gr7.us-east-1.eks.amazonaws.com","certificateAuthority":{"data":"Q0EgREFUQQ=="}}}`,
		"new":   `{"cluster":{"name":"new","status":"CREATING"}}`,
		"badca": `{"cluster":{"name":"badca","status":"ACTIVE","endpoint":"https://x","certificateAuthority":{"data":"%%%"}}}`,
	})
	ctx := context.Background()

	got, err := DescribeCluster(ctx, cfg, "demo")
	if err != nil {
		t.Fatal(err)
	}
	want := Cluster{Name: "demo", ARN: "arn:aws:eks:us-east-1:123456789012:cluster/demo",
		Endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com", CAData: []byte("CA DATA")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}

	var nf *ClusterNotFoundError
	_, err = DescribeCluster(ctx, cfg, "nope")
	if !errors.As(err, &nf) {
		t.Fatalf("unknown cluster: err = %v, want ClusterNotFoundError", err)
	}
	if want := "cluster nope not found in region us-east-1"; err.Error() != want {
		t.Errorf("unknown cluster: message %q, want %q", err.Error(), want)
	}
	// The SDK's answer stays in the chain.
	var rnf *ekstypes.ResourceNotFoundException
	if !errors.As(err, &rnf) {
		t.Errorf("unknown cluster: err = %v does not carry EKS's ResourceNotFoundException", err)
	}
	var na *ClusterNotActiveError
	if _, err := DescribeCluster(ctx, cfg, "new"); !errors.As(err, &na) || na.Status != "CREATING" {
		t.Errorf("creating cluster: err = %v, want ClusterNotActiveError CREATING", err)
	}
	if _, err := DescribeCluster(ctx, cfg, "badca"); err == nil {
		t.Error("bad CA data: want an error")
	}
}

func TestCanonicalARN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"arn:aws:sts::123456789012:assumed-role/lambda-eks-exec/lambda-eks-local", "arn:aws:iam::123456789012:role/lambda-eks-exec"},
		{"arn:aws:iam::123456789012:role/service-role/team/deployer", "arn:aws:iam::123456789012:role/deployer"},
		{"arn:aws-cn:sts::123456789012:assumed-role/R/s", "arn:aws-cn:iam::123456789012:role/R"},
		{"arn:aws:iam::123456789012:user/bob", "arn:aws:iam::123456789012:user/bob"},
	}
	for _, tt := range tests {
		got, err := CanonicalARN(tt.in)
		if err != nil {
			t.Errorf("CanonicalARN(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("CanonicalARN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if _, err := CanonicalARN("not-an-arn"); err == nil {
		t.Error("CanonicalARN(not-an-arn): want an error")
	}
}

func TestForTarget(t *testing.T) {
	base := testConfig("eu-west-1", staticCreds)
	same := ForTarget(base, Target{Cluster: "c", Region: "us-east-2"})
	if same.Region != "us-east-2" {
		t.Errorf("region = %s, want us-east-2", same.Region)
	}
	if _, ok := same.Credentials.(credentials.StaticCredentialsProvider); !ok {
		t.Error("without a role, the execution role's credentials must be used")
	}
	chained := ForTarget(base, Target{Cluster: "c", Region: "us-east-2", RoleARN: "arn:aws:iam::210987654321:role/t"})
	if _, ok := chained.Credentials.(*aws.CredentialsCache); !ok {
		t.Errorf("role chaining credentials are %T, want a *aws.CredentialsCache", chained.Credentials)
	}
	if base.Region != "eu-west-1" {
		t.Error("ForTarget changed its base config")
	}
}
