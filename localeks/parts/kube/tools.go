//go:build tools

// Package kube pins the versions of kube-apiserver, kube-controller-manager,
// kube-scheduler and etcd that the local EKS replica runs. It is never imported: localeks/parts/build.sh builds the
// commands it names into a per-version cache outside the checkout.
package kube

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
