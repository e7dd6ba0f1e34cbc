#!/usr/bin/env bash
# The e2e control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
# process kubelet, as processes of a private network namespace (see e2e/with-cluster.sh, which
# creates the namespace and calls this).
#
#   cluster.sh up   RUN_DIR [--node NAME=TEE]... [--image IMAGE=PATH]...
#   cluster.sh down RUN_DIR
#   cluster.sh dump RUN_DIR      # objects and log tails, for a failed run
#
# Needs E2E_BIN_DIR (from e2e/build-k8s-bins.sh) and E2E_KUBELET (the power-e2e-kubelet binary).
# Network layout inside the namespace (nothing is reachable outside it):
#   10.245.0.1    gateway of every pod ("the host"), API server advertise address
#   10.245.0.1x   node InternalIPs (added by the kubelet)
#   10.96.0.1     ClusterIP of the `kubernetes` Service: the API server listens on :443 on all
#                 addresses, so in-cluster clients (KUBERNETES_SERVICE_HOST) reach it directly
#   10.244.N.0/24 pod IPs of node N, each pod in its own network namespace behind a veth pair
set -euo pipefail

cmd=${1:?usage: cluster.sh up|down|dump RUN_DIR ...}
run=${2:?usage: cluster.sh up|down|dump RUN_DIR ...}
shift 2

pids=$run/pids
logs=$run/logs
pki=$run/pki
export KUBECONFIG=$run/admin.kubeconfig

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

start() { # NAME CMD...: runs CMD in the background with its log and pid file
    local name=$1
    shift
    "$@" >"$logs/$name.log" 2>&1 &
    echo $! >"$pids/$name.pid"
}

alive() { [[ -f $pids/$1.pid ]] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null; }

wait_for() { # WHAT TIMEOUT_S COMPONENT CMD...: polls CMD until it succeeds
    local what=$1 timeout=$2 comp=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $comp ]] && ! alive "$comp"; then
            tail -n 30 "$logs/$comp.log" >&2 || true
            die "$comp exited while waiting for $what"
        fi
        ((SECONDS < deadline)) || { [[ -z $comp ]] || tail -n 30 "$logs/$comp.log" >&2; die "timed out after ${timeout}s waiting for $what"; }
        sleep 0.2
    done
}

gen_pki() {
    mkdir -p "$pki"
    cd "$pki"
    local ossl=(openssl)
    "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    "${ossl[@]}" req -x509 -new -key ca.key -subj "/CN=a3s-power-e2e-ca" -days 2 -out ca.crt 2>/dev/null
    cert() { # NAME SUBJECT [SAN]
        local name=$1 subj=$2 san=${3:-}
        "${ossl[@]}" ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
        "${ossl[@]}" req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
        {
            echo "basicConstraints=CA:FALSE"
            echo "keyUsage=critical,digitalSignature,keyEncipherment"
            if [[ -n $san ]]; then
                echo "extendedKeyUsage=serverAuth"
                echo "subjectAltName=$san"
            else
                echo "extendedKeyUsage=clientAuth"
            fi
        } >"$name.ext"
        "${ossl[@]}" x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    }
    cert apiserver "/CN=kube-apiserver" \
        "IP:127.0.0.1,IP:10.96.0.1,IP:10.245.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert admin "/O=system:masters/CN=e2e-admin"
    cert controller-manager "/CN=system:kube-controller-manager"
    cert scheduler "/CN=system:kube-scheduler"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    "${ossl[@]}" genrsa -out sa.key 2048 2>/dev/null
    "${ossl[@]}" rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    cd - >/dev/null
}

kubeconfig() { # FILE USER
    local file=$1 user=$2
    local k=("$E2E_BIN_DIR/kubectl" --kubeconfig "$file")
    "${k[@]}" config set-cluster e2e --server=https://127.0.0.1:443 --certificate-authority="$pki/ca.crt" --embed-certs >/dev/null
    "${k[@]}" config set-credentials "$user" --client-certificate="$pki/$user.crt" --client-key="$pki/$user.key" --embed-certs >/dev/null
    "${k[@]}" config set-context e2e --cluster=e2e --user="$user" >/dev/null
    "${k[@]}" config use-context e2e >/dev/null
}

check_private_netns() {
    # Refuse to run anywhere traffic could leave: a private namespace has no route off the box.
    if [[ -n $(ip route show default 2>/dev/null) ]] || ip -o link show | grep -qvE ': (lo|vh[0-9a-f]+)[:@]'; then
        die "not inside a private network namespace (found a default route or a non-loopback link); use e2e/with-cluster.sh"
    fi
}

