#!/usr/bin/env bash
# Builds the function: a static Linux binary named bootstrap (what the
# provided.al2023 runtime runs) and bootstrap.zip, for GOARCH (default arm64).
#
#   ./build-handler.sh [OUT] [PACKAGE]   (default: bootstrap, the main function .;
#                                         ./cmd/helm is the Helm function)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

arch="${GOARCH:-arm64}"
out="${1:-bootstrap}"
pkg="${2:-.}"
echo "build-handler: building $out ($pkg) for linux/$arch" >&2
CGO_ENABLED=0 GOOS=linux GOARCH="$arch" GOWORK=off \
	go build -tags lambda.norpc -trimpath -ldflags "-s -w" -o "$out" "$pkg"
if [[ "$out" == bootstrap ]]; then
	rm -f bootstrap.zip
	if command -v zip >/dev/null; then
		zip -q -9 bootstrap.zip bootstrap
	else
		python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED); z.write("bootstrap"); z.close()' bootstrap.zip
	fi
fi
ls -l "$out" >&2
