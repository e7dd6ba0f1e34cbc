"""The whole story on a real control plane (issue #8): the operator installed by Helm, runtime
pods run by the process kubelet with simulated attestation, models from a local HTTP server.
Each scenario asserts on API objects, Events and real HTTP traffic."""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.request

import openai
import pytest

from conftest import (ATTESTED, HTTP_PORT, MEASUREMENT, MODEL_HOST, MODEL_PORT, OPERATOR_NS,
                      OTHER_MEASUREMENT, RA_TLS_PORT, REPO, VERIFY_BIN, condition, events,
                      kubectl, live_pods, model_yaml, operator_pod, policy_yaml, pods,
                      ready_endpoints, wait_for, wait_serving)

SAMPLE_DIGEST = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"


def attested_digest(ip: str, model: str) -> str:
    """The model digest a pod's fresh evidence binds (`GET /v1/attestation`)."""
    url = (f"http://{ip}:{HTTP_PORT}/v1/attestation?nonce={secrets.token_hex(32)}"
           f"&model={model}")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())["modelSha256"]


def chat(ip: str, model: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=f"http://{ip}:{HTTP_PORT}/v1", api_key="unused",
                           timeout=60, max_retries=0)
    msgs = [{"role": "user", "content": "Say hello."}]
    if not stream:
        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, seed=1)
        assert r.choices[0].finish_reason in ("stop", "length")
        assert r.usage.completion_tokens > 0
        return r.choices[0].message.content
    text, finish, chunks = "", None, 0
    for c in client.chat.completions.create(model=model, messages=msgs, max_tokens=8, seed=1,
                                            stream=True):
        chunks += 1
        if c.choices and c.choices[0].delta.content:
            text += c.choices[0].delta.content
        if c.choices and c.choices[0].finish_reason:
            finish = c.choices[0].finish_reason
    assert chunks >= 2 and finish in ("stop", "length"), (chunks, finish)
    return text


def restart_counts(ns: str, model: str) -> dict[str, int]:
    return {p["metadata"]["uid"]: sum(c.get("restartCount", 0)
                                      for c in p["status"].get("containerStatuses") or [])
            for p in live_pods(ns, model)}


