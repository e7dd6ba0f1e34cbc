#!/usr/bin/env bash
# Entry point for CI: the e2e scenarios of issue #8 (e2e/scenarios/test_scenarios.py) on a fresh
# control plane. Builds what is missing (Go binaries from the cache, the kubelet, operator,
# runtime and verifier, the generated models), then runs pytest inside the cluster's private
# namespaces: the operator is installed with Helm from charts/a3s-power-operator and runs as a
# pod; runtime pods run the release `a3s-power` with simulated attestation.
#
#   e2e/run-scenarios.sh [PYTEST-ARGS...]      e.g. -k happy_path
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"
t0=$SECONDS
target=${CARGO_TARGET_DIR:-$repo/target}
models=${A3S_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/a3s-power/models}

E2E_BIN_DIR=$("$here/build-k8s-bins.sh")
export E2E_BIN_DIR
cargo build -q -p power-e2e-kubelet -p power-operator -p power-attest
cargo build -q --release -p a3s-power
python3 tools/gen-model.py --preset tiny-qwen2 --types q4_k_m --out "$models" >/dev/null
python3 tools/gen-model.py --preset tiny-llama --types q4_k_m --out "$models" >/dev/null
export E2E_KUBELET=$target/debug/power-e2e-kubelet
t_build=$((SECONDS - t0))

export A3S_REPO=$repo A3S_MODELS=$models
export A3S_RUNTIME_BIN=$target/release/a3s-power A3S_VERIFY_BIN=$target/debug/a3s-power-verify
status=0
"$here/with-cluster.sh" \
    --image "ghcr.io/a3s-lab/power-operator=$target/debug/a3s-power-operator" \
    --image "ghcr.io/a3s-lab/power=$A3S_RUNTIME_BIN" \
    -- python3 -m pytest -p no:cacheprovider -rA --durations=0 -v "$here/scenarios" "$@" \
    || status=$?
echo "run-scenarios: build ${t_build}s, cluster+scenarios $((SECONDS - t0 - t_build))s, exit $status" >&2
exit "$status"
