#!/usr/bin/env bash
# Runs a command inside the namespaces of a running e2e cluster (started by e2e/with-cluster.sh
# with --run-dir RUN_DIR), with its KUBECONFIG and binaries: for demos and debugging.
#
#   e2e/cluster-exec.sh RUN_DIR kubectl get pods -A
#   e2e/cluster-exec.sh RUN_DIR            # a shell
#   e2e/cluster-exec.sh RUN_DIR --stop     # tear the cluster down (waits until it is gone)
set -euo pipefail
run=${1:?usage: cluster-exec.sh RUN_DIR [CMD [ARG]...]}
shift
pid=$(cat "$run/namespace.pid" 2>/dev/null) || { echo "cluster-exec: no $run/namespace.pid" >&2; exit 2; }
if [[ ${1:-} == --stop ]]; then
    # The namespace's first process (with-cluster.sh inside) is unshare's only child; it stops
    # the command and the cluster on SIGTERM. unshare itself ignores SIGTERM.
    inner=$(pgrep -P "$pid") || { echo "cluster-exec: cluster in $run is not running" >&2; exit 0; }
    kill -TERM "$inner"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    exit 0
fi
[[ -f $run/env ]] || { echo "cluster-exec: the cluster in $run is not up (no $run/env)" >&2; exit 2; }
(($#)) || set -- "${SHELL:-/bin/bash}"
# shellcheck disable=SC2016
exec nsenter --target "$pid" --net --mount -- bash -c 'source "$0/env"; exec "$@"' "$run" "$@"
