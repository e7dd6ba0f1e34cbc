#!/usr/bin/env bash
# Installs the generated CRDs into a real API server and checks what it accepts and refuses:
# valid objects (and config/samples) pass a server-side dry run; each invalid object is refused
# with a message naming the field. Also `kubectl explain` and the printer columns.
#
#   e2e/with-cluster.sh -- crds/tests/apiserver.sh      (needs KUBECONFIG; run from the repo root)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fail=0
pass=0

kubectl apply --server-side -f "$repo/crds/generated/" >/dev/null
kubectl wait --for=condition=Established --timeout=30s \
    crd/inferencemodels.power.a3s.dev crd/attestationpolicies.power.a3s.dev >/dev/null

digest=2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
meas=$(printf 'ab%.0s' {1..48})

model() { # extra YAML lines appended under spec (indented by the caller)
    cat <<Y
apiVersion: power.a3s.dev/v1alpha1
kind: InferenceModel
metadata: {name: m, namespace: default}
spec:
  attestationPolicyRef: {name: p}
$1
Y
}
url_model="  model: {servedName: tiny, sha256: $digest, source: {url: 'http://10.245.0.1:8000/tiny.gguf'}}"
policy() {
    cat <<Y
apiVersion: power.a3s.dev/v1alpha1
kind: AttestationPolicy
metadata: {name: p, namespace: default}
spec:
$1
Y
}

accepted() { # NAME YAML
    local out
    if out=$(kubectl apply --dry-run=server -f - <<<"$2" 2>&1); then
        pass=$((pass + 1))
    else
        echo "FAIL $1: refused: $out"
        fail=$((fail + 1))
    fi
}
refused() { # NAME EXPECTED-SUBSTRING... -- YAML
    local name=$1 out
    shift
    local want=()
    while [[ $1 != -- ]]; do want+=("$1"); shift; done
    shift
    if out=$(kubectl apply --dry-run=server -f - <<<"$1" 2>&1); then
        echo "FAIL $name: accepted"
        fail=$((fail + 1))
        return
    fi
    for w in "${want[@]}"; do
        if [[ $out != *"$w"* ]]; then
            echo "FAIL $name: message lacks '$w': $out"
            fail=$((fail + 1))
            return
        fi
    done
    echo "ok   $name: ${out#*: }" | cut -c1-220
    pass=$((pass + 1))
}

# Valid objects.
accepted model-url "$(model "$url_model")"
accepted model-pvc "$(model "  model: {servedName: tiny, sha256: $digest, source: {pvc: {claimName: models, path: tiny/model.gguf}}}")"
accepted model-full "$(model "$url_model
  replicas: 0
  rollout: {maxSurge: 25%, maxUnavailable: 0}
  runtime: {contextSize: 2048, threads: 4, layerStreaming: true, privacy: {timingPadding: 250ms}, resources: {limits: {cpu: '2'}}}
  service: {port: 8080, type: NodePort}")"
accepted policy-sim "$(policy "  allowSimulated: true
  referenceValueSets: [{name: dev, simulated: {measurements: [$meas]}}]")"
accepted policy-snp-tdx "$(policy "  enforcement: Audit
  referenceValueSets:
  - snp: {measurements: [$meas], minimumTCB: {bootloader: 7, tee: 0, snp: 14, microcode: 72}, guestPolicy: {debug: false}, vmpl: 0}
  - tdx: {mrTd: [$meas], rtmr: {rtmr0: [$meas]}, tdAttributes: {debug: false}, acceptedTcbStatus: [UpToDate, SWHardeningNeeded]}
  freshness: {reattestInterval: 1m30s, maxEvidenceAge: 500ms}
  denyList: {modelSha256: [$digest]}")"
