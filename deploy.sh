#!/usr/bin/env bash
# Deploys lambda-eks to AWS with SAM and gives its role access to the cluster.
#
#   ./deploy.sh --cluster NAME [options]         deploy
#   ./deploy.sh --cluster NAME --dry-run         print what would be done, change nothing
#
# Options (or the environment variable in brackets):
#   --cluster NAME            EKS cluster to manage                      [CLUSTER_NAME]
#   --region REGION           region of the stack and cluster            [AWS_REGION]
#   --stack-name NAME         CloudFormation stack (default lambda-eks)  [STACK_NAME]
#   --access-mode MODE        access-entry (default) | aws-auth | none   [ACCESS_MODE]
#   --namespace NS            namespace the function manages (default)   [NAMESPACE]
#   --role-arn ARN            role to assume for a cross-account cluster [TARGET_ROLE_ARN]
#   --external-id ID          external ID for --role-arn                 [EXTERNAL_ID]
#   --schedule EXPR           EventBridge schedule, e.g. "rate(1 hour)"  [SCHEDULE]
#   --schedule-input JSON     event the schedule sends                   [SCHEDULE_INPUT]
#   --subnets a,b --security-groups sg   VPC placement for a private endpoint
#   --manifest-bucket BUCKET  S3 bucket manifests may be read from      [MANIFEST_BUCKET]
#                             (manifestS3 events, ManifestS3 custom resources)
#   --timeout SECONDS         function timeout (default 30)
#   --helm                    also deploy the Helm function                [HELM_FUNCTION=true]
#                             (HelmFunction=true: helm-* events, Custom::HelmRelease)
#   --lifecycle ASG[,ASG...]  also deploy the node lifecycle function     [LIFECYCLE_ASGS]
#                             (LifecycleFunction=true) for up to 3 Auto Scaling
#                             groups (LifecycleAsgNames); "--lifecycle -" for no
#                             group: Spot and Health events only
#   --lifecycle-hooks         create the groups' lifecycle hooks too     [LIFECYCLE_HOOKS=true]
#                             (LifecycleHooks=true; not with "-")
#   --kube-context CTX        kubectl context for aws-auth and RBAC (default: current)
#   --cluster-wide            apply permissions-cluster.yml (a ClusterRole: every
#                             namespace, and cluster-scoped kinds such as CRDs)
#                             instead of the namespaced permissions.yml
#   --dry-run                 print the plan and the commands, run nothing
#
# With access-entry, the template creates an EKS access entry mapping the
# function's role to the Kubernetes group lambda-eks (and, with --helm, the
# Helm function's role to lambda-eks-helm; with --lifecycle, the lifecycle
# function's role to lambda-eks-lifecycle). With aws-auth, this script merges
# that mapping (each mapping) into kube-system/aws-auth, keeping every other
# entry. Either way it applies permissions.yml (RBAC for every group) into
# the namespace with kubectl, which must already reach the cluster as an
# admin (aws eks update-kubeconfig --name CLUSTER).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

cluster="${CLUSTER_NAME:-}"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
stack="${STACK_NAME:-lambda-eks}"
access_mode="${ACCESS_MODE:-access-entry}"
namespace="${NAMESPACE:-default}"
role_arn="${TARGET_ROLE_ARN:-}"
external_id="${EXTERNAL_ID:-}"
schedule="${SCHEDULE:-}"
schedule_input="${SCHEDULE_INPUT:-}"
manifest_bucket="${MANIFEST_BUCKET:-}"
helm="${HELM_FUNCTION:-false}"
lifecycle_asgs="${LIFECYCLE_ASGS:-}"
lifecycle_hooks="${LIFECYCLE_HOOKS:-false}"
subnets=""
security_groups=""
timeout=30
kube_context=""
cluster_wide=false
dry_run=false

die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 2; }
log() { printf 'deploy.sh: %s\n' "$*" >&2; }

