#!/usr/bin/env bash
# Builds the real parts of the local EKS replica from their Go modules, once
# per version, into a cache outside the checkout: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd, aws-iam-authenticator and
# kwok (the simulated nodes) from one tools module (parts/kube), and
# aws-lambda-rie (parts/rie, AWS's Lambda Runtime Interface Emulator).
# Usage: build.sh [PART...] (default: every part). Prints the directory that
# holds the binaries on stdout; progress and the time each build took go to
# stderr. Safe to run concurrently: one build runs at a time, the others wait
# and reuse it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LAMBDA_EKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks}"

modver() { awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"; }
k8s="$(modver k8s.io/kubernetes "$here/kube/go.mod")"
etcd="$(modver go.etcd.io/etcd/server/v3 "$here/kube/go.mod")"
authn="$(modver sigs.k8s.io/aws-iam-authenticator "$here/kube/go.mod")"
kwok="$(modver sigs.k8s.io/kwok "$here/kube/go.mod")"
rie="$(modver github.com/aws/aws-lambda-runtime-interface-emulator "$here/rie/go.mod")"
goversion="$(go env GOVERSION)"
# The directory is named by the versions of the first parts; the parts added
# later carry their version in a stamp file next to the binary, so that a
# bump of one of them rebuilds that part alone.
bin="$cache/parts/k8s-$k8s-etcd-$etcd-authn-$authn-$goversion-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$bin"

log() { printf 'parts: %s\n' "$*" >&2; }

# Every part: its package, and the version of its stamp if it has one. The
# Kubernetes parts share one module, so that client-go, apimachinery, the
# etcd client and the rest are of one version and compile once for all.
declare -A pkg=(
	[etcd]=go.etcd.io/etcd/server/v3
	[aws-iam-authenticator]=sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
	[kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
	[kwok]=sigs.k8s.io/kwok/cmd/kwok
	[aws-lambda-rie]=github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie
)
declare -A stamp=([kwok]="$kwok" [aws-lambda-rie]="$rie")
order=(etcd aws-iam-authenticator kube-apiserver kube-controller-manager kube-scheduler kwok aws-lambda-rie)

# built NAME: the binary is there (and of its stamp's version).
built() {
	[[ -x "$bin/$1" ]] || return 1
	[[ -z "${stamp[$1]:-}" ]] || [[ "$(cat "$bin/.$1.version" 2>/dev/null)" == "${stamp[$1]}" ]]
}

# exename PACKAGE: the file go build -o DIR/ writes for a command, which
# names a major-version directory (etcd's .../server/v3) by its parent.
exename() {
	local p="$1" e="${1##*/}"
	if [[ "$e" =~ ^v[0-9]+$ ]]; then
		p="${p%/*}"
		e="${p##*/}"
	fi
	printf '%s\n' "$e"
}

# group MODULE_DIR DESCRIPTION NAME...: one go build of the named parts into
# a directory of its own, so that the go command compiles the packages they
# share once and schedules all of them over every core; then each binary is
# renamed into place, so that an interrupted or concurrent build never leaves
# a half-written binary behind.
group() {
	local dir="$1" what="$2" start=$SECONDS tmp name watcher pkgs=()
	local -A part=()
	shift 2
	for name; do
		pkgs+=("${pkg[$name]}")
		part[$(exename "${pkg[$name]}")]="$name"
	done
	log "building $* ($what; later runs reuse $bin)"
	tmp="$(mktemp -d "$bin/.build.XXXXXX")"
	# The go command puts each binary into the directory as soon as it is
	# linked: report them as they come, since one build has no per-part time.
	(
		seen=" "
		while sleep 1 && [[ -d "$tmp" ]]; do
			for f in "$tmp"/*; do
				[[ -e "$f" && "$seen" != *" ${f##*/} "* ]] || continue
				seen+="${f##*/} "
				log "linked ${part[${f##*/}]:-${f##*/}} at $((SECONDS - start))s"
			done
		done
	) &
	watcher=$!
	# The version of the Kubernetes commands is stamped at link time: it
	# changes no compiled package, so nothing compiles twice for it.
	local minor="${k8s#v1.}" vpkg=k8s.io/component-base/version
	minor="${minor%%.*}"
	if ! (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOWORK=off \
		go build -trimpath -ldflags "-s -w" \
		-ldflags "k8s.io/kubernetes/cmd/...=-s -w -X $vpkg.gitVersion=$k8s -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor" \
		-o "$tmp/" "${pkgs[@]}"); then
		kill "$watcher" 2>/dev/null || true
		rm -rf "$tmp"
		return 1
	fi
	kill "$watcher" 2>/dev/null || true
	wait "$watcher" 2>/dev/null || true
	for name; do
		mv -f "$tmp/$(exename "${pkg[$name]}")" "$bin/$name"
		# The stamp last: an interrupted build leaves the old stamp, so the
		# part is built again.
		if [[ -n "${stamp[$name]:-}" ]]; then
			printf '%s\n' "${stamp[$name]}" >"$bin/.$name.version"
		fi
	done
	rm -rf "$tmp"
	log "built $* in $((SECONDS - start))s"
}

want=("$@")
if ((${#want[@]} == 0)); then
	want=("${order[@]}")
fi
for name in "${want[@]}"; do
	[[ -n "${pkg[$name]:-}" ]] || { log "unknown part $name: want some of ${order[*]}"; exit 2; }
done
missing() {
	local name
	for name in "${order[@]}"; do
		if [[ " ${want[*]} " == *" $name "* ]] && ! built "$name"; then
			printf '%s\n' "$name"
		fi
	done
}
if [[ -n "$(missing)" ]]; then
	# One build at a time: a concurrent run waits here, then finds the parts.
	exec 9>"$cache/parts/.build.lock"
	if ! flock -n 9; then
		log "another build of the parts is running: waiting for it"
		flock 9
	fi
	# Only the holder of the lock builds: what a killed build left is ours
	# to remove.
	trap 'rm -rf "$bin"/.build.*' EXIT
	total=$SECONDS
	kubeparts=() rieparts=()
	while read -r name; do
		case "$name" in
		aws-lambda-rie) rieparts+=("$name") ;;
		*) kubeparts+=("$name") ;;
		esac
	done < <(missing)
	# The two builds share nothing: the emulator is small and builds in the
	# gaps the big build leaves on the cores. Each runs as a job of its own,
	# where set -e still stops it at the first failure.
	pids=()
	if ((${#rieparts[@]})); then
		group "$here/rie" "aws-lambda-rie $rie: under a minute cold" "${rieparts[@]}" &
		pids+=($!)
	fi
	if ((${#kubeparts[@]})); then
		group "$here/kube" "Kubernetes $k8s, etcd $etcd, aws-iam-authenticator $authn, kwok $kwok: about 7 min cold on 2 cores" \
			"${kubeparts[@]}" &
		pids+=($!)
	fi
	status=0
	for pid in "${pids[@]}"; do
		wait "$pid" || status=$?
	done
	if ((status)); then
		exit "$status"
	fi
	log "all parts in $bin ($((SECONDS - total))s)"
fi
echo "$bin"