def test_01_happy_path(ns, model_files, tmp_path):
    """config/samples applied with kubectl → attested Ready, both pods behind the Service,
    chat over the endpoints with the openai client, printer columns, a3s-power-verify."""
    policy = (REPO / "config/samples/attestationpolicy-simulated.yaml").read_text()
    policy = re.sub(r"(ab){48}", MEASUREMENT, policy)
    model = (REPO / "config/samples/inferencemodel-url.yaml").read_text()
    assert f"{MODEL_HOST}:{MODEL_PORT}/{model_files.v1}" in model
    model = model.replace(SAMPLE_DIGEST, model_files.sha(model_files.v1))
    (tmp_path / "policy.yaml").write_text(policy)
    kubectl.apply(policy, ns)
    kubectl.apply(model, ns)
    t0 = time.monotonic()
    im = wait_serving(ns, "tiny-chat", 2)
    print(f"attested Ready with 2 replicas in {time.monotonic() - t0:.1f}s")
    st = im["status"]
    assert st["replicas"] == 2 and st["attestedReplicas"] == 2
    assert condition(im, "ModelVerified")["status"] == "True"
    assert condition(im, "Attested")["status"] == "True"

    ips = ready_endpoints(ns, "tiny-chat")
    assert ips == sorted(p["status"]["podIP"] for p in live_pods(ns, "tiny-chat"))
    for p in live_pods(ns, "tiny-chat"):
        assert condition(p, ATTESTED)["status"] == "True"
    for ip in ips:
        assert chat(ip, "tiny-qwen2", stream=False)
        assert chat(ip, "tiny-qwen2", stream=True)

    header = kubectl("get", "pim", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "READY", "REASON", "REPLICAS", "ATTESTED", "AGE"]
    wide = kubectl("get", "pim", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "MODEL", "READY", "REASON", "REPLICAS", "ATTESTED", "AGE",
                               "DIGEST", "TEE", "POLICY", "URL"]
    row = wide[1].split()
    assert row[:6] == ["tiny-chat", "tiny-qwen2", "True", "Serving", "2", "2"], row
    assert row[7:10] == [model_files.sha(model_files.v1), "simulated", "simulated"], row

    # The operator's metrics: both verifications counted, latency observed.
    op_ip = operator_pod()["status"]["podIP"]
    with urllib.request.urlopen(f"http://{op_ip}:8080/metrics", timeout=10) as r:
        metrics = r.read().decode()
    verified = sum(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("a3s_power_attestations_total{")
                   and 'result="verified"' in line and 'tee="simulated"' in line)
    assert verified >= 2, metrics
    assert "a3s_power_attestation_duration_seconds_bucket" in metrics

    # The user's verifier with the very policy file applied above.
    verify = [str(VERIFY_BIN), "--url", f"https://{ips[0]}:{RA_TLS_PORT}", "--policy",
              str(tmp_path / "policy.yaml"), "--model", "tiny-qwen2", "--model-sha256"]
    r = subprocess.run(verify + [model_files.sha(model_files.v1)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "verdict: PASSED" in r.stdout, r.stdout[-400:]
    # ...and it does refuse: another digest than the one served.
    r = subprocess.run(verify + [model_files.sha(model_files.v2)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ModelDigestMismatch" in r.stdout, r.stdout


def test_02_wrong_measurement(ns, model_files):
    """A policy pinning another measurement: pods run but never join the Service."""
    kubectl.apply(policy_yaml("pinned", measurement=OTHER_MEASUREMENT), ns)
    kubectl.apply(model_yaml("chat", "pinned", model_files.v1, model_files.sha(model_files.v1)),
                  ns)

    def refused():
        im = kubectl.maybe("pim", "chat", "-n", ns)
        ps = live_pods(ns, "chat")
        if (condition(im, "Ready").get("reason") == "MeasurementMismatch" and len(ps) == 2
                and all(condition(p, ATTESTED).get("status") == "False" for p in ps)):
            return im
        return None
    im = wait_for(refused, 240, "Ready=False/MeasurementMismatch on both pods")
    assert condition(im, "Ready")["status"] == "False"
    ps = live_pods(ns, "chat")
    for p in ps:
        assert p["status"]["phase"] == "Running"
        assert condition(p, "ContainersReady")["status"] == "True"
        assert condition(p, "Ready")["status"] == "False"
    # Never in the EndpointSlice, watched for a while.
    end = time.monotonic() + 10
    while time.monotonic() < end:
        assert ready_endpoints(ns, "chat") == []
        time.sleep(0.5)
    warnings = [e for e in events(ns)
                if e["type"] == "Warning" and e["reason"] == "MeasurementMismatch"]
    for p in ps:
        name = p["metadata"]["name"]
        ev = [e for e in warnings if name in e["message"]]
        assert ev, f"no MeasurementMismatch Warning naming {name}: {warnings}"
        assert OTHER_MEASUREMENT[:16] in ev[0]["message"] and MEASUREMENT[:16] in ev[0]["message"], ev


def test_03_tampered_model(ns, model_files):
    """The served file differs from spec.model.sha256: ModelVerified=False, no endpoints, the
    runtime never starts on that file."""
    kubectl.apply(policy_yaml("sim"), ns)
    kubectl.apply(model_yaml("chat", "sim", model_files.tampered,
                             model_files.sha(model_files.v1)), ns)
    im = wait_for(lambda: (lambda im: im if condition(im, "ModelVerified").get("status") == "False"
                           else None)(kubectl.maybe("pim", "chat", "-n", ns)),
                  180, "ModelVerified=False")
    assert condition(im, "Ready")["status"] == "False"
    mv = condition(im, "ModelVerified")
    print(f"ModelVerified: {mv.get('reason')}: {mv.get('message')}")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        assert ready_endpoints(ns, "chat") == []
        for p in pods(ns, "chat"):
            for c in p["status"].get("containerStatuses") or []:
                # The runtime container never ran: no token can come from that file.
                assert "running" not in (c.get("state") or {}), c
                assert "terminated" not in (c.get("lastState") or {}), c
        time.sleep(1)
    # The fetch refused the bytes: its log says why.
    assert any(e["reason"] for e in events(ns))


BAD_INPUT = [
    ("two sources", "spec.model.source",
     "model: {servedName: t, sha256: $D, source: {url: 'http://x/a.gguf', pvc: {claimName: c, path: a.gguf}}}"),
    ("bad digest", "spec.model.sha256",
     "model: {servedName: t, sha256: ABC, source: {url: 'http://x/a.gguf'}}"),
    ("negative replicas", "spec.replicas",
     "model: {servedName: t, sha256: $D, source: {url: 'http://x/a.gguf'}}\n  replicas: -2"),
    ("url scheme", "spec.model.source.url",
     "model: {servedName: t, sha256: $D, source: {url: 'file:///etc/passwd'}}"),
    ("pvc path escape", "spec.model.source.pvc.path",
     "model: {servedName: t, sha256: $D, source: {pvc: {claimName: c, path: ../x.gguf}}}"),
]
BAD_POLICY = [
    ("measurement length", "spec.referenceValueSets[0].snp.measurements[0]",
     "referenceValueSets: [{snp: {measurements: [abcdef]}}]"),
    ("unknown TEE type", "spec.referenceValueSets[0].sgx",
     "referenceValueSets: [{sgx: {measurements: [$M]}}]"),
    ("bad duration", "spec.freshness.reattestInterval",
     "freshness: {reattestInterval: soon}"),
    ("audit without reference values", "spec.referenceValueSets",
     "enforcement: Audit"),
    ("simulated not allowed", "spec.allowSimulated",
     "referenceValueSets: [{simulated: {measurements: [$M]}}]"),
]


def test_04_bad_input(ns):
    """Invalid CRs are refused by the API server with a message naming the field; nothing is
    created."""
    d = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    cases = [(n, f, "kind: InferenceModel\nmetadata: {name: bad}\nspec:\n  "
              "attestationPolicyRef: {name: p}\n  " + y.replace("$D", d))
             for n, f, y in BAD_INPUT]
    cases += [(n, f, "kind: AttestationPolicy\nmetadata: {name: bad}\nspec:\n  "
               + y.replace("$M", "ab" * 48)) for n, f, y in BAD_POLICY]
    assert len(cases) >= 8
    for name, field, body in cases:
        r = kubectl("apply", "-n", ns, "-f", "-", check=False,
                    input="apiVersion: power.a3s.dev/v1alpha1\n" + body)
        assert r.returncode != 0, f"{name}: accepted"
        assert field in r.stderr, f"{name}: message does not name {field}: {r.stderr}"
        print(f"refused {name}: {r.stderr.strip()[:200]}")
    assert kubectl("get", "pim,attpol", "-n", ns, "-o", "name").stdout.strip() == ""


def test_05_promotion(ns, model_files):
    """A GitOps change of digest and source rolls the pods with never zero attested
    endpoints; every endpoint then serves the new digest and the old pods are gone."""
    kubectl.apply(policy_yaml("sim"), ns)
    v1, v2 = model_files.sha(model_files.v1), model_files.sha(model_files.v2)
    kubectl.apply(model_yaml("chat", "sim", model_files.v1, v1), ns)
    wait_serving(ns, "chat", 2)
    old = {p["metadata"]["name"] for p in live_pods(ns, "chat")}

    samples: list[int] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            samples.append(len(ready_endpoints(ns, "chat")))
            stop.wait(0.2)
    t = threading.Thread(target=poll)
    t.start()
    t0 = time.monotonic()
    try:
        kubectl.apply(model_yaml("chat", "sim", model_files.v2, v2), ns)

        def done():
            eps = ready_endpoints(ns, "chat")
            names = {p["metadata"]["name"] for p in pods(ns, "chat")}
            return (len(eps) == 2 and not (names & old)
                    and all(attested_digest(ip, "chat") == v2 for ip in eps))
        wait_for(done, 300, "every endpoint serving the new digest, old pods gone", 1)
    finally:
        stop.set()
        t.join()
    print(f"promotion in {time.monotonic() - t0:.1f}s; {len(samples)} polls, "
          f"min attested endpoints {min(samples)}")
    assert samples and min(samples) >= 1, samples
    im = wait_serving(ns, "chat", 2)
    assert im["status"]["model"]["sha256"] == v2
    for ip in ready_endpoints(ns, "chat"):
        assert chat(ip, "chat", stream=False) is not None


def test_06_operator_crash(ns, model_files):
    """Kill the operator mid-rollout: restarted, takes the Lease, converges; no pod is admitted
    without a verification of its own."""
    kubectl.apply(policy_yaml("sim"), ns)
    v1, v2 = model_files.sha(model_files.v1), model_files.sha(model_files.v2)
    kubectl.apply(model_yaml("chat", "sim", model_files.v1, v1), ns)
    wait_serving(ns, "chat", 2)
    op = operator_pod()
    restarts = op["status"]["containerStatuses"][0].get("restartCount", 0)

    kubectl.apply(model_yaml("chat", "sim", model_files.v2, v2), ns)
    # Mid-rollout: a surge pod exists.
    wait_for(lambda: len(pods(ns, "chat")) > 2, 60, "the rollout to start", 0.2)
    r = subprocess.run(["pkill", "-KILL", "-f", "^[^ ]*a3s-power-operator "], check=False)
    assert r.returncode == 0, "no operator process to kill"
    wait_for(lambda: (operator_pod() or {}).get("status", {}).get("containerStatuses", [{}])[0]
             .get("restartCount", 0) > restarts, 60, "the operator container to restart")
    wait_for(lambda: condition(operator_pod(), "Ready").get("status") == "True", 90,
             "the restarted operator to be Ready")
    lease = kubectl.json("lease", "a3s-power-operator", "-n", OPERATOR_NS)
    assert lease["spec"]["holderIdentity"] == operator_pod()["metadata"]["name"]

    def converged():
        eps = ready_endpoints(ns, "chat")
        return (len(eps) == 2 and len(pods(ns, "chat")) == 2
                and all(attested_digest(ip, "chat") == v2 for ip in eps))
    wait_for(converged, 300, "convergence on the new digest after the crash", 1)
    wait_serving(ns, "chat", 2)
    # Every admitted pod was verified: an AttestationSucceeded Event names it.
    evs = events(ns)
    for p in live_pods(ns, "chat"):
        name = p["metadata"]["name"]
        assert condition(p, ATTESTED)["status"] == "True"
        assert any(e["reason"] == "AttestationSucceeded" and name in e["message"]
                   for e in evs), f"{name} admitted without an AttestationSucceeded Event"


def test_07_reattestation(ns, model_files):
    """Policy edited so the running measurement is no longer allowed: the pods leave the
    EndpointSlice within reattestInterval + 5 s without restarting; restored, they return."""
    interval = 30
    kubectl.apply(policy_yaml("sim", interval=f"{interval}s"), ns)
    kubectl.apply(model_yaml("chat", "sim", model_files.v1, model_files.sha(model_files.v1)), ns)
    wait_serving(ns, "chat", 2)
    before = restart_counts(ns, "chat")

    t0 = time.monotonic()
    kubectl.apply(policy_yaml("sim", measurement=OTHER_MEASUREMENT, interval=f"{interval}s"), ns)
    wait_for(lambda: ready_endpoints(ns, "chat") == [], interval + 5, "pods out of the Service",
             0.2)
    out = time.monotonic() - t0
    assert restart_counts(ns, "chat") == before, "pods restarted"

    t1 = time.monotonic()
    kubectl.apply(policy_yaml("sim", interval=f"{interval}s"), ns)
    wait_for(lambda: len(ready_endpoints(ns, "chat")) == 2, interval + 5,
             "pods back in the Service", 0.2)
    back = time.monotonic() - t1
    assert restart_counts(ns, "chat") == before, "pods restarted"
    print(f"out of the Service after {out:.1f}s, back after {back:.1f}s "
          f"(reattestInterval {interval}s)")


def test_08_audit_mode(ns, model_files):
    """Wrong measurement under enforcement: Audit: admitted, with Warning Events."""
    kubectl.apply(policy_yaml("audit", measurement=OTHER_MEASUREMENT, enforcement="Audit"), ns)
    kubectl.apply(model_yaml("chat", "audit", model_files.v1, model_files.sha(model_files.v1)),
                  ns)
    wait_for(lambda: len(ready_endpoints(ns, "chat")) == 2, 240, "both pods admitted")
    warnings = [e for e in events(ns)
                if e["type"] == "Warning" and e["reason"] == "MeasurementMismatch"]
    for p in live_pods(ns, "chat"):
        name = p["metadata"]["name"]
        assert any(name in e["message"] and "Audit" in e["message"] for e in warnings), \
            f"no audit Warning for {name}: {warnings}"
    for ip in ready_endpoints(ns, "chat"):
        assert chat(ip, "chat", stream=False) is not None


def test_09_deletion(ns, model_files):
    """Deleting the InferenceModel garbage-collects its children; the policy unbinds it."""
    kubectl.apply(policy_yaml("sim"), ns)
    kubectl.apply(model_yaml("chat", "sim", model_files.v1, model_files.sha(model_files.v1),
                             replicas=1), ns)
    wait_serving(ns, "chat", 1)
    def bound():
        return ((kubectl.maybe("attpol", "sim", "-n", ns) or {}).get("status") or {}).get(
            "boundModels", 0)
    wait_for(lambda: bound() == 1, 60, "the policy to count the model in boundModels")
    kubectl("delete", "pim", "chat", "-n", ns)

    def gone():
        left = [k for k in ("deployment", "service", "configmap")
                if kubectl.maybe(k, "chat", "-n", ns) is not None]
        return not left and not pods(ns, "chat")
    wait_for(gone, 120, "Deployment, Service, ConfigMap and pods to be collected")
    wait_for(lambda: bound() == 0, 60, "boundModels to drop to 0")


def test_10_scale(ns, model_files):
    """`kubectl scale pim/<name>` works through the scale subresource."""
    kubectl.apply(policy_yaml("sim"), ns)
    kubectl.apply(model_yaml("chat", "sim", model_files.v1, model_files.sha(model_files.v1)), ns)
    wait_serving(ns, "chat", 2)
    kubectl("scale", "pim/chat", "--replicas=3", "-n", ns)
    assert kubectl.json("pim", "chat", "-n", ns)["spec"]["replicas"] == 3
    im = wait_serving(ns, "chat", 3)
    assert im["status"]["replicas"] == 3
    scale = json.loads(kubectl("get", "--raw",
                               f"/apis/power.a3s.dev/v1alpha1/namespaces/{ns}/inferencemodels/"
                               "chat/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "power.a3s.dev/model=chat" in scale["status"]["selector"]


def test_11_encrypted_model(ns, model_files):
    """An encrypted model with `encryption.keyRef`: only that key of that Secret is mounted, the
    pods decrypt in memory, attest with the plaintext digest and serve."""
    kubectl("create", "secret", "generic", "model-key", "-n", ns,
            f"--from-literal=key={model_files.key}", "--from-literal=unrelated=do-not-mount")
    kubectl.apply(policy_yaml("sim"), ns)
    plaintext = model_files.sha(model_files.v1)
    model = model_yaml("chat", "sim", model_files.encrypted, plaintext, replicas=1)
    model = model.replace("    sha256:", "    encryption: {keyRef: {name: model-key, key: key}}\n"
                          "    sha256:")
    kubectl.apply(model, ns)
    wait_serving(ns, "chat", 1)
    ip = ready_endpoints(ns, "chat")[0]
    assert attested_digest(ip, "chat") == plaintext
    assert chat(ip, "chat", stream=True) is not None
    pod = live_pods(ns, "chat")[0]
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["model-key"]["secret"]["items"] == [
        {"key": "key", "path": "model.key", "mode": 0o400}]
    for c in pod["spec"].get("initContainers") or []:
        assert all(m["name"] != "model-key" for m in c.get("volumeMounts") or []), c


def test_12_restarted_runtime(ns, model_files):
    """A runtime process dies and the kubelet restarts it: the pod leaves the Service at once
    (its gate condition goes False) and rejoins only after the new process has been attested,
    long before the policy's reattestInterval."""
    kubectl.apply(policy_yaml("sim", interval="1h"), ns)
    kubectl.apply(model_yaml("chat", "sim", model_files.v1, model_files.sha(model_files.v1)), ns)
    wait_serving(ns, "chat", 2)
    victim = live_pods(ns, "chat")[0]
    name, ip = victim["metadata"]["name"], victim["status"]["podIP"]

    def runtime(pod: dict) -> dict:
        return next(c for c in pod["status"]["containerStatuses"] if c["name"] == "runtime")

    def current() -> dict:
        return kubectl.json("pod", name, "-n", ns)

    def transition(pod: dict) -> float:
        # RFC 3339, whole seconds.
        t = condition(pod, ATTESTED)["lastTransitionTime"].replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(t).timestamp()

    before = runtime(victim)
    assert condition(victim, ATTESTED)["status"] == "True"
    admitted_at = transition(victim)
    # At least a second later, so that a fresh verdict's timestamp is told apart from this one.
    time.sleep(max(0.0, admitted_at + 1.5 - time.time()))
    # The process kubelet's container ID is its process group: the runtime and its wrappers.
    pgid = int(before["containerID"].removeprefix("process://"))
    os.killpg(pgid, signal.SIGKILL)

    wait_for(lambda: ip not in ready_endpoints(ns, "chat"), 30, "the pod out of the Service",
             0.2)
    wait_for(lambda: condition(current(), ATTESTED).get("reason") == "ContainersNotReady", 30,
             "the gate condition withdrawn", 0.2)
    assert condition(current(), ATTESTED)["status"] == "False"
    wait_for(lambda: ip in ready_endpoints(ns, "chat"), 180, "the pod back in the Service", 0.5)
    pod = current()
    after = runtime(pod)
    assert after["restartCount"] > before.get("restartCount", 0), "the container was restarted"
    assert after["containerID"] != before["containerID"]
    cond = condition(pod, ATTESTED)
    assert cond["status"] == "True" and cond["reason"] == "AttestationSucceeded", cond
    # The condition went False and True again: the new process was attested, not the old
    # verdict kept.
    assert transition(pod) > admitted_at, (cond, admitted_at)
    assert any(e["reason"] == "PodRemovedFromService" and name in e["message"]
               and "ContainersNotReady" in e["message"] for e in events(ns))
    assert chat(ip, "chat", stream=False) is not None
