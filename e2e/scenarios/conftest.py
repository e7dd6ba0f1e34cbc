"""Shared machinery of the e2e scenarios (issue #8): kubectl, waiting, the model server, the
operator installed with Helm, one namespace per scenario, and failure reports.

Runs inside the private namespaces of `e2e/with-cluster.sh` (see `e2e/run-scenarios.sh`), where
KUBECONFIG, E2E_RUN_DIR and the pod network are available. Inputs (environment):

- A3S_REPO: the repository root (chart, samples).
- A3S_RUNTIME_BIN: the `a3s-power` executable the process kubelet runs for the runtime image;
  simulated evidence measures it (SHA-384 of the executable), so policies pin that digest.
- A3S_VERIFY_BIN: `a3s-power-verify`.
- A3S_MODELS: folder with the generated models `tiny-qwen2-q4_k_m.gguf` (version 1) and
  `tiny-llama-q4_k_m.gguf` (version 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(os.environ["A3S_REPO"])
RUN_DIR = Path(os.environ["E2E_RUN_DIR"])
RUNTIME_BIN = Path(os.environ["A3S_RUNTIME_BIN"])
VERIFY_BIN = Path(os.environ["A3S_VERIFY_BIN"])
MODELS = Path(os.environ["A3S_MODELS"])

OPERATOR_NS = "a3s-power-system"
RELEASE = "a3s"
# The model server: the "host" address of the private network (e2e/README.md).
MODEL_HOST = "10.245.0.1"
MODEL_PORT = 8000
HTTP_PORT = 11434
RA_TLS_PORT = 11443
ATTESTED = "power.a3s.dev/attested"
# A measurement no runtime build has.
OTHER_MEASUREMENT = "ab" * 48


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


MEASUREMENT = hashlib.sha384(RUNTIME_BIN.read_bytes()).hexdigest()


class Kubectl:
    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): "
                                 f"{r.stderr.strip()}")
        return r

    def json(self, *args: str) -> dict:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def maybe(self, *args: str) -> dict | None:
        r = self("get", *args, "-o", "json", check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def apply(self, manifest: str, ns: str | None = None) -> None:
        args = ["apply", "-f", "-"] + (["-n", ns] if ns else [])
        self(*args, input=manifest)


kubectl = Kubectl()


def wait_for(pred, timeout: float, what: str, interval: float = 0.5):
    """Poll `pred` until it returns a truthy value; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                 f"last: {last!r}")
        time.sleep(interval)


def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def ready_endpoints(ns: str, service: str) -> list[str]:
    """Addresses the Service's EndpointSlices list as ready (what a client can be sent to)."""
    slices = kubectl.json("endpointslices", "-n", ns, "-l",
                          f"kubernetes.io/service-name={service}")
    out = []
    for s in slices["items"]:
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready"):
                out.extend(e.get("addresses") or [])
    return sorted(out)


def pods(ns: str, model: str) -> list[dict]:
    return kubectl.json("pods", "-n", ns, "-l", f"power.a3s.dev/model={model}")["items"]


def live_pods(ns: str, model: str) -> list[dict]:
    return [p for p in pods(ns, model) if not p["metadata"].get("deletionTimestamp")]


def events(ns: str) -> list[dict]:
    """Events of the namespace from both APIs, as (type, reason, message, object) dicts."""
    out = []
    for e in kubectl.json("events.v1.events.k8s.io", "-n", ns)["items"]:
        out.append({"type": e.get("type"), "reason": e.get("reason"),
                    "message": e.get("note") or "",
                    "object": (e.get("regarding") or {}).get("name"),
                    "related": (e.get("related") or {}).get("name")})
    return out


def policy_yaml(name: str, measurement: str = MEASUREMENT, enforcement: str = "Enforce",
                interval: str = "30s") -> str:
    return f"""
apiVersion: power.a3s.dev/v1alpha1
kind: AttestationPolicy
metadata: {{name: {name}}}
spec:
  enforcement: {enforcement}
  allowSimulated: true
  referenceValueSets:
    - name: dev
      simulated:
        measurements: [{measurement}]
  freshness: {{reattestInterval: {interval}, maxEvidenceAge: 30s}}
"""


def model_yaml(name: str, policy: str, file: str, sha256: str, replicas: int = 2,
               served: str = "chat") -> str:
    return f"""
apiVersion: power.a3s.dev/v1alpha1
kind: InferenceModel
metadata: {{name: {name}}}
spec:
  model:
    servedName: {served}
    source: {{url: "http://{MODEL_HOST}:{MODEL_PORT}/{file}"}}
    sha256: {sha256}
  attestationPolicyRef: {{name: {policy}}}
  replicas: {replicas}
  runtime: {{threads: 1, contextSize: 512}}
"""


def wait_serving(ns: str, name: str, replicas: int, timeout: float = 240) -> dict:
    """Until the InferenceModel is Ready with `replicas` attested pods all in the EndpointSlice."""
    def ok():
        im = kubectl.maybe("pim", name, "-n", ns)
        st = (im or {}).get("status") or {}
        eps = ready_endpoints(ns, name)
        if (condition(im, "Ready").get("status") == "True"
                and st.get("attestedReplicas") == replicas and len(eps) == replicas
                and len(live_pods(ns, name)) == replicas):
            return im
        return None
    return wait_for(ok, timeout, f"{ns}/{name} Ready with {replicas} attested endpoints")


