#!/usr/bin/env bash
# Benchmarks lambda-eks side by side with the ways users run today (ANCHORS.md),
# in one run on the local EKS replica, and prints a table of ratios on stdout.
#
#   scripts/bench.sh [BENCHTIME]     (default 20x: 20 iterations of the slow ones)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1
export AWS_REGION=us-east-1
export GOWORK=off

benchtime="${1:-20x}"
[[ "$benchtime" =~ ^[1-9][0-9]*x$ ]] || { echo "bench: BENCHTIME is a number of iterations, like 20x" >&2; exit 2; }
raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
echo "bench: running anchors benchmarks (-benchtime $benchtime) on the local replica" >&2
# BENCHTIME is for what takes tens of milliseconds or more; what takes a few
# milliseconds gets 10 times as many iterations, and a token (tens of
# microseconds) 100 times, so that their first call's set-up and the timer
# do not decide the figure.
n="${benchtime%x}"
(cd localeks && go test -run '^$' -count 1 -benchtime "$benchtime" \
	-bench 'Token(ExecAuthenticator|AWSCLI)|ApplyKubectl|ColdInit|InvokePeakRSS|ColdInvoke' ./e2e/ &&
	go test -run '^$' -count 1 -benchtime "$((n * 10))x" -bench 'Ensure(Reused|PerCall)|WarmInvoke' ./e2e/ &&
	go test -run '^$' -count 1 -benchtime "$((n * 100))x" -bench 'TokenInProcess' ./e2e/ &&
	go test -run '^$' -count 1 -benchtime "$benchtime" -bench 'ColdStart' ./coldstart/) | tee "$raw" >&2

# ns/op of a benchmark, by name.
ns() { awk -v n="Benchmark$1" '$1 ~ "^"n"(-[0-9]+)?$" { print $3; exit }' "$raw"; }
metric() { awk -v n="Benchmark$1" -v u="$2" '$1 ~ "^"n"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == u) print $i; exit }' "$raw"; }
ms() { awk -v v="$1" 'BEGIN { if (v == "") print "n/a"; else printf "%.3f ms", v / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.0fx", a / b }'; }

tok=$(ns TokenInProcess); exe=$(ns TokenExecAuthenticator); cli=$(ns TokenAWSCLI)
reused=$(ns EnsureReused); percall=$(ns EnsurePerCall); kubectl=$(ns ApplyKubectl)
warm=$(ns WarmInvoke); cold=$(ns ColdInvoke); init=$(ns ColdInit); rss=$(metric InvokePeakRSS peak-RSS-MiB)

cat <<TABLE
| what | lambda-eks | anchor | anchor / lambda-eks |
|---|---|---|---|
| mint a token | $(ms "$tok") in-process | $(ms "$exe") exec aws-iam-authenticator (demo) | $(ratio "$exe" "$tok") |
| mint a token | $(ms "$tok") in-process | $(ms "$cli") aws eks get-token (CDK) | $(ratio "$cli" "$tok") |
| ensure one Deployment, in-process | $(ms "$reused") reused clients | $(ms "$percall") everything built per call | $(ratio "$percall" "$reused") |
| apply one Deployment | $(ms "$warm") warm invoke through bootstrap | $(ms "$kubectl") kubectl apply --server-side | $(ratio "$kubectl" "$warm") |
| cold start + first invoke through bootstrap | $(ms "$cold") | | |
| bootstrap init (exec to first /next) | $(ms "$init") | | |
| bootstrap peak RSS after 51 invocations | ${rss:-n/a} MiB | 128 MB function | |
TABLE

# Cold starts against the floor: a bare aws-lambda-go bootstrap, same run.
num() { awk -v v="$1" 'BEGIN { if (v == "") print "n/a"; else printf "%.2f", v }'; }
cat <<TABLE

| cold start (exec to first request for an event) | median | / bare aws-lambda-go bootstrap |
|---|---|---|
| bare aws-lambda-go bootstrap (localeks/cmd/bare) | $(num "$(metric ColdStart bare-init-ms)") ms | 1 |
| main bootstrap | $(num "$(metric ColdStart main-init-ms)") ms | $(num "$(metric ColdStart main/bare)")x |
| Helm bootstrap | $(num "$(metric ColdStart helm-init-ms)") ms | $(num "$(metric ColdStart helm/bare)")x |
| main: start + first ensure-nginx (fake cluster) | $(num "$(metric ColdStart main-first-ms)") ms | $(num "$(metric ColdStart main-first/bare-first)")x of bare's start + first invoke |
TABLE
