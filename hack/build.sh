#!/usr/bin/env bash
# Builds bin/vessel with the version stamps the embedded Kubernetes needs.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -trimpath -ldflags "-s -w $(bash hack/version.sh)" -o bin/vessel ./cmd/vessel
echo "built bin/vessel"
