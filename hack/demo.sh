#!/usr/bin/env bash
# README command 1: build Vessel, bring it up on its embedded default and run the demo: a
# 3-replica Deployment of the demo server, each pod in its own sandbox with its own IP and node.
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
registry=$(sed -n 's/^Local registry: \([^ ]*\).*/\1/p' "$log")
set -x
# The demo image: a static HTTP server answering with its pod's name, built here and pushed to
# Vessel's local registry (no internet needed).
./bin/vessel image build-demo --registry "$registry"
kubectl create deployment demo --image="$registry/vessel/demo:latest" --replicas=3 --port=8080 \
	--dry-run=client -o yaml | kubectl apply -f -
kubectl rollout status deployment/demo --timeout=120s
kubectl get pods -o wide
kubectl get nodes
set +x
for ip in $(kubectl get pods -l app=demo -o jsonpath='{.items[*].status.podIP}'); do
	echo "+ curl http://$ip:8080/"
	curl -fsS --max-time 5 "http://$ip:8080/"
done
echo
echo "Vessel is running (pid $pid, log $log)."
echo "Sandboxes outlive vessel up on purpose (the next start adopts them). To stop everything:"
echo "  kubectl delete deployment demo && kill $pid"
