#!/usr/bin/env bash
# Runs the function locally. By default against the local EKS replica built
# from real parts (localeks/): no Docker, no AWS account, nothing leaves
# loopback. With --sam (or LAMBDA_EKS_TARGET=aws) through `sam local invoke`,
# for users with Docker and AWS credentials.
#
#   ./local.sh [EVENT_FILE|-]     invoke (default events/ensure-nginx.json); the
#                                 response JSON on stdout, exit 1 on a function error
#   ./local.sh serve [PORT]       keep one warm function behind the Lambda Invoke
#                                 API on 127.0.0.1:PORT (default 9000) until Ctrl-C:
#                                 aws lambda invoke --endpoint-url http://127.0.0.1:9000 \
#                                   --function-name function --payload '{}' out.json
#   ./local.sh kubectl ARGS...    kubectl as cluster admin against the replica
#   ./local.sh status | down      what runs | stop everything it started
#   ./local.sh env                shell exports for the function's environment and kubectl
#   ./local.sh --sam [EVENT]      sam local invoke LambdaEksFunction, in AWS_REGION
#                                 (default: AWS_DEFAULT_REGION, else us-east-1)
#
# The function runs under AWS's Lambda Runtime Interface Emulator, as in `sam
# local invoke`. Progress goes to stderr, results to stdout. The first run
# builds the parts (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd, aws-iam-authenticator, kwok, aws-lambda-rie: about 15 min on 2 cores,
# each part's time logged, cached per version in
# ${XDG_CACHE_HOME:-~/.cache}/lambda-eks); later starts take seconds, and the
# replica stays up between calls. Several runs may go at once: they share one
# replica. The replica behaves like a cluster: controllers and a scheduler
# roll workloads out onto 3 nodes simulated by kwok, where pods run and Jobs
# complete; a pod labelled lambda-eks.io/test-never-ready: "true" never
# becomes Ready (a rollout that really fails).
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

# The function is built for this machine into the cache, so that ./bootstrap
# (the arm64 artifact for deployment) is left alone.
build_function() {
	local arch tmp
	arch="$(go env GOARCH)"
	bootstrap="$cache/bin/bootstrap-$arch"
	log "building the function for $arch"
	mkdir -p "$(dirname "$bootstrap")"
	tmp="$(mktemp "$bootstrap.XXXXXX")"
	if ! (cd "$root" && GOARCH="$arch" ./build-handler.sh "$tmp" >&2); then
		rm -f "$tmp"
		exit 1
	fi
	mv -f "$tmp" "$bootstrap"
}

sam_invoke() {
	local event="${1:-}"
	if ! command -v sam >/dev/null 2>&1; then
		log "sam not found: install the AWS SAM CLI and Docker to invoke through sam, or run ./local.sh without --sam for the local replica"
		exit 127
	fi
	if [[ -z "${CLUSTER_NAME:-}" ]]; then
		log "set CLUSTER_NAME (and AWS credentials for an account that may describe it) to invoke through sam"
		exit 2
	fi
	cd "$root"
	log "sam build (the function is arm64: on an x86 machine Docker needs QEMU emulation)"
	sam build >&2
	local args=(local invoke LambdaEksFunction --parameter-overrides "ClusterName='$CLUSTER_NAME'")
	if [[ -n "$event" ]]; then
		exec sam "${args[@]}" --event "$event"
	fi
	exec sam "${args[@]}" --no-event
}

case "${1:-}" in
--sam)
	shift
	sam_invoke "${1:-}"
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
	build_cli
	build_function
	log "serving the function on http://127.0.0.1:$port (starting the local EKS replica unless it runs)"
	exec "$localeks" serve --bootstrap "$bootstrap" --port "$port"
	;;
-h | --help | help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	;;
*)
	event="${1:-$root/events/ensure-nginx.json}"
	if [[ "${LAMBDA_EKS_TARGET:-local}" == aws ]]; then
		sam_invoke "$event"
	fi
	build_parts
	build_cli
	build_function
	log "invoking bootstrap with $event (starting the local EKS replica unless it runs)"
	if [[ "$event" != - ]] && grep -q '"RequestType"' "$event" 2>/dev/null; then
		# A CloudFormation custom-resource request (what `localeks cfn`
		# requires): play CloudFormation with a presigned moto S3 URL as its
		# ResponseURL and print the body it received.
		exec "$localeks" cfn --bootstrap "$bootstrap" "$event"
	fi
	exec "$localeks" invoke --bootstrap "$bootstrap" "$event"
	;;
esac
