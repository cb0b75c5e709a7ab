#!/usr/bin/env bash
# Builds the real parts of the local EKS replica from their Go modules, once
# per version, into a cache outside the checkout: kube-apiserver,
# kube-controller-manager, kube-scheduler and etcd (parts/kube),
# aws-iam-authenticator (parts/authenticator), kwok (parts/kwok, the
# simulated nodes) and aws-lambda-rie (parts/rie, AWS's Lambda Runtime
# Interface Emulator). Prints the directory that holds the binaries on
# stdout; progress and the time each part took go to stderr. Safe to run
# concurrently: one build runs at a time, the others wait and reuse it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LAMBDA_EKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks}"

modver() { awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }
k8s="$(modver k8s.io/kubernetes "$here/kube/go.mod")"
etcd="$(modver go.etcd.io/etcd/server/v3 "$here/kube/go.mod")"
authn="$(modver sigs.k8s.io/aws-iam-authenticator "$here/authenticator/go.mod")"
kwok="$(modver sigs.k8s.io/kwok "$here/kwok/go.mod")"
rie="$(modver github.com/aws/aws-lambda-runtime-interface-emulator "$here/rie/go.mod")"
goversion="$(go env GOVERSION)"
# The directory is named by the versions of the first parts; the parts added
# later carry their version in a stamp file next to the binary, so that a
# bump of one of them rebuilds that part alone.
bin="$cache/parts/k8s-$k8s-etcd-$etcd-authn-$authn-$goversion-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$bin"

log() { printf 'parts: %s\n' "$*" >&2; }

# built NAME [VERSION]: the binary is there (and of that version).
built() {
	[[ -x "$bin/$1" ]] || return 1
	[[ -z "${2:-}" ]] || [[ "$(cat "$bin/.$1.version" 2>/dev/null)" == "$2" ]]
}

# build NAME MODULE_DIR PACKAGE LDFLAGS DESCRIPTION [VERSION]: go build into
# a temporary file of its own, then rename, so that an interrupted or
# concurrent build never leaves a half-written binary behind.
build() {
	local name="$1" dir="$2" pkg="$3" ldflags="$4" version="${6:-}" start tmp
	if built "$name" "$version"; then
		return
	fi
	start=$SECONDS
	log "building $name ($5; later runs reuse $bin)"
	tmp="$(mktemp "$bin/.$name.XXXXXX")"
	if ! (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOWORK=off \
		go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg"); then
		rm -f "$tmp"
		return 1
	fi
	mv -f "$tmp" "$bin/$name"
	# The stamp last: an interrupted build leaves the old stamp, so the part
	# is built again.
	if [[ -n "$version" ]]; then
		printf '%s\n' "$version" >"$bin/.$name.version"
	fi
	log "built $name in $((SECONDS - start))s"
}

minor="${k8s#v1.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
kflags="-s -w -X $vpkg.gitVersion=$k8s -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
all() {
	built etcd && built aws-iam-authenticator && built kube-apiserver &&
		built kube-controller-manager && built kube-scheduler &&
		built kwok "$kwok" && built aws-lambda-rie "$rie"
}
if ! all; then
	# One build at a time: a concurrent run waits here, then finds the parts.
	exec 9>"$cache/parts/.build.lock"
	if ! flock -n 9; then
		log "another build of the parts is running: waiting for it"
		flock 9
	fi
	total=$SECONDS
	build etcd "$here/kube" go.etcd.io/etcd/server/v3 "-s -w" \
		"etcd $etcd: about 1 min cold"
	build aws-lambda-rie "$here/rie" github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie "-s -w" \
		"aws-lambda-rie $rie: about 40 s cold" "$rie"
	build aws-iam-authenticator "$here/authenticator" sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator "-s -w" \
		"aws-iam-authenticator $authn: about 3-6 min cold"
	build kube-apiserver "$here/kube" k8s.io/kubernetes/cmd/kube-apiserver "$kflags" \
		"kube-apiserver $k8s: about 10 min cold on 2 cores"
	build kube-controller-manager "$here/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$kflags" \
		"kube-controller-manager $k8s: about 3 min after kube-apiserver"
	build kube-scheduler "$here/kube" k8s.io/kubernetes/cmd/kube-scheduler "$kflags" \
		"kube-scheduler $k8s: about 1 min after kube-apiserver"
	build kwok "$here/kwok" sigs.k8s.io/kwok/cmd/kwok "-s -w" \
		"kwok $kwok: about 3 min cold" "$kwok"
	log "all parts in $bin ($((SECONDS - total))s)"
fi
echo "$bin"
