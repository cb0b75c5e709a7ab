# lambda-eks: `make test` runs every check and test (what .ci/run runs);
# ./local.sh runs the function against the local EKS replica.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

# No AWS client started from here may reach instance metadata.
export AWS_EC2_METADATA_SERVICE_ENDPOINT := http://127.0.0.1:1
export AWS_REGION ?= us-east-1
export GOWORK := off

CACHE ?= $(or $(LAMBDA_EKS_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lambda-eks)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(CACHE)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
MAX_BOOTSTRAP_BYTES := 33554432

.PHONY: test prereqs unit lint vet fmt cfn-lint check-binary e2e parts qemu bench fuzz tools clean

## test: everything CI runs, in order of speed
test: prereqs fmt vet lint unit check-binary cfn-lint e2e

## prereqs: what the machine image must provide (the rest is built here)
prereqs:
	@missing=(); for cmd in go kubectl moto_server cfn-lint; do command -v "$$cmd" >/dev/null || missing+=("$$cmd"); done; \
	  if (( $${#missing[@]} )); then echo "missing on PATH: $${missing[*]} (Go 1.26; kubectl; pip: moto[server] cfn-lint)" >&2; exit 1; fi

## unit: the function module's unit tests (no network but loopback fakes)
unit:
	go test -count=1 ./...

fmt:
	@out="$$(gofmt -l . )"; if [[ -n "$$out" ]]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

vet:
	go vet ./...
	cd localeks && go vet ./...

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...
	cd localeks && $(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	@echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $(dir $@) (about 3 min, once)" >&2
	GOBIN="$(dir $@)" GOFLAGS= go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

tools: $(GOLANGCI_LINT)

## check-binary: the deployable bootstrap is static linux/arm64, at most 32 MB,
## and the function's own packages never run a binary
check-binary:
	./build-handler.sh
	@size=$$(stat -c %s bootstrap); echo "bootstrap: $$size bytes" >&2; \
	  if (( size > $(MAX_BOOTSTRAP_BYTES) )); then echo "bootstrap is larger than 32 MB" >&2; exit 1; fi
	@info="$$(go version -m bootstrap)"; for want in 'CGO_ENABLED=0' 'GOARCH=arm64' 'GOOS=linux' '-tags=lambda.norpc'; do \
	  grep -qF -- "$$want" <<<"$$info" || { echo "bootstrap lacks build setting $$want" >&2; exit 1; }; done
	@if go list -f '{{.ImportPath}}: {{join .Imports " "}}' . ./auth ./kube ./handler ./lifecycle ./internal/invoke ./internal/cfnresource | grep -w 'os/exec'; then \
	  echo "the function's packages must not import os/exec" >&2; exit 1; fi
	@if go list -deps . | grep '^helm\.sh/' >/dev/null; then echo "the main function must not link the Helm SDK (it lives in cmd/helm)" >&2; exit 1; fi
	@# Functions are peers on internal/invoke and internal/cfnresource: none imports another's package.
	@if go list -deps . | grep 'lambda-eks/helmrelease$$' >/dev/null; then echo "the main function must not import helmrelease" >&2; exit 1; fi
	@if go list -deps ./cmd/helm | grep 'lambda-eks/handler$$' >/dev/null; then echo "the Helm function must not import handler" >&2; exit 1; fi
	@if go list -deps . ./cmd/helm | grep 'lambda-eks/lifecycle$$' >/dev/null; then echo "the main and Helm functions must not import lifecycle" >&2; exit 1; fi
	@if go list -deps ./cmd/lifecycle | grep -E 'lambda-eks/(handler|helmrelease)$$|^helm\.sh/' >/dev/null; then \
	  echo "the lifecycle function must not import handler, helmrelease or the Helm SDK" >&2; exit 1; fi
	@if go list -deps ./kube ./auth | grep -E 'lambda-eks/(handler|helmrelease|internal/invoke|internal/cfnresource)$$' >/dev/null; then \
	  echo "kube and auth must not import a function's package nor the framework" >&2; exit 1; fi

cfn-lint:
	cfn-lint template.yml
	python3 scripts/check-template.py

## e2e: end-to-end tests through the built bootstrap on the local EKS replica;
## builds the parts that are missing (cached per version outside the checkout)
## and runs the function under aws-lambda-rie, the arm64 one through QEMU
e2e: qemu
	parts="$$(localeks/parts/build.sh)"; cd localeks && \
	  LOCALEKS_PARTS="$$parts" LOCALEKS_RIE="$$parts/aws-lambda-rie" go test -count=1 -timeout 60m ./...

## parts: build the local replica's parts that are missing
parts:
	localeks/parts/build.sh
	localeks/parts/registry/build.sh registry

## qemu: qemu-aarch64-static (Debian's qemu-user-static) runs the arm64 bootstrap
qemu:
	@command -v qemu-aarch64-static >/dev/null || { \
	  echo "installing qemu-user-static with apt-get (once)" >&2; \
	  sudo=; if (( $$(id -u) != 0 )); then sudo=sudo; fi; \
	  $$sudo apt-get install -y -q qemu-user-static >&2 || { $$sudo apt-get update -q >&2 && $$sudo apt-get install -y -q qemu-user-static >&2; }; }

bench:
	go test -run '^$$' -bench . -benchmem ./auth ./handler

## fuzz: the parsers of untrusted input, 30 s each
fuzz:
	go test -run '^$$' -fuzz '^FuzzInvoke$$' -fuzztime 30s ./handler
	go test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime 30s ./handler
	go test -run '^$$' -fuzz '^FuzzProperties$$' -fuzztime 30s ./handler
	go test -run '^$$' -fuzz '^FuzzServe$$' -fuzztime 30s ./internal/cfnresource
	go test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime 30s ./helmrelease
	go test -run '^$$' -fuzz '^FuzzPipelineParams$$' -fuzztime 30s ./helmrelease
	@# Minimizing an artifact that Helm's loaders read is slow: none.
	go test -run '^$$' -fuzz '^FuzzArtifact$$' -fuzztime 30s -fuzzminimizetime 0 ./helmrelease
	go test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime 30s ./lifecycle
	go test -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime 30s ./kube
	go test -run '^$$' -fuzz '^FuzzDecodeAsBefore$$' -fuzztime 30s ./kube

## build-LambdaEksFunction: what `sam build` runs (BuildMethod: makefile)
build-LambdaEksFunction:
	GOARCH=arm64 ./build-handler.sh "$(ARTIFACTS_DIR)/bootstrap"

## build-LambdaEksHelmFunction: the Helm function (cmd/helm), for `sam build`
build-LambdaEksHelmFunction:
	GOARCH=arm64 ./build-handler.sh "$(ARTIFACTS_DIR)/bootstrap" ./cmd/helm

## build-LambdaEksLifecycleFunction: the node lifecycle function (cmd/lifecycle), for `sam build`
build-LambdaEksLifecycleFunction:
	GOARCH=arm64 ./build-handler.sh "$(ARTIFACTS_DIR)/bootstrap" ./cmd/lifecycle

clean:
	rm -rf bootstrap bootstrap.zip .aws-sam
