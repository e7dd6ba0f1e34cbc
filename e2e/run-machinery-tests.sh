#!/usr/bin/env bash
# Entry point for CI: proves the e2e machinery (control plane + process kubelet) on this machine.
# Builds (or reuses from the cache) the Go binaries, builds the kubelet and the test binary, then
# runs tests/machinery.rs against a fresh cluster inside a private network namespace.
# Exits non-zero on failure, after printing the cluster's objects and logs.
#
#   e2e/run-machinery-tests.sh [TEST-NAME-FILTER]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"
t0=$SECONDS

E2E_BIN_DIR=$("$here/build-k8s-bins.sh")
export E2E_BIN_DIR
t_bins=$((SECONDS - t0))

cargo build -p power-e2e-kubelet --bin power-e2e-kubelet
test_bin=$(cargo test -p power-e2e-kubelet --test machinery --no-run --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*\/machinery-[^"]*\)".*/\1/p' | tail -n 1)
[[ -x $test_bin ]] || { echo "run-machinery-tests: no test binary found" >&2; exit 1; }
export E2E_KUBELET=${CARGO_TARGET_DIR:-$repo/target}/debug/power-e2e-kubelet
t_rust=$((SECONDS - t0 - t_bins))

# The test pods run python3; the real interpreter, not a shim (pods get a clean environment).
python=$(python3 -c 'import sys; print(sys.executable)')

status=0
"$here/with-cluster.sh" --image "e2e.local/python=$python" -- \
    "$test_bin" --ignored --test-threads="${E2E_TEST_THREADS:-3}" ${1:+"$1"} || status=$?
echo "run-machinery-tests: go binaries ${t_bins}s, rust build ${t_rust}s, cluster+tests $((SECONDS - t0 - t_bins - t_rust))s, exit $status" >&2
exit "$status"
