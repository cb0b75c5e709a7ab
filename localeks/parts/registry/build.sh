#!/usr/bin/env bash
# Builds the Helm end-to-end tests' parts from this tools module, once per
# version, into the parts cache outside the checkout: registry (CNCF
# distribution, a real OCI registry; about 4 min cold) and helm (the CLI of
# the SDK's version, for the side-by-side timing only; about 5 min cold).
# Usage: build.sh [registry] [helm] (default: both). Prints the directory
# that holds them on stdout; progress goes to stderr. Safe to run
# concurrently: one build at a time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LAMBDA_EKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks}"
modver() { awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$here/go.mod"; }
distribution="$(modver github.com/distribution/distribution/v3)"
helm="$(modver helm.sh/helm/v4)"
bin="$cache/parts/helm-e2e-registry-$distribution-helm-$helm-$(go env GOVERSION)-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$bin"
log() { printf 'parts/registry: %s\n' "$*" >&2; }

build() {
	local name="$1" pkg="$2" ldflags="$3" start tmp
	[[ -x "$bin/$name" ]] && return
	start=$SECONDS
	log "building $name ($pkg; later runs reuse $bin)"
	tmp="$(mktemp "$bin/.$name.XXXXXX")"
	if ! (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOWORK=off go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg"); then
		rm -f "$tmp"
		return 1
	fi
	mv -f "$tmp" "$bin/$name"
	log "built $name in $((SECONDS - start))s"
}

want=("$@")
if ((${#want[@]} == 0)); then
	want=(registry helm)
fi
missing=()
for part in "${want[@]}"; do
	case "$part" in
	registry | helm) [[ -x "$bin/$part" ]] || missing+=("$part") ;;
	*) log "unknown part $part: want registry or helm"; exit 2 ;;
	esac
done
if ((${#missing[@]})); then
	exec 9>"$bin/.build.lock"
	if ! flock -n 9; then
		log "another build is running: waiting for it"
		flock 9
	fi
	for part in "${missing[@]}"; do
		case "$part" in
		registry) build registry github.com/distribution/distribution/v3/cmd/registry \
			"-s -w -X github.com/distribution/distribution/v3/version.version=$distribution" ;;
		helm) build helm helm.sh/helm/v4/cmd/helm \
			"-s -w -X helm.sh/helm/v4/internal/version.version=$helm" ;;
		esac
	done
fi
echo "$bin"
