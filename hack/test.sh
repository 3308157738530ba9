#!/usr/bin/env bash
# README command 2: the whole test suite, exactly as CI runs it (.ci/run calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
ldflags=$(bash hack/version.sh)
go vet ./...
go test -count=1 -timeout 40m -ldflags "$ldflags" ./...
# Bounded fuzzing of what untrusted input reaches: AdmissionReview bodies and profile patterns.
go test -run '^$' -fuzz '^FuzzAdmissionReview$' -fuzztime 20s ./internal/admission
go test -run '^$' -fuzz '^FuzzMatchPattern$' -fuzztime 10s ./internal/profile
