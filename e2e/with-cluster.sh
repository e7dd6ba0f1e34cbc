#!/usr/bin/env bash
# Runs a command against a fresh e2e cluster (real etcd, kube-apiserver, controller-manager and
# scheduler, plus the process kubelet) inside a private network and PID namespace, then tears
# everything down, also when the command fails or is interrupted.
#
#   e2e/with-cluster.sh [--run-dir DIR] [--node NAME=TEE]... [--image IMAGE=PATH]... -- CMD [ARG]...
#
# CMD runs with KUBECONFIG (admin), E2E_RUN_DIR and E2E_BIN_DIR set and the binaries on PATH; it
# can reach pod IPs (10.244.x.y) and the API server, and nothing outside the namespace. It must
# already be built: there is no network inside. Exits with CMD's status; when that is non-zero,
# prints the cluster's objects, events and logs. Logs stay in the run folder
# (default target/e2e-runs/<time>). Without --node: snp-0=sev-snp, tdx-0=tdx, cpu-0=none.
# To keep a cluster up (a demo): `e2e/with-cluster.sh --run-dir D -- sleep infinity &`, then
# `e2e/cluster-exec.sh D kubectl get pods -A`, and `e2e/cluster-exec.sh D --stop` to tear it down.
# CMD's stdin is /dev/null: use cluster-exec.sh for an interactive shell.
#
# Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), unshare, nsenter, iproute2, openssl, curl.
# E2E_BIN_DIR (default: from e2e/build-k8s-bins.sh) and E2E_KUBELET (default:
# target/debug/power-e2e-kubelet) can be set beforehand.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

run_dir=""
nodes=()
args=()
while (($#)); do
    case $1 in
        --run-dir) run_dir=$2; shift 2 ;;
        --node) nodes+=(--node "$2"); shift 2 ;;
        --image) args+=(--image "$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "with-cluster: unknown argument $1 (missing -- before the command?)" >&2; exit 2 ;;
    esac
done
(($#)) || { echo "usage: with-cluster.sh [--run-dir DIR] [--node N=TEE]... [--image I=PATH]... -- CMD..." >&2; exit 2; }
((${#nodes[@]})) || nodes=(--node snp-0=sev-snp --node tdx-0=tdx --node cpu-0=none)

if [[ -z ${E2E_IN_NAMESPACE:-} ]]; then
    export E2E_BIN_DIR=${E2E_BIN_DIR:-$("$here/build-k8s-bins.sh")}
    export E2E_KUBELET=${E2E_KUBELET:-${CARGO_TARGET_DIR:-$repo/target}/debug/power-e2e-kubelet}
    [[ -x $E2E_KUBELET ]] || { echo "with-cluster: $E2E_KUBELET is missing (cargo build -p power-e2e-kubelet)" >&2; exit 2; }
    run_dir=${run_dir:-$repo/target/e2e-runs/$(date -u +%Y%m%dT%H%M%SZ)-$$}
    mkdir -p "$run_dir"
    run_dir=$(cd "$run_dir" && pwd)
    # A new network namespace (only lo: nothing can leave it) and a new PID namespace whose
    # end kills every process started inside, whatever happens to the scripts. unshare keeps
    # this PID; e2e/cluster-exec.sh enters the namespaces through it.
    echo $$ >"$run_dir/namespace.pid"
    E2E_IN_NAMESPACE=1 exec unshare --net --pid --fork --mount-proc --kill-child -- \
        "$0" --run-dir "$run_dir" "${nodes[@]}" "${args[@]}" -- "$@"
fi

cluster=$here/cluster.sh
teardown() {
    local rc=$?
    "$cluster" down "$run_dir" || true
    exit "$rc"
}
cmd_pid=""
trap teardown EXIT
# The command runs in the background so that a signal is handled at once (bash runs traps only
# after a foreground child ends); it is stopped first.
trap '[[ -n $cmd_pid ]] && kill -TERM "$cmd_pid" 2>/dev/null; exit 143' INT TERM

if ! "$cluster" up "$run_dir" "${nodes[@]}" "${args[@]}"; then
    "$cluster" dump "$run_dir" >&2 || true
    echo "with-cluster: the cluster did not come up; logs in $run_dir/logs" >&2
    exit 1
fi
# shellcheck disable=SC1091
source "$run_dir/env"
"$@" &
cmd_pid=$!
rc=0
wait "$cmd_pid" || rc=$?
cmd_pid=""
if ((rc != 0)); then
    "$cluster" dump "$run_dir" >&2 || true
    echo "with-cluster: command failed (exit $rc); logs in $run_dir" >&2
else
    rm -rf "$run_dir/etcd"
fi
exit "$rc"
