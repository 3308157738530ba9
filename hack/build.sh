#!/usr/bin/env bash
# Builds bin/vessel, with the version stamps the embedded Kubernetes needs, and bin/vessel-shim.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -trimpath -ldflags "-s -w $(bash hack/version.sh)" -o bin/vessel ./cmd/vessel
# The oci runtime's per-container shim, found next to vessel (a few ms to start instead of ~200).
go build -trimpath -ldflags "-s -w" -o bin/vessel-shim ./cmd/vessel-shim
echo "built bin/vessel and bin/vessel-shim"
