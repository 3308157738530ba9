#!/usr/bin/env bash
# Regenerates the deepcopy functions and CRD manifests of api/v1 from the
# kubebuilder markers on its types. Run from anywhere; commit the result.
set -euo pipefail

CONTROLLER_TOOLS_VERSION=v0.19.0
cd "$(dirname "$0")/.."

controller_gen=(go run "sigs.k8s.io/controller-tools/cmd/controller-gen@${CONTROLLER_TOOLS_VERSION}")
if command -v controller-gen >/dev/null && controller-gen --version 2>/dev/null | grep -q "${CONTROLLER_TOOLS_VERSION}"; then
  controller_gen=(controller-gen)
fi

"${controller_gen[@]}" object paths=./api/v1
"${controller_gen[@]}" crd paths=./api/v1 output:crd:artifacts:config=api/v1/crds
