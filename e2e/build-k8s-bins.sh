#!/usr/bin/env bash
# Builds the e2e control-plane binaries from the Go module proxy, or reuses them from the cache.
#
#   kube-apiserver kube-controller-manager kube-scheduler kubectl etcd   (module e2e/k8s-bins)
#   helm                                                                   (module e2e/helm-bin)
#
# Cache: ${A3S_POWER_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/a3s-power/k8s-<version>}/bin.
# The cache is keyed by the Kubernetes version and stamped with a digest of the helper modules,
# the build recipe and the Go version, so a bump rebuilds. Prints the bin directory on stdout; the
# build log goes to stderr. Safe to run concurrently (flock).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
k8s_mod=$here/k8s-bins
helm_mod=$here/helm-bin

# The required version of module $1 in go.mod $2 (single-line or block form; not replace lines).
required() { awk -v m="$1" '!/=>/ { if ($1 == "require") { $1 = "" ; $0 = $0 } if ($1 == m) print $2 }' "$2"; }
k8s_version=$(required k8s.io/kubernetes "$k8s_mod/go.mod")
helm_version=$(required helm.sh/helm/v3 "$helm_mod/go.mod")
[[ -n $k8s_version && -n $helm_version ]] || { echo "cannot read versions from go.mod files" >&2; exit 1; }

cache=${A3S_POWER_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/a3s-power/k8s-${k8s_version#v}}
bin=$cache/bin
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)

command -v go >/dev/null || { echo "go is required to build the e2e binaries (none cached in $bin)" >&2; exit 1; }
# Bump when the build flags below change.
recipe=1
stamp=$(cat "$k8s_mod/go.mod" "$k8s_mod/go.sum" "$helm_mod/go.mod" "$helm_mod/go.sum" \
    <(go version) <(echo "$recipe") | sha256sum | cut -c1-16)

cached() {
    [[ -f $cache/stamp && $(cat "$cache/stamp") == "$stamp" ]] || return 1
    local b
    for b in "${bins[@]}"; do [[ -x $bin/$b ]] || return 1; done
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if cached; then
    echo "e2e binaries: reusing $bin (k8s $k8s_version, helm $helm_version)" >&2
    echo "$bin"
    exit 0
fi

echo "e2e binaries: building k8s $k8s_version + etcd + helm $helm_version into $bin" >&2
tmp=$cache/bin.tmp
rm -rf "$tmp" && mkdir -p "$tmp"
start=$(date +%s)

# Same variables as hack/lib/version.sh: the API server reports this in /version (helm reads it)
# and the compatibility-version machinery compares it with the emulation version.
minor=${k8s_version#v1.}
minor=${minor%%.*}
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date_utc"
done

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
(
    cd "$k8s_mod"
    nice -n "${A3S_POWER_BUILD_NICE:-15}" go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    nice -n "${A3S_POWER_BUILD_NICE:-15}" go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" \
        go.etcd.io/etcd/server/v3
) >&2
echo "e2e binaries: k8s + etcd built in $(($(date +%s) - start))s" >&2

helm_minor=${k8s_version#v1.}
helm_minor=${helm_minor%%.*}
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_minor"
done
(
    cd "$helm_mod"
    nice -n "${A3S_POWER_BUILD_NICE:-15}" go build -trimpath -ldflags "$helm_ldflags" -o "$tmp/helm" \
        helm.sh/helm/v3/cmd/helm
) >&2

for b in "${bins[@]}"; do [[ -x $tmp/$b ]] || { echo "build produced no $b" >&2; exit 1; }; done
"$tmp/kube-apiserver" --version | grep -qx "Kubernetes $k8s_version" \
    || { echo "kube-apiserver is not stamped with $k8s_version" >&2; exit 1; }
rm -rf "$bin" && mv "$tmp" "$bin"
echo "$stamp" >"$cache/stamp"
echo "e2e binaries: built in $(($(date +%s) - start))s total" >&2
echo "$bin"
