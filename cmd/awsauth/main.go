// Command awsauth merges the lambda-eks function's role into a cluster's
// aws-auth ConfigMap (deploy.sh runs it for AccessMode=aws-auth). It keeps
// every other mapping and prints the resulting mapRoles on stdout.
//
//	go run ./cmd/awsauth -role-arn arn:aws:iam::111122223333:role/fn [-dry-run]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lambda-eks/lambda-eks/auth"
	"github.com/lambda-eks/lambda-eks/internal/awsauth"
)

func main() {
	roleARN := flag.String("role-arn", "", "IAM role to map (its path is stripped, as the authenticator compares)")
	group := flag.String("group", "lambda-eks", "Kubernetes group the role is mapped to")
	username := flag.String("username", "lambda:{{SessionName}}", "Kubernetes user name template")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	kubecontext := flag.String("context", "", "kubeconfig context (default: the current one)")
	dryRun := flag.Bool("dry-run", false, "print what would be written, write nothing")
	flag.Parse()
	if err := run(*roleARN, *group, *username, *kubeconfig, *kubecontext, *dryRun); err != nil {
		fmt.Fprintln(os.Stderr, "awsauth:", err)
		os.Exit(1)
	}
}

func run(roleARN, group, username, kubeconfig, kubecontext string, dryRun bool) error {
	if roleARN == "" {
		return fmt.Errorf("-role-arn is required")
	}
	canonical, err := auth.CanonicalARN(roleARN)
	if err != nil {
		return err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kubecontext}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := awsauth.Apply(ctx, cs, awsauth.RoleMapping{RoleARN: canonical, Username: username, Groups: []string{group}}, dryRun)
	if err != nil {
		return err
	}
	verb := map[bool]string{true: "would map", false: "mapped"}[dryRun]
	switch {
	case !res.Changed:
		fmt.Fprintf(os.Stderr, "awsauth: %s is already mapped to group %s; nothing to do\n", canonical, group)
	case res.Created:
		fmt.Fprintf(os.Stderr, "awsauth: %s %s to group %s in a new %s/%s\n", verb, canonical, group, awsauth.Namespace, awsauth.Name)
	default:
		fmt.Fprintf(os.Stderr, "awsauth: %s %s to group %s, keeping the other entries of %s/%s\n", verb, canonical, group, awsauth.Namespace, awsauth.Name)
	}
	fmt.Print(res.MapRoles)
	return nil
}
