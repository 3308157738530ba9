#!/usr/bin/env bash
# Pin k8s.io/kubernetes and every one of its staging modules to one release.
#
# k8s.io/kubernetes points its staging modules (k8s.io/api, client-go, ...) at ./staging with
# replace directives, which do not apply to modules that import it. Vessel therefore replaces each
# staging module with its published tag v0.<minor>.<patch>. Usage: hack/bump-kubernetes.sh 1.34.4
set -euo pipefail
ver=${1:?usage: $0 KUBERNETES_VERSION (e.g. 1.34.4)}
ver=${ver#v}
staging_ver="v0.${ver#*.}"
cd "$(dirname "$0")/.."

modfile=$(go mod download -json "k8s.io/kubernetes@v${ver}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -n "$modfile" ] || { echo "cannot download k8s.io/kubernetes@v${ver}" >&2; exit 1; }

go mod edit -require="k8s.io/kubernetes@v${ver}"
for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile"); do
	go mod edit -replace="${m}=${m}@${staging_ver}"
done
# Keep the -X version stamps in one place in step with the module.
sed -i "s/^KUBE_VERSION=.*/KUBE_VERSION=v${ver}/" hack/version.sh
go mod tidy
echo "pinned k8s.io/kubernetes v${ver} and its staging modules at ${staging_ver}"
