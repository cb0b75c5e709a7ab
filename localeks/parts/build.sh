#!/usr/bin/env bash
# Builds the real parts of the local EKS replica (kube-apiserver, etcd,
# aws-iam-authenticator) from their Go modules, once per version, into a cache
# outside the checkout. Prints the directory that holds the binaries on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LAMBDA_EKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks}"

modver() { awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }
k8s="$(modver k8s.io/kubernetes "$here/kube/go.mod")"
etcd="$(modver go.etcd.io/etcd/server/v3 "$here/kube/go.mod")"
authn="$(modver sigs.k8s.io/aws-iam-authenticator "$here/authenticator/go.mod")"
goversion="$(go env GOVERSION)"
bin="$cache/parts/k8s-$k8s-etcd-$etcd-authn-$authn-$goversion-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$bin"

log() { printf 'parts: %s\n' "$*" >&2; }

# build NAME MODULE_DIR PACKAGE LDFLAGS: go build into a temporary file, then
# rename, so an interrupted build never leaves a half-written binary behind.
build() {
	local name="$1" dir="$2" pkg="$3" ldflags="$4" start
	if [[ -x "$bin/$name" ]]; then
		return
	fi
	start=$SECONDS
	log "building $name ($5; later runs reuse $bin)"
	(cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOWORK=off \
		go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
	mv "$bin/.$name.tmp" "$bin/$name"
	log "built $name in $((SECONDS - start))s"
}

minor="${k8s#v1.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
build etcd "$here/kube" go.etcd.io/etcd/server/v3 "-s -w" \
	"etcd $etcd: about 1 min cold"
build aws-iam-authenticator "$here/authenticator" sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator "-s -w" \
	"aws-iam-authenticator $authn: about 3-6 min cold"
build kube-apiserver "$here/kube" k8s.io/kubernetes/cmd/kube-apiserver \
	"-s -w -X $vpkg.gitVersion=$k8s -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor" \
	"kube-apiserver $k8s: about 10 min cold on 2 cores"
echo "$bin"
