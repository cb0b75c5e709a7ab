//go:build tools

// Package registry pins the parts the Helm end-to-end tests run: the CNCF
// distribution registry (a real OCI registry, served on loopback with TLS
// and basic auth, that charts are pushed to) and the helm CLI of the same
// version as the Helm function's SDK (for the side-by-side timing). It is
// never imported: build.sh here builds both into the per-version parts
// cache outside the checkout.
package registry

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "helm.sh/helm/v4/cmd/helm"
)
