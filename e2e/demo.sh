#!/usr/bin/env bash
# `make demo`: the whole story on this machine, left running.
#
#   e2e/demo.sh up     build what is missing, start the control plane + process kubelet, install
#                      the operator chart, apply config/samples, wait for attested Ready, print
#                      `kubectl get pim -o wide`, the verifier's verdict and a streamed chat
#                      completion, and leave it all running
#   e2e/demo.sh down   stop it
#
# The cluster lives in a private network namespace; the API server and the model Service are
# forwarded to 127.0.0.1 (ports below), so kubectl/helm/curl on this machine reach them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
run=$repo/target/demo
models=${A3S_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/a3s-power/models}
api_port=${A3S_DEMO_API_PORT:-16443}
chat_port=${A3S_DEMO_CHAT_PORT:-18080}
in_cluster() { "$here/cluster-exec.sh" "$run" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

down() {
    if [[ -f $run/forwarders.pid ]]; then
        xargs -r kill <"$run/forwarders.pid" 2>/dev/null || true
        rm -f "$run/forwarders.pid"
    fi
    [[ -f $run/namespace.pid ]] && "$here/cluster-exec.sh" "$run" --stop || true
    echo "demo: stopped"
}

up() {
    if [[ -f $run/namespace.pid ]] && kill -0 "$(cat "$run/namespace.pid")" 2>/dev/null; then
        echo "demo: already running (make demo-down to stop it); KUBECONFIG=$run/host.kubeconfig" >&2
        exit 1
    fi
    say "building (cached after the first run)"
    E2E_BIN_DIR=$("$here/build-k8s-bins.sh")
    export E2E_BIN_DIR
    cargo build -q -p power-e2e-kubelet -p power-operator -p power-attest
    cargo build -q --release -p a3s-power
    python3 tools/gen-model.py --preset tiny-qwen2 --types q4_k_m --out "$models" >/dev/null
    local runtime=$target/release/a3s-power
    export E2E_KUBELET=$target/debug/power-e2e-kubelet

    say "starting etcd, kube-apiserver, controller-manager, scheduler and the process kubelet"
    rm -rf "$run"
    mkdir -p "$run"
    # The cluster's command is the model server ("the host" 10.245.0.1:8000 inside the private
    # network); the cluster lives until it is stopped.
    setsid "$here/with-cluster.sh" --run-dir "$run" \
        --image "ghcr.io/a3s-lab/power-operator=$target/debug/a3s-power-operator" \
        --image "ghcr.io/a3s-lab/power=$runtime" \
        -- python3 -m http.server 8000 --bind 0.0.0.0 --directory "$models" \
        >"$run/cluster.log" 2>&1 </dev/null &
    local t=0
    until [[ -f $run/env ]] && in_cluster kubectl get --raw /readyz >/dev/null 2>&1; do
        sleep 1
        t=$((t + 1))
        if ((t > 120)) || ! kill -0 $! 2>/dev/null; then
            cat "$run/cluster.log" >&2
            echo "demo: the cluster did not come up" >&2
            exit 1
        fi
    done
    tail -n 1 "$run/cluster.log"

    say "helm install a3s charts/a3s-power-operator"
    in_cluster helm install a3s "$repo/charts/a3s-power-operator" -n a3s-power-system \
        --create-namespace --wait --timeout 180s | sed -n '1,4p'

    say "kubectl apply -f config/samples (the simulated policy pinned to this runtime build)"
    local measurement digest
    measurement=$(sha384sum "$runtime" | cut -d' ' -f1)
    digest=$(sha256sum "$models/tiny-qwen2-q4_k_m.gguf" | cut -d' ' -f1)
    sed -E "s/(ab){48}/$measurement/" config/samples/attestationpolicy-simulated.yaml \
        >"$run/policy.yaml"
    sed "s/2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae/$digest/" \
        config/samples/inferencemodel-url.yaml >"$run/model.yaml"
    in_cluster kubectl apply -f "$run/policy.yaml" -f "$run/model.yaml"
    in_cluster kubectl wait --for=condition=Ready pim/tiny-chat --timeout=300s

    say "kubectl get pim -o wide"
    in_cluster kubectl get pim -o wide
    local eps
    eps=$(in_cluster kubectl get endpointslices -l kubernetes.io/service-name=tiny-chat \
        -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{" "}{end}')
    echo "attested endpoints: $eps"
    local first=${eps%% *}

    say "a3s-power-verify --url https://$first:11443 --policy policy.yaml --model tiny-qwen2"
    in_cluster "$target/debug/a3s-power-verify" --url "https://$first:11443" \
        --policy "$run/policy.yaml" --model tiny-qwen2 --model-sha256 "$digest" \
        | sed -n '/== fresh evidence/,$p'

    say "a streamed chat completion through an attested endpoint (random weights: gibberish)"
    in_cluster python3 - "$first" <<'PY'
import sys, openai
c = openai.OpenAI(base_url=f"http://{sys.argv[1]}:11434/v1", api_key="unused")
for ch in c.chat.completions.create(model="tiny-qwen2", stream=True, max_tokens=32, seed=7,
        messages=[{"role": "user", "content": "Tell me about confidential computing."}]):
    if ch.choices and ch.choices[0].delta.content:
        print(ch.choices[0].delta.content, end="", flush=True)
print()
PY

    # Forward the API server and the model endpoints to this machine.
    local pid targets
    pid=$(cat "$run/namespace.pid")
    targets=$(for ip in $eps; do printf '%s:11434,' "$ip"; done)
    setsid python3 "$here/netns-forward.py" "$api_port" "$pid" 127.0.0.1:443 \
        >"$run/forward-api.log" 2>&1 </dev/null &
    echo $! >"$run/forwarders.pid"
    setsid python3 "$here/netns-forward.py" "$chat_port" "$pid" "${targets%,}" \
        >"$run/forward-chat.log" 2>&1 </dev/null &
    echo $! >>"$run/forwarders.pid"
    sed "s#https://127.0.0.1:443#https://127.0.0.1:$api_port#" "$run/admin.kubeconfig" \
        >"$run/host.kubeconfig"

    say "running; stop with: make demo-down"
    cat <<EOF
  export KUBECONFIG=$run/host.kubeconfig
  export PATH=$E2E_BIN_DIR:\$PATH
  kubectl get pim,attpol,pods -o wide
  kubectl describe pim tiny-chat
  curl -s http://127.0.0.1:$chat_port/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"tiny-qwen2","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
  e2e/cluster-exec.sh $run          # a shell inside the cluster's network (pod IPs reachable)
Logs: $run/logs, $run/pods/<namespace>_<pod>_<uid>/<container>.log
EOF
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: e2e/demo.sh up|down" >&2; exit 2 ;;
esac
