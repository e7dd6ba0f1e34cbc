"""Encrypted models through the real binary: `a3s-power keygen` + `encrypt` a generated model,
serve it with `a3s-power serve` in each decryption mode (file, memory, streaming with layer
streaming) next to its plaintext original, and check with the official `openai` client that the
greedy completions are the same. Tampered files (wrong key, truncated, reordered chunks) give a
clear error and no token. In memory and streaming modes no plaintext reaches disk: every file
under the server's home and its TMPDIR is scanned for plaintext bytes (file mode, where a
temporary plaintext is expected, proves the scan finds it)."""
import base64
import hashlib
import json
import re
import subprocess
import urllib.request
from pathlib import Path

import openai
import pytest

from harness import BIN, MODEL, clean_env, free_port
from harness import Server as HarnessServer

CHUNK = 8192
HEADER_LEN, TAG_LEN = 64, 16
PROMPTS = ["Tell me a secret.", "Count to five:"]


def run(*args, check=True):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    if not BIN.exists():
        pytest.fail(f"{BIN} missing: cargo build -p a3s-power")
    if not MODEL.exists():
        pytest.fail(f"{MODEL} missing: tools/gen-model.py --preset tiny-qwen2 --types q8_0")
    d = tmp_path_factory.mktemp("keys")
    run("keygen", "--kind", "model", "--out", d / "model.key")
    run("keygen", "--kind", "model", "--out", d / "other.key")
    enc = d / "tiny.gguf.enc"
    out = run("encrypt", MODEL, "--key", d / "model.key", "--out", enc, "--chunk-size", CHUNK)
    digest = out.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), out.stdout
    return {"dir": d, "key": d / "model.key", "other": d / "other.key", "enc": enc, "digest": digest}


class Server(HarnessServer):
    """`a3s-power serve` (the shared harness) with the plaintext model as `plain` and an
    encrypted one as `secret`; TMPDIR points into the home so the plaintext scan covers it."""

    def __init__(self, home, enc, key, extra="", env_extra=None):
        self.tmpdir = home / "tmpdir"
        self.tmpdir.mkdir()
        config = (
            'port = {port}\nmax_loaded_models = 2\nkeep_alive = "-1"\nredact_logs = true\n'
            f'model_key_source = {{ file = "{key}" }}\n'
            f'model "plain" {{\n  path = "{MODEL}"\n}}\n'
            f'model "secret" {{\n  path = "{enc}"\n}}\n'
        )
        super().__init__(home, extra=extra, config=config,
                         env_extra={"TMPDIR": str(self.tmpdir), **(env_extra or {})})
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def complete(self, model, prompt):
        return self.client.chat.completions.create(
            model=model, max_tokens=16, temperature=0, seed=1,
            messages=[{"role": "user", "content": prompt}]).choices[0].message.content

    def raw_completion(self, model, prompt):
        return self.client.completions.create(
            model=model, prompt=prompt, max_tokens=12, temperature=0).choices[0].text

    def delete(self, path):
        return self.request("DELETE", path)[0]


