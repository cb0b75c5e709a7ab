//go:build tools

// Package kwok pins kwok, the controller that simulates the replica's nodes
// and the kubelet's pod lifecycle on them. It is never imported:
// localeks/parts/build.sh builds it into a per-version cache outside the
// checkout.
package kwok

import _ "sigs.k8s.io/kwok/cmd/kwok"