for f in "$repo"/config/samples/*.yaml; do
    [[ -e $f ]] && accepted "sample $(basename "$f")" "$(cat "$f")"
done

# Invalid InferenceModels.
refused two-sources spec.model.source "exactly one of url, pvc or huggingFace" -- \
    "$(model "  model: {servedName: t, sha256: $digest, source: {url: 'http://x/a.gguf', pvc: {claimName: c, path: a.gguf}}}")"
refused no-source spec.model.source "exactly one of" -- \
    "$(model "  model: {servedName: t, sha256: $digest, source: {}}")"
refused digest-uppercase spec.model.sha256 "64 lowercase hex" -- \
    "$(model "  model: {servedName: t, sha256: ${digest^^}, source: {url: 'http://x/a.gguf'}}")"
refused digest-short spec.model.sha256 "64 lowercase hex" -- \
    "$(model "  model: {servedName: t, sha256: abc123, source: {url: 'http://x/a.gguf'}}")"
refused negative-replicas spec.replicas "greater than or equal to 0" -- \
    "$(model "$url_model
  replicas: -1")"
refused url-scheme spec.model.source.url "http:// or https://" -- \
    "$(model "  model: {servedName: t, sha256: $digest, source: {url: 'ftp://x/a.gguf'}}")"
refused pvc-escape spec.model.source.pvc.path "relative path" -- \
    "$(model "  model: {servedName: t, sha256: $digest, source: {pvc: {claimName: c, path: ../etc/passwd}}}")"
refused rollout-stuck spec.rollout "cannot both be 0" -- \
    "$(model "$url_model
  rollout: {maxSurge: 0, maxUnavailable: 0%}")"
refused service-type spec.service.type "Unsupported value" -- \
    "$(model "$url_model
  service: {type: ExternalName}")"
refused served-name spec.model.servedName -- \
    "$(model "  model: {servedName: '-bad name', sha256: $digest, source: {url: 'http://x/a.gguf'}}")"
refused signature-length spec.model.signature.signature "128 hex" -- \
    "$(model "  model: {servedName: t, sha256: $digest, source: {url: 'http://x/a.gguf'}, signature: {publicKey: ${digest}, signature: abcd}}")"
refused missing-policy-ref spec.attestationPolicyRef -- \
    "apiVersion: power.a3s.dev/v1alpha1
kind: InferenceModel
metadata: {name: m, namespace: default}
spec:
$url_model"

# Invalid AttestationPolicies.
refused measurement-length "spec.referenceValueSets[0].snp.measurements[0]" "exactly 96 hex" -- \
    "$(policy "  referenceValueSets: [{snp: {measurements: [abcdef]}}]")"
refused tdx-mrtd-length "spec.referenceValueSets[0].tdx.mrTd[0]" "exactly 96 hex" -- \
    "$(policy "  referenceValueSets: [{tdx: {mrTd: [${digest}]}}]")"
refused empty-set "spec.referenceValueSets[0]" "needs snp, tdx or simulated" -- \
    "$(policy "  referenceValueSets: [{name: empty}]")"
refused no-measurements "spec.referenceValueSets[0].snp.measurements" -- \
    "$(policy "  referenceValueSets: [{snp: {measurements: []}}]")"
refused unknown-tee 'unknown field "spec.referenceValueSets[0].sev"' -- \
    "$(policy "  referenceValueSets: [{sev: {measurements: [$meas]}}]")"
refused audit-empty spec.referenceValueSets "Audit mode needs at least one" -- \
    "$(policy "  enforcement: Audit")"
refused simulated-not-allowed spec.allowSimulated "must be true" -- \
    "$(policy "  referenceValueSets: [{simulated: {measurements: [$meas]}}]")"
refused bad-duration spec.freshness.reattestInterval "must be a duration" -- \
    "$(policy "  freshness: {reattestInterval: five minutes}")"
refused vmpl spec.referenceValueSets[0].snp.vmpl "less than or equal to 3" -- \
    "$(policy "  referenceValueSets: [{snp: {measurements: [$meas], vmpl: 4}}]")"
refused enforcement spec.enforcement "Unsupported value" -- \
    "$(policy "  enforcement: Warn")"
refused tcb-status "spec.referenceValueSets[0].tdx.acceptedTcbStatus[0]" "Unsupported value" -- \
    "$(policy "  referenceValueSets: [{tdx: {mrTd: [$meas], acceptedTcbStatus: [Fine]}}]")"
refused denied-digest "spec.denyList.modelSha256[0]" "64 lowercase hex" -- \
    "$(policy "  denyList: {modelSha256: [xyz]}")"

# kubectl explain reads the doc comments; printer columns are the documented ones.
explain=$(kubectl explain inferencemodel.spec.model.sha256)
[[ $explain == *"SHA-256 of the plaintext GGUF file"* ]] && pass=$((pass + 1)) || { echo "FAIL explain: $explain"; fail=$((fail + 1)); }
kubectl apply -f - <<<"$(model "$url_model")" >/dev/null
header=$(kubectl get pim -o wide | head -1 | tr -s ' ')
if [[ $header == "NAME MODEL READY REASON REPLICAS ATTESTED AGE DIGEST TEE POLICY URL" ]]; then
    pass=$((pass + 1))
else
    echo "FAIL columns: $header"; fail=$((fail + 1))
fi
kubectl get a3s >/dev/null && pass=$((pass + 1)) || { echo "FAIL category a3s"; fail=$((fail + 1)); }
kubectl delete pim m >/dev/null

echo "apiserver: $pass passed, $fail failed"
((fail == 0))
