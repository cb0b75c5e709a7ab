//go:build tools

// Package authenticator pins the aws-iam-authenticator server that the local
// EKS replica runs as its token webhook. It is never imported.
package authenticator

import _ "sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator"