while (($#)); do
	case "$1" in
	--cluster) cluster="$2"; shift 2 ;;
	--region) region="$2"; shift 2 ;;
	--stack-name) stack="$2"; shift 2 ;;
	--access-mode) access_mode="$2"; shift 2 ;;
	--namespace) namespace="$2"; shift 2 ;;
	--role-arn) role_arn="$2"; shift 2 ;;
	--manifest-bucket) manifest_bucket="$2"; shift 2 ;;
	--external-id) external_id="$2"; shift 2 ;;
	--schedule) schedule="$2"; shift 2 ;;
	--schedule-input) schedule_input="$2"; shift 2 ;;
	--subnets) subnets="$2"; shift 2 ;;
	--security-groups) security_groups="$2"; shift 2 ;;
	--timeout) timeout="$2"; shift 2 ;;
	--kube-context) kube_context="$2"; shift 2 ;;
	--cluster-wide) cluster_wide=true; shift ;;
	--helm) helm=true; shift ;;
	--lifecycle)
		[[ -n "${2:-}" ]] || die "--lifecycle needs ASG[,ASG...] (up to 3 Auto Scaling groups), or - for none (Spot and Health events only)"
		lifecycle_asgs="$2"; shift 2 ;;
	--lifecycle-hooks) lifecycle_hooks=true; shift ;;
	--dry-run) dry_run=true; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

[[ -n "$cluster" ]] || die "--cluster (or CLUSTER_NAME) is required"
[[ -n "$region" ]] || die "--region (or AWS_REGION) is required"
case "$access_mode" in access-entry | aws-auth | none) ;; *) die "--access-mode must be access-entry, aws-auth or none" ;; esac
case "$helm" in true | false) ;; *) die "HELM_FUNCTION must be true or false" ;; esac
case "$lifecycle_hooks" in true | false) ;; *) die "LIFECYCLE_HOOKS must be true or false" ;; esac