class ModelFiles:
    """The files the model server serves, with their digests."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copy(MODELS / "tiny-qwen2-q4_k_m.gguf", root / "tiny-qwen2-q4_k_m.gguf")
        shutil.copy(MODELS / "tiny-llama-q4_k_m.gguf", root / "tiny-llama-q4_k_m.gguf")
        # The same file with one byte of a tensor changed: what an attacker with write access
        # to the model bucket would serve.
        data = bytearray((root / "tiny-qwen2-q4_k_m.gguf").read_bytes())
        data[-100] ^= 0xFF
        (root / "tampered.gguf").write_bytes(bytes(data))
        # Version 1 encrypted (chunked AES-256-GCM) under a fresh model key.
        subprocess.run([str(RUNTIME_BIN), "keygen", "--kind", "model", "--out",
                        str(root / "model.key")], check=True, capture_output=True)
        subprocess.run([str(RUNTIME_BIN), "encrypt", "--key", str(root / "model.key"),
                        "--chunk-size", "65536", "-o", str(root / "encrypted.gguf.enc"),
                        str(root / "tiny-qwen2-q4_k_m.gguf")], check=True, capture_output=True)
        self.key = (root / "model.key").read_text().strip()
        (root / "model.key").unlink()  # the key is not served
        self.encrypted = "encrypted.gguf.enc"
        self.v1 = "tiny-qwen2-q4_k_m.gguf"
        self.v2 = "tiny-llama-q4_k_m.gguf"
        self.tampered = "tampered.gguf"

    def sha(self, file: str) -> str:
        return sha256_file(self.root / file)


@pytest.fixture(scope="session")
def model_files():
    root = Path(tempfile.mkdtemp(prefix="a3s-models-"))
    files = ModelFiles(root)
    log = open(RUN_DIR / "logs" / "model-server.log", "w")
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(MODEL_PORT), "--bind",
                            "0.0.0.0", "--directory", str(root)], stdout=log, stderr=log)
    import urllib.request

    def up():
        try:
            with urllib.request.urlopen(f"http://{MODEL_HOST}:{MODEL_PORT}/", timeout=2):
                return True
        except OSError:
            return False
    wait_for(up, 30, "the model server")
    yield files
    srv.terminate()
    srv.wait(10)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def operator(model_files):
    """The operator, installed from the chart with Helm (RBAC enforced by the API server)."""
    t0 = time.monotonic()
    r = subprocess.run(["helm", "install", RELEASE, str(REPO / "charts" / "a3s-power-operator"),
                        "-n", OPERATOR_NS, "--create-namespace", "--wait", "--timeout", "180s",
                        "--set", "gate.timeoutSeconds=10"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"helm install failed: {r.stdout}\n{r.stderr}"
    print(f"\noperator installed and Ready in {time.monotonic() - t0:.1f}s")
    yield


@pytest.fixture
def ns(operator, request):
    """A fresh namespace per scenario (deleted afterwards, without waiting)."""
    name = f"{request.node.name.replace('_', '-')[:40]}-{uuid.uuid4().hex[:5]}".lower()
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def operator_pod() -> dict | None:
    items = kubectl.json("pods", "-n", OPERATOR_NS, "-l",
                         "app.kubernetes.io/name=a3s-power-operator")["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    return live[0] if live else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing scenario prints the objects, Events and the operator's and kubelet's logs, so a
    failure can be read without rerunning."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    ns = item.funcargs.get("ns")
    sections = []

    def add(title, fn):
        try:
            sections.append((title, fn()))
        except Exception as e:  # noqa: BLE001 - a report must not hide the failure
            sections.append((title, f"(unavailable: {e})"))

    if ns:
        add(f"objects in {ns}", lambda: kubectl(
            "get", "pim,attpol,deploy,rs,pods,svc,endpointslices,cm", "-n", ns, "-o", "wide",
            check=False).stdout)
        add(f"InferenceModels in {ns}", lambda: kubectl(
            "get", "pim", "-n", ns, "-o", "yaml", check=False).stdout[-6000:])
        add(f"events in {ns}", lambda: kubectl(
            "get", "events", "-n", ns, "--sort-by=.lastTimestamp", check=False).stdout[-6000:])
    for pod_dir in sorted((RUN_DIR / "pods").glob(f"{OPERATOR_NS}_*")):
        for f in sorted(pod_dir.glob("*.log")):
            add(f"operator log {pod_dir.name}/{f.name}",
                lambda f=f: "".join(f.read_text(errors="replace").splitlines(True)[-80:]))
    add("kubelet log", lambda: "".join(
        (RUN_DIR / "logs" / "kubelet.log").read_text(errors="replace").splitlines(True)[-60:]))
    if ns:
        for pod_dir in sorted((RUN_DIR / "pods").glob(f"{ns}_*")):
            for f in sorted(pod_dir.glob("*.log")):
                add(f"container log {pod_dir.name}/{f.name}",
                    lambda f=f: "".join(f.read_text(errors="replace").splitlines(True)[-25:]))
    for title, text in sections:
        rep.sections.append((title, text))
