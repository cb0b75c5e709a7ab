//go:build tools

// Package kube pins the versions of the Kubernetes parts that the local EKS
// replica runs: kube-apiserver, kube-controller-manager, kube-scheduler,
// etcd, the aws-iam-authenticator server (its token webhook) and kwok (the
// simulated nodes and the kubelet's pod lifecycle on them). They share this
// one module, so that the packages they have in common (client-go,
// apimachinery, the etcd client, ...) are of one version and compile once.
// It is never imported: localeks/parts/build.sh builds the commands it names
// into a per-version cache outside the checkout.
package kube

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