# check_asgs refuses a LifecycleAsgNames the stack could not use: more than
# the template's 3 groups, an empty item, or a name Auto Scaling would not
# have (1 to 255 ASCII characters 33 to 126, no colon). It also refuses *
# and ? (legal in a name, but wildcards in the ARNs the role's IAM policy
# names the groups by) and a single quote (sam's quoting).
check_asgs() {
	local LC_ALL=C name
	local -a names
	[[ "$1" != ,* && "$1" != *, && "$1" != *,,* ]] || die "--lifecycle $1: an empty group name (a comma too many)"
	IFS=, read -r -a names <<<"$1"
	((${#names[@]} <= 3)) || die "--lifecycle $1: ${#names[@]} groups, the template takes at most 3"
	for name in "${names[@]}"; do
		[[ "$name" =~ ^[!-~]{1,255}$ && "$name" != *:* ]] ||
			die "--lifecycle: $(printf '%q' "$name") is not an Auto Scaling group name (1 to 255 ASCII characters, no space, no colon)"
		[[ "$name" != *[\'*?]* ]] ||
			die "--lifecycle: $name: deploy.sh refuses * and ? (wildcards in the role's IAM policy) and ' in a group name"
	done
}
lifecycle=false
if [[ -n "$lifecycle_asgs" ]]; then
	lifecycle=true
	[[ "$lifecycle_asgs" == - ]] || check_asgs "$lifecycle_asgs"
fi
if $lifecycle_hooks && ! $lifecycle; then
	die "--lifecycle-hooks needs --lifecycle ASG[,ASG...] (the groups to hook)"
fi
if $lifecycle_hooks && [[ "$lifecycle_asgs" == - ]]; then
	die "--lifecycle-hooks needs groups to hook: --lifecycle ASG[,ASG...], not -"
fi
[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--namespace $namespace is not a DNS-1123 label"
if [[ -n "$role_arn" && "$access_mode" == access-entry ]]; then
	log "with --role-arn the cluster is in another account: map $role_arn there (access entry or aws-auth) yourself"
fi

# run prints a command; it also runs it unless this is a dry run. Its
# output is progress (stderr): stdout holds only the invoke commands at the
# end.
run() {
	printf '+ %s\n' "$*" >&2
	if ! $dry_run; then "$@" >&2; fi
}

kubectl_args=()
[[ -n "$kube_context" ]] && kubectl_args=(--context "$kube_context")

# sam's --parameter-overrides refuses empty values and splits unquoted ones
# at spaces: pass only what is set, each value in single quotes.
params=()
param() {
	local value="$2"
	[[ -n "$value" ]] || return 0
	[[ "$value" != *"'"* ]] || die "$1 must not contain a single quote"
	params+=("$1='$value'")
}
param ClusterName "$cluster"
param AccessMode "$access_mode"
param Namespace "$namespace"
param TargetRoleArn "$role_arn"
param ExternalId "$external_id"
param TimeoutSeconds "$timeout"
param SubnetIds "$subnets"
param SecurityGroupIds "$security_groups"
param ManifestBucket "$manifest_bucket"
$helm && param HelmFunction true
if $lifecycle; then
	param LifecycleFunction true
	[[ "$lifecycle_asgs" == - ]] || param LifecycleAsgNames "$lifecycle_asgs"
	$lifecycle_hooks && param LifecycleHooks true
fi
if [[ -n "$schedule" ]]; then
	param ScheduleExpression "$schedule"
	param ScheduleEnabled true
	param ScheduleInput "$schedule_input"
fi

functions="the function"
$helm && functions+=", the Helm function"
if $lifecycle && [[ "$lifecycle_asgs" == - ]]; then
	functions+=", the lifecycle function (no group: Spot and Health events)"
elif $lifecycle && $lifecycle_hooks; then
	functions+=", the lifecycle function (groups $lifecycle_asgs, their hooks made here)"
elif $lifecycle; then
	functions+=", the lifecycle function (groups $lifecycle_asgs)"
fi
log "plan: stack $stack in $region for cluster $cluster ($functions), access mode $access_mode, namespace $namespace$($dry_run && echo ' (dry run: nothing is changed)')"

run sam build
run sam deploy --stack-name "$stack" --region "$region" --capabilities CAPABILITY_IAM --resolve-s3 \
	--no-confirm-changeset --no-fail-on-empty-changeset --parameter-overrides "${params[@]}"

# output KEY is the stack's output KEY (a placeholder in a dry run).
outputs=""
output() {
	if $dry_run; then
		printf '<%s output of stack %s>' "$1" "$stack"
		return
	fi
	awk -F '\t' -v k="$1" '$1 == k { print $2 }' <<<"$outputs"
}
if $dry_run; then
	printf '+ %s\n' "aws cloudformation describe-stacks --stack-name $stack --region $region (its outputs)" >&2
else
	outputs="$(aws cloudformation describe-stacks --stack-name "$stack" --region "$region" \
		--query "Stacks[0].Outputs[].[OutputKey,OutputValue]" --output text)"
	log "function role: $(output FunctionRoleArn)"
	$helm && log "Helm function role: $(output HelmFunctionRoleArn)"
	$lifecycle && log "lifecycle function role: $(output LifecycleFunctionRoleArn)"
fi

if [[ "$access_mode" == aws-auth && -z "$role_arn" ]]; then
	# Merge one entry per function; never replace the map (other roles,
	# nodes, users stay).
	run go run ./cmd/awsauth -role-arn "$(output FunctionRoleArn)" -group lambda-eks ${kube_context:+-context "$kube_context"}
	if $helm; then
		run go run ./cmd/awsauth -role-arn "$(output HelmFunctionRoleArn)" -group lambda-eks-helm ${kube_context:+-context "$kube_context"}
	fi
	if $lifecycle; then
		run go run ./cmd/awsauth -role-arn "$(output LifecycleFunctionRoleArn)" -group lambda-eks-lifecycle ${kube_context:+-context "$kube_context"}
	fi
fi
if [[ -z "$role_arn" ]] && $cluster_wide; then
	run kubectl "${kubectl_args[@]}" apply --server-side --field-manager lambda-eks-deploy -f permissions-cluster.yml
elif [[ -z "$role_arn" ]]; then
	run kubectl "${kubectl_args[@]}" apply --server-side --field-manager lambda-eks-deploy -n "$namespace" -f permissions.yml
else
	log "apply permissions.yml in the target cluster (kubectl apply -n $namespace -f permissions.yml) with that account's credentials"
fi
log "done$($dry_run && echo ' (dry run)'); invoke (AWS CLI v1 and v2 alike: fileb:// sends the file as it is):"
# The results on stdout: commands to copy.
printf 'aws lambda invoke --region %s --function-name %s --payload fileb://events/ensure-nginx.json out.json && cat out.json\n' \
	"$region" "$(output FunctionArn)"
if $helm; then
	printf 'aws lambda invoke --region %s --function-name %s --payload fileb://events/helm-status.json out.json && cat out.json\n' \
		"$region" "$(output HelmFunctionArn)"
fi
if $lifecycle; then
	# A test notification: acknowledged, nothing drained.
	printf 'aws lambda invoke --region %s --function-name %s --payload fileb://events/asg-test-notification.json out.json && cat out.json\n' \
		"$region" "$(output LifecycleFunctionArn)"
fi
