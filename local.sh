#!/usr/bin/env bash
# Runs the functions locally. By default against the local EKS replica built
# from real parts (localeks/): no Docker, no AWS account, nothing leaves
# loopback. With --sam (or LAMBDA_EKS_TARGET=aws) through `sam local invoke`,
# for users with Docker and AWS credentials.
#
#   ./local.sh [EVENT_FILE|-]     invoke (default events/ensure-nginx.json); the
#                                 response JSON on stdout, exit 1 on a function error
#   ./local.sh serve [PORT]       keep the functions warm behind the Lambda Invoke
#                                 API on 127.0.0.1:PORT (default 9000) until Ctrl-C,
#                                 named lambda-eks (or function), lambda-eks-helm and
#                                 lambda-eks-lifecycle (when ./cmd/lifecycle exists):
#                                 aws lambda invoke --endpoint-url http://127.0.0.1:9000 \
#                                   --no-sign-request --region us-east-1 --function-name lambda-eks \
#                                   --payload fileb://events/ensure-nginx.json out.json
#   ./local.sh kubectl ARGS...    kubectl as cluster admin against the replica
#   ./local.sh status | down      what runs | stop everything it started
#   ./local.sh env                shell exports for the function's environment and kubectl
#   ./local.sh --sam [EVENT]      sam local invoke the event's function, in AWS_REGION
#                                 (default: AWS_DEFAULT_REGION, else us-east-1)
#
# The event chooses the function: a helm-* action, a CloudFormation
# request for a Custom::HelmRelease, or a CodePipeline job whose
# UserParameters name a release (events/helm-codepipeline-job.json) runs
# the Helm function (./cmd/helm) as its own role, mapped in aws-auth to the
# group lambda-eks-helm; an
# EventBridge event from Auto Scaling, EC2 or AWS Health (events/asg-*,
# spot-*, rebalance*, health-*) the lifecycle function (./cmd/lifecycle) as
# its own role, mapped to lambda-eks-lifecycle, with the replica playing
# the Auto Scaling group (the event's lifecycle action waits at the shim)
# and Lambda's queue (the function's Invoke of itself runs; local.sh waits
# for those continuations); any other event the main function. A CloudFormation request (RequestType) is played
# as CloudFormation would: its ResponseURL becomes a presigned moto S3 URL,
# and the body the function sent there is printed (exit 0 for SUCCESS).
#
# The function runs under AWS's Lambda Runtime Interface Emulator, as in `sam
# local invoke`. Progress goes to stderr, results to stdout. The first run
# builds the parts (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd, aws-iam-authenticator, kwok, aws-lambda-rie: about 7 to 15 min on 2 cores,
# each part's time logged, cached per version in
# ${XDG_CACHE_HOME:-~/.cache}/lambda-eks); later starts take seconds, and the
# replica stays up between calls. The first Helm event (or serve) also builds
# the OCI registry (CNCF distribution, about 4 min) and starts the replica's
# Helm parts: a demo chart at https://127.0.0.1:8879/charts and
# oci://127.0.0.1:5000/charts/demo (user helm, password localeks-registry).
# Several runs may go at once: they share one replica. The replica behaves
# like a cluster: controllers and a scheduler roll workloads out onto 3 nodes
# simulated by kwok, where pods run and Jobs complete; a pod labelled
# lambda-eks.io/test-never-ready: "true" never becomes Ready (a rollout that
# really fails).
set -euo pipefail

# No AWS client started from here may reach instance metadata.
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1
export AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LAMBDA_EKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lambda-eks}"
localeks="$cache/bin/localeks"
export LOCALEKS_DIR="${LOCALEKS_DIR:-$cache/stack}"

log() { printf 'local.sh: %s\n' "$*" >&2; }

