#!/usr/bin/env bash
# README command 1: build Vessel, bring it up on its embedded default and run the demo.
# Vessel keeps running in the background afterwards; the script prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/build.sh

data_dir=${VESSEL_DATA_DIR:-$( [ "$(id -u)" = 0 ] && echo /var/lib/vessel || echo "${XDG_DATA_HOME:-$HOME/.local/share}/vessel")}
log=${VESSEL_LOG:-/tmp/vessel-up.log}
./bin/vessel up --data-dir "$data_dir" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
	grep -q '^Vessel is ready' "$log" && break
	kill -0 "$pid" 2>/dev/null || { echo "vessel up failed:"; cat "$log"; exit 1; }
	sleep 0.1
done
grep '^Vessel is ready' "$log" || { echo "vessel up not ready after 60s, see $log"; exit 1; }

export KUBECONFIG="$data_dir/kubeconfig"
echo "+ kubectl get ns"
kubectl get ns
echo
echo "Vessel is running (pid $pid, log $log). Stop it with: kill $pid"