up() {
    local kubelet_args=()
    while (($#)); do
        case $1 in
            --node | --image) kubelet_args+=("$1" "$2"); shift 2 ;;
            *) die "unknown argument $1" ;;
        esac
    done
    [[ -x ${E2E_BIN_DIR:-}/kube-apiserver ]] || die "E2E_BIN_DIR must hold the control-plane binaries (e2e/build-k8s-bins.sh)"
    [[ -x ${E2E_KUBELET:-} ]] || die "E2E_KUBELET must be the power-e2e-kubelet binary"
    check_private_netns
    mkdir -p "$pids" "$logs" "$run/pods"
    ip link set lo up
    ip addr add 10.245.0.1/32 dev lo
    ip addr add 10.96.0.1/32 dev lo
    sysctl -qw net.ipv4.ip_forward=1
    local t0=$SECONDS

    gen_pki
    kubeconfig "$run/admin.kubeconfig" admin
    kubeconfig "$run/controller-manager.kubeconfig" controller-manager
    kubeconfig "$run/scheduler.kubeconfig" scheduler
    local b=$E2E_BIN_DIR

    start etcd "$b/etcd" --name=e2e --data-dir="$run/etcd" \
        --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
        --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
        --initial-cluster=e2e=http://127.0.0.1:2380 --unsafe-no-fsync --log-level=warn
    wait_for "etcd /health" 30 etcd curl -sf http://127.0.0.1:2379/health

    start kube-apiserver "$b/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:2379 \
        --bind-address=0.0.0.0 --secure-port=443 --advertise-address=10.245.0.1 \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction \
        --allow-privileged=true --profiling=false
    wait_for "kube-apiserver /readyz" 90 kube-apiserver "$b/kubectl" get --raw /readyz

    start kube-controller-manager "$b/kube-controller-manager" \
        --kubeconfig="$run/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$run/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$run/controller-manager.kubeconfig" \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
        --bind-address=127.0.0.1 --secure-port=10257 \
        --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
        --leader-elect=false --controllers='*' --profiling=false
    start kube-scheduler "$b/kube-scheduler" \
        --kubeconfig="$run/scheduler.kubeconfig" \
        --authentication-kubeconfig="$run/scheduler.kubeconfig" \
        --authorization-kubeconfig="$run/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10259 \
        --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
        --leader-elect=false --profiling=false
    wait_for "kube-controller-manager /healthz" 60 kube-controller-manager curl -skf https://127.0.0.1:10257/healthz
    wait_for "kube-scheduler /healthz" 60 kube-scheduler curl -skf https://127.0.0.1:10259/healthz

    start kubelet "$E2E_KUBELET" --run-dir "$run" "${kubelet_args[@]}"
    wait_for "nodes to register" 30 kubelet sh -c "[ \"\$('$b/kubectl' get nodes --no-headers 2>/dev/null | wc -l)\" -gt 0 ]"
    wait_for "nodes Ready" 30 kubelet "$b/kubectl" wait --for=condition=Ready node --all --timeout=1s
    # The controller-manager works once it has made the default ServiceAccount and root CA.
    wait_for "serviceaccount default/default" 60 kube-controller-manager "$b/kubectl" -n default get serviceaccount default
    wait_for "configmap default/kube-root-ca.crt" 60 kube-controller-manager "$b/kubectl" -n default get configmap kube-root-ca.crt
    cat >"$run/env" <<EOF
export KUBECONFIG=$run/admin.kubeconfig
export E2E_RUN_DIR=$run
export E2E_BIN_DIR=$E2E_BIN_DIR
export PATH=$E2E_BIN_DIR:\$PATH
EOF
    log "up in $((SECONDS - t0))s: $("$b/kubectl" get nodes --no-headers -L power.a3s.dev/tee | awk '{printf "%s(%s) ", $1, $NF}')"
}

down() {
    [[ -d $pids ]] || return 0
    local name pid
    # The kubelet first, so that it stops the pods' processes; then the control plane.
    for name in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
        [[ -f $pids/$name.pid ]] || continue
        pid=$(cat "$pids/$name.pid")
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pids/$name.pid"
    done
}

dump() {
    local b=${E2E_BIN_DIR:-}
    echo "===== cluster state ($run)"
    if [[ -x $b/kubectl ]]; then
        "$b/kubectl" get nodes,pods,services,endpointslices,deployments,replicasets -A -o wide 2>&1 | head -n 200 || true
        echo "----- events"
        "$b/kubectl" get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 60 || true
    fi
    local f
    for f in "$logs"/*.log; do
        [[ -f $f ]] || continue
        echo "----- $(basename "$f") (last 40 lines)"
        tail -n 40 "$f"
    done
    for f in "$run"/pods/*/*.log; do
        [[ -f $f ]] || continue
        echo "----- container log ${f#"$run"/pods/} (last 20 lines)"
        tail -n 20 "$f"
    done
}

case $cmd in
    up) up "$@" ;;
    down) down ;;
    dump) dump ;;
    *) die "unknown command $cmd" ;;
esac