# Builds go to a temporary file of their own, renamed into place: concurrent
# runs never see a half-written binary, nor race on one temporary name.
build_cli() {
	local tmp
	log "building the localeks CLI"
	mkdir -p "$(dirname "$localeks")"
	tmp="$(mktemp "$localeks.XXXXXX")"
	if ! (cd "$root/localeks" && GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$tmp" ./cmd/localeks); then
		rm -f "$tmp"
		exit 1
	fi
	mv -f "$tmp" "$localeks"
}

build_parts() {
	LOCALEKS_PARTS="$("$root/localeks/parts/build.sh")"
	export LOCALEKS_PARTS
	export LOCALEKS_PERMISSIONS="$root/permissions.yml"
}

# The Helm function's parts, built only for a Helm event or serve: the
# first ensure-nginx never waits for them.
build_helm_parts() {
	LOCALEKS_REGISTRY="$("$root/localeks/parts/registry/build.sh" registry)/registry"
	export LOCALEKS_REGISTRY
}

# build_function NAME PACKAGE builds a function for this machine into the
# cache as bootstrap-NAME-ARCH, so that ./bootstrap (the arm64 artifact for
# deployment) is left alone, and sets bootstrap to it.
build_function() {
	local name="$1" pkg="$2" arch out tmp
	arch="$(go env GOARCH)"
	out="$cache/bin/bootstrap-$name-$arch"
	log "building the function $pkg for $arch"
	mkdir -p "$(dirname "$out")"
	tmp="$(mktemp "$out.XXXXXX")"
	if ! (cd "$root" && GOARCH="$arch" ./build-handler.sh "$tmp" "$pkg" >&2); then
		rm -f "$tmp"
		exit 1
	fi
	mv -f "$tmp" "$out"
	bootstrap="$out"
}

# sam_invoke EVENT FUNCTION
sam_invoke() {
	local event="$1" function="$2"
	if ! command -v sam >/dev/null 2>&1; then
		log "sam not found: install the AWS SAM CLI and Docker to invoke through sam, or run ./local.sh without --sam for the local replica"
		exit 127
	fi
	if [[ -z "${CLUSTER_NAME:-}" ]]; then
		log "set CLUSTER_NAME (and AWS credentials for an account that may describe it) to invoke through sam"
		exit 2
	fi
	cd "$root"
	log "sam build (the functions are arm64: on an x86 machine Docker needs QEMU emulation)"
	sam build --parameter-overrides "HelmFunction=true LifecycleFunction=true" >&2
	local args=(local invoke LambdaEksFunction --parameter-overrides "ClusterName='$CLUSTER_NAME'")
	if [[ "$function" == lambda-eks-helm ]]; then
		args=(local invoke LambdaEksHelmFunction --parameter-overrides "ClusterName='$CLUSTER_NAME' HelmFunction=true")
	elif [[ "$function" == lambda-eks-lifecycle ]]; then
		args=(local invoke LambdaEksLifecycleFunction --parameter-overrides "ClusterName='$CLUSTER_NAME' LifecycleFunction=true")
	fi
	# Not exec: a temporary event file is removed on exit.
	if [[ -n "$event" ]]; then
		sam "${args[@]}" --event "$event"
	else
		sam "${args[@]}" --no-event
	fi
	exit
}

# read_event EVENT sets event to a file holding it: stdin (-) is read once
# into a temporary file, since the event decides which function runs it.
read_event() {
	event="$1"
	if [[ "$event" == - ]]; then
		event="$(mktemp "${TMPDIR:-/tmp}/lambda-eks-event.XXXXXX")"
		trap 'rm -f "$event"' EXIT
		cat >"$event"
	fi
}

# route sets function (lambda-eks | lambda-eks-helm | lambda-eks-lifecycle)
# and mode (invoke | cfn | codepipeline | lifecycle) for the event file.
route() {
	local r
	r="$("$localeks" route "$1")"
	read -r function mode <<<"$r"
}

case "${1:-}" in
--sam)
	shift
	function=lambda-eks
	if [[ -n "${1:-}" ]]; then
		read_event "$1"
		build_cli
		route "$event"
	fi
	sam_invoke "${event:-}" "$function"
	;;
down | status)
	[[ -x "$localeks" ]] || build_cli
	exec "$localeks" "$1"
	;;
kubectl)
	shift
	build_parts
	build_cli
	"$localeks" up >/dev/null
	KUBECONFIG="$LOCALEKS_DIR/admin.kubeconfig" exec kubectl "$@"
	;;
env)
	build_parts
	build_cli
	"$localeks" up >/dev/null
	exec "$localeks" env
	;;
serve)
	port="${2:-9000}"
	build_parts
	build_helm_parts
	build_cli
	build_function main .
	main_bootstrap="$bootstrap"
	build_function helm ./cmd/helm
	helm_bootstrap="$bootstrap"
	flags=()
	names="lambda-eks (also: function) and lambda-eks-helm"
	if [[ -d "$root/cmd/lifecycle" ]]; then
		build_function lifecycle ./cmd/lifecycle
		flags=(--lifecycle-bootstrap "$bootstrap")
		names="lambda-eks (also: function), lambda-eks-helm and lambda-eks-lifecycle"
	fi
	log "serving $names on http://127.0.0.1:$port (starting the local EKS replica unless it runs)"
	exec "$localeks" serve --bootstrap "$main_bootstrap" --helm-bootstrap "$helm_bootstrap" "${flags[@]}" --port "$port"
	;;
-h | --help | help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	;;
*)
	read_event "${1:-$root/events/ensure-nginx.json}"
	build_cli
	route "$event"
	if [[ "${LAMBDA_EKS_TARGET:-local}" == aws ]]; then
		sam_invoke "$event" "$function"
	fi
	build_parts
	flags=()
	if [[ "$function" == lambda-eks-helm ]]; then
		build_helm_parts
		build_function helm ./cmd/helm
		flags=(--helm)
	elif [[ "$function" == lambda-eks-lifecycle ]]; then
		build_function lifecycle ./cmd/lifecycle
	else
		build_function main .
	fi
	log "invoking $function ($mode) with ${1:-$event} (starting the local EKS replica unless it runs)"
	# Not exec: a temporary event file is removed on exit.
	status=0
	"$localeks" "$mode" "${flags[@]}" --bootstrap "$bootstrap" "$event" || status=$?
	exit "$status"
	;;
esac
