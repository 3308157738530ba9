#!/usr/bin/env bash
# Prints the -ldflags that stamp the embedded Kubernetes version (without them the apiserver reports
# v0.0.0-master) and Vessel's own version. Sourced by the Makefile and .ci/run.
KUBE_VERSION=v1.34.4
kube_major=${KUBE_VERSION#v}; kube_major=${kube_major%%.*}
kube_minor=${KUBE_VERSION#v*.}; kube_minor=${kube_minor%%.*}
vessel_version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
pkg=k8s.io/component-base/version
echo "-X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${kube_major} -X ${pkg}.gitMinor=${kube_minor} -X github.com/vessel-dev/vessel/internal/version.Version=${vessel_version}"