def plaintext_markers():
    """Byte strings that only the plaintext holds: its header and slices of its tensor data
    (random weights: they occur nowhere else)."""
    data = MODEL.read_bytes()
    n = len(data)
    return [data[:256]] + [data[o:o + 64] for o in (n // 3, n // 2, n - 4096)]


def files_with_plaintext(*dirs):
    markers = plaintext_markers()
    hits = []
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file() and p.resolve() != MODEL.resolve():
                data = p.read_bytes()
                if any(m in data for m in markers):
                    hits.append(p)
    return hits


MODES = {
    "file": "",
    "memory": "in_memory_decrypt = true\n",
    "streaming": "streaming_decrypt = true\nlayer_streaming = true\n",
}


@pytest.mark.parametrize("mode", list(MODES))
def test_encrypted_model_serves_the_plaintext_models_completions(tmp_path, keys, mode):
    s = Server(tmp_path, keys["enc"], keys["key"], MODES[mode])
    try:
        for p in PROMPTS:
            want = s.complete("plain", p)
            assert want, "the plaintext model produced text"
            assert s.complete("secret", p) == want, f"{mode}: chat differs for {p!r}"
            assert s.raw_completion("secret", p) == s.raw_completion("plain", p), mode
        # Streaming (SSE) gives the same text too.
        chunks = s.client.chat.completions.create(
            model="secret", max_tokens=16, temperature=0, seed=1, stream=True,
            messages=[{"role": "user", "content": PROMPTS[0]}])
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == s.complete("plain", PROMPTS[0])
        m = s.metrics()
        assert re.search(r'a3s_power_model_decryptions_total\{result="ok"\} 1\b', m), m
        log = s.log.read_text()
        assert re.search(rf'encrypted model decrypted and verified.*mode="?{mode}', log), log[-2000:]
        assert keys["key"].read_text().strip() not in log, "the key must never be logged"
        leaked = files_with_plaintext(tmp_path)
        if mode == "file":
            # The positive control: file mode keeps a temporary plaintext under data_dir/tmp
            # while the model is loaded, and the scan finds it; unloading wipes and removes it.
            assert [p.parent.name for p in leaked] == ["tmp"], leaked
            assert s.delete("/v1/models/secret") == 200
            assert files_with_plaintext(tmp_path) == []
        else:
            assert leaked == [], f"{mode} mode wrote plaintext to disk: {leaked}"
    finally:
        s.stop()
    assert files_with_plaintext(tmp_path) == [], "nothing left after shutdown"


def tampered(keys, kind):
    data = bytearray(keys["enc"].read_bytes())
    chunk = CHUNK + TAG_LEN
    if kind == "truncated":
        return bytes(data[:-1000])
    if kind == "reordered":
        a, b = HEADER_LEN + 3 * chunk, HEADER_LEN + 4 * chunk
        data[a:a + chunk], data[b:b + chunk] = data[b:b + chunk], data[a:a + chunk]
        return bytes(data)
    raise ValueError(kind)


CASES = {
    # kind: (which file, which key, what the error must say)
    "wrong key": (None, "other", r"needs key id"),
    "truncated": ("truncated", "key", r"truncated or extended"),
    "reordered chunks": ("reordered", "key", r"chunk 3 of \d+ \(file offset 24688, plaintext bytes 24576\.\.32768\) fails authentication"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["memory", "streaming"])
def test_tampered_encrypted_model_is_refused_without_a_token(tmp_path, keys, case, mode):
    kind, key, message = CASES[case]
    enc = keys["enc"]
    if kind:
        enc = tmp_path / "bad.gguf.enc"
        enc.write_bytes(tampered(keys, kind))
    s = Server(tmp_path, enc, keys[key], MODES[mode])
    try:
        for stream in (False, True):
            status, body = s.post("/v1/chat/completions", {
                "model": "secret", "max_tokens": 8, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]})
            assert status == 422, body
            err = json.loads(body)["error"]
            assert err["code"] == "model_verification_failed", err
            assert re.search(message, err["message"]) and enc.name in err["message"], err["message"]
            assert "choices" not in body and "data:" not in body, "no token may be served"
        assert re.search(r'a3s_power_model_decryptions_total\{result="failed"\} [1-9]', s.metrics())
        log = s.log.read_text()
        assert re.search(rf"encrypted model refused.*{message}", log), log[-2000:]
        assert keys[key].read_text().strip() not in log, "the key must never be logged"
        # The plaintext model on the same server is unaffected.
        assert s.complete("plain", PROMPTS[0])
        assert files_with_plaintext(tmp_path) == []
    finally:
        s.stop()


def test_tee_mode_checks_the_plaintext_pin_at_startup(tmp_path, keys):
    good = f'tee_mode = true\nstreaming_decrypt = true\nmodel_hashes = {{\n  secret = "{keys["digest"]}"\n}}\n'
    good_home = tmp_path / "good"
    good_home.mkdir()
    s = Server(good_home, keys["enc"], keys["key"], good)
    try:
        assert s.complete("secret", PROMPTS[0])
        log = s.log.read_text()
        assert "model integrity verified" in log, log[-2000:]
    finally:
        s.stop()
    bad_home = tmp_path / "bad"
    bad_home.mkdir()
    wrong = "sha256:" + "0" * 64
    (bad_home / "config.hcl").write_text(
        f'port = {free_port()}\ntee_mode = true\nmodel_key_source = {{ file = "{keys["key"]}" }}\n'
        f'model "secret" {{\n  path = "{keys["enc"]}"\n}}\nmodel_hashes = {{\n  secret = "{wrong}"\n}}\n')
    r = subprocess.run([str(BIN), "serve"], capture_output=True, text=True, timeout=120,
                       env=clean_env(A3S_POWER_HOME=str(bad_home)))
    assert r.returncode != 0
    assert "model `secret` failed verification" in r.stderr and "differs from the pinned" in r.stderr, r.stderr


def test_attestation_binds_the_plaintext_identity(tmp_path, keys):
    """`/v1/attestation?model=secret` binds the SHA-256 of the plaintext GGUF (the digest
    `encrypt` printed, DESIGN §3.5), not the ciphertext's; the encrypted model is loaded and
    verified on demand to learn it."""
    s = Server(tmp_path, keys["enc"], keys["key"], MODES["streaming"], env_extra={"A3S_TEE_SIMULATE": "1"})
    try:
        plain = keys["digest"].removeprefix("sha256:")
        cipher = hashlib.sha256(keys["enc"].read_bytes()).hexdigest()
        for model, want, other in [("secret", plain, cipher),
                                   ("plain", hashlib.sha256(MODEL.read_bytes()).hexdigest(), None)]:
            with urllib.request.urlopen(f"{s.url}/v1/attestation?nonce={'22' * 32}&model={model}", timeout=60) as r:
                doc = json.loads(r.read())
            assert doc["modelSha256"] == want, (model, doc["modelSha256"])
            # report_data[32..64] inside the signed report is the digest itself.
            bundle = base64.b64decode(doc["evidenceBundle"])
            assert bytes.fromhex(want) in bundle, model
            if other:
                assert bytes.fromhex(other) not in bundle
        manifests = list((tmp_path / "models" / "manifests").glob("*.json"))
        recorded = [json.loads(m.read_text()) for m in manifests]
        assert [m.get("plaintext_sha256") for m in recorded if m["name"] == "secret"] == [plain]
    finally:
        s.stop()
