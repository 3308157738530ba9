#!/usr/bin/env bash
# README command 2: the whole test suite, exactly as CI runs it (.ci/run calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
ldflags=$(bash hack/version.sh)
go vet ./...
go test -count=1 -timeout 40m -ldflags "$ldflags" ./...
# Bounded fuzzing of what untrusted input reaches: AdmissionReview bodies and profile patterns.
# Bounded by executions, not time: a time bound makes the fuzzer fail with "context deadline
# exceeded" when a loaded machine stalls a worker at the deadline.
go test -run '^$' -fuzz '^FuzzAdmissionReview$' -fuzztime 150000x ./internal/admission
go test -run '^$' -fuzz '^FuzzMatchPattern$' -fuzztime 200000x ./internal/profile
