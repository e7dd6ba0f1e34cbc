"""Model integrity through the real binary: `model_hashes` pins (refusal at start in `tee_mode`,
refusal at load otherwise, never a token from a refused model) and Ed25519 `.sig` signatures made
by `a3s-power keygen` / `a3s-power seal` and checked with `model_signing_key` (good, bad, forged,
missing)."""
import json
import shutil
import subprocess

import pytest

from harness import (BIN, MODEL, MODELS, FileServer, Server, assert_openai_error, clean_env, sha256,
                     sse_events, start_failure)

WRONG = "ab" * 32
MSGS = [{"role": "user", "content": "hi"}]


def chat(server, model, stream=False):
    return server.post("/v1/chat/completions", {"model": model, "max_tokens": 2, "messages": MSGS,
                                                "stream": stream})


def assert_refused(server, model, needle):
    """A refused model: 422 with the OpenAI error, the model named, no completion at all."""
    for stream in (False, True):
        st, text = chat(server, model, stream)
        assert st == 422, text
        err = assert_openai_error(text, "invalid_request_error", "model_verification_failed")
        assert f"model `{model}` failed verification" in err["message"], err
        assert needle in err["message"], err
        assert "choices" not in text and "data:" not in text
    return err


def config(extra=""):
    return 'port = {port}\nkeep_alive = "-1"\n' + extra


def test_tee_mode_refuses_to_start_on_a_pin_mismatch(tmp_path):
    code, out = start_failure(tmp_path, config(
        f'tee_mode = true\nmodel "tiny" {{ path = "{MODEL}" }}\n'
        f'model_hashes = {{ "tiny" = "sha256:{WRONG}" }}\n'))
    assert code == 1, out
    assert f"model `tiny` failed verification: SHA-256 mismatch: expected {WRONG}, got {sha256(MODEL.read_bytes())}" in out, out
    assert "listening" not in out


def test_tee_mode_verifies_every_stored_model_at_start(tmp_path):
    # A model registered through the API in an earlier run, pinned wrongly in this one.
    s = Server(tmp_path, config=config())
    try:
        st, text = s.post("/v1/models", {"name": "stored", "path": str(MODEL)})
        assert st == 201, text
    finally:
        assert s.stop() == 0
    code, out = start_failure(tmp_path, config(f'tee_mode = true\nmodel_hashes = {{ "stored" = "{WRONG}" }}\n'))
    assert code == 1 and "model `stored` failed verification" in out and WRONG in out, out
    # Pinned but absent.
    code, out = start_failure(tmp_path, config(
        f'tee_mode = true\nmodel_hashes = {{ "stored" = "{sha256(MODEL.read_bytes())}", "ghost" = "{WRONG}" }}\n'))
    assert code == 1 and "model `ghost` failed verification: pinned in model_hashes but not registered" in out, out
    # The right pin: the server starts, says so, and /health reports verified models.
    s = Server(tmp_path, config=config(f'tee_mode = true\nmodel_hashes = {{ "stored" = "{sha256(MODEL.read_bytes())}" }}\n'))
    try:
        st, h = s.get_json("/health")
        assert h["tee"]["enabled"] and h["tee"]["models_verified"] is True
        assert "model integrity verified" in s.logs() and "all model integrity checks passed" in s.logs()
        assert s.metric("a3s_power_model_verifications_total", {"result": "ok"}) >= 1
        st, text = chat(s, "stored")
        assert st == 200 and json.loads(text)["choices"]
    finally:
        s.stop()


def test_pin_mismatch_at_load_serves_no_token(tmp_path):
    # Registered without a pin in one run; pinned (wrongly) in the next, without tee_mode, so the
    # check happens when the model is first loaded.
    s = Server(tmp_path, config=config())
    try:
        assert s.post("/v1/models", {"name": "late", "path": str(MODEL)})[0] == 201
    finally:
        s.stop()
    s = Server(tmp_path, config=config(f'model_hashes = {{ "late" = "sha256:{WRONG}" }}\n'))
    try:
        err = assert_refused(s, "late", f"differs from model_hashes pin {WRONG}")
        assert sha256(MODEL.read_bytes()) in err["message"]
        assert s.metric("a3s_power_model_verifications_total", {"result": "failed"}) >= 2
        assert s.loaded() == []
        # Registering a file under a pinned name checks the pin too.
        st, text = s.post("/v1/models", {"name": "late", "path": str(MODELS / "tiny-qwen2-q4_k_m.gguf")})
        assert st == 422 and "SHA-256 mismatch" in text, text
    finally:
        s.stop()


def test_a_file_changed_after_registration_is_refused(tmp_path):
    copy = tmp_path / "m.gguf"
    shutil.copy(MODEL, copy)
    s = Server(tmp_path, config=config(f'model "m" {{ path = "{copy}" }}\n'
                                       f'model_hashes = {{ "m" = "{sha256(copy.read_bytes())}" }}\n'))
    try:
        data = bytearray(copy.read_bytes())
        data[-100] ^= 0xFF  # one weight byte
        copy.write_bytes(bytes(data))
        assert_refused(s, "m", "file changed since registration")
    finally:
        s.stop()


def run(*args, env=None):
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=120,
                       env=env or clean_env())
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """Models signed by `a3s-power seal` with the key of `a3s-power keygen`, plus bad cases."""
    d = tmp_path_factory.mktemp("seal")
    public = run("keygen", "--kind", "signing", "--out", d / "signing.key")
    assert len(public) == 64 and (d / "signing.key.pub").read_text().strip() == public
    other = run("keygen", "--kind", "signing", "--out", d / "other.key")
    assert other != public
    q4 = MODELS / "tiny-qwen2-q4_k_m.gguf"
    paths = {}
    for name, src in [("good", MODEL), ("wrongkey", MODEL), ("forged", q4), ("missing", MODEL), ("garbage", MODEL)]:
        paths[name] = d / f"{name}.gguf"
        shutil.copy(src, paths[name])
    out = run("seal", paths["good"], "--key", d / "signing.key")
    assert out == "sha256:" + sha256(MODEL.read_bytes())
    run("seal", paths["wrongkey"], "--key", d / "other.key")
    # A valid signature of another model, copied next to this one.
    shutil.copy(d / "good.gguf.sig", d / "forged.gguf.sig")
    (d / "garbage.gguf.sig").write_text("not hex\n")
    return d, public, paths


def test_signatures_are_checked_at_load(tmp_path, sealed):
    d, public, paths = sealed
    models = "".join(f'model "{n}" {{ path = "{p}" }}\n' for n, p in paths.items())
    s = Server(tmp_path, config=config(f'model_signing_key = "{public}"\n' + models))
    try:
        st, text = chat(s, "good")
        assert st == 200 and json.loads(text)["choices"], text
        assert_refused(s, "wrongkey", "signature does not verify")
        assert_refused(s, "forged", "signature does not verify")
        assert_refused(s, "garbage", "signature")
        err = assert_refused(s, "missing", "signature file")
        assert str(paths["missing"]) + ".sig" in err["message"] and "missing" in err["message"], err
        assert s.loaded() == ["good"]
        # Registering through the API keeps the publisher's .sig next to the blob.
        st, text = s.post("/v1/models", {"name": "api/good", "path": str(paths["good"])})
        assert st == 201, text
        st, text = chat(s, "api/good")
        assert st == 200, text
        st, text = s.post("/v1/models", {"name": "api/unsigned", "path": str(MODELS / "tiny-qwen2-q4_k_m.gguf")})
        assert st == 201, text
        assert_refused(s, "api/unsigned", "signature file")
        # A file whose .sig does not verify is not registered (and its .sig goes nowhere).
        st, text = s.post("/v1/models", {"name": "api/forged", "path": str(paths["forged"])})
        assert st == 422 and "signature does not verify" in text, text
        assert s.get_json("/v1/models/api/forged")[0] == 404
        assert not (s.home / "models" / "blobs" / f"sha256-{sha256(paths['forged'].read_bytes())}.sig").exists()
        # A pull carries the publisher's signature along; without one the model is refused.
        files = FileServer()
        try:
            url = files.add("/good.gguf", paths["good"].read_bytes())
            sig = (d / "good.gguf.sig").read_text().strip()
            st, text = s.post("/v1/models/pull", {"name": "pulled/signed", "url": url, "signature": sig})
            assert sse_events(text)[-1]["status"] == "success", text
            st, text = chat(s, "pulled/signed")
            assert st == 200, text
            q4 = files.add("/q4.gguf", (MODELS / "tiny-qwen2-q4_k_m.gguf").read_bytes())
            st, text = s.post("/v1/models/pull", {"name": "pulled/forged", "url": q4, "signature": sig})
            last = sse_events(text)[-1]
            assert last["status"] == "error" and "signature does not verify" in last["error"], text
            assert s.get_json("/v1/models/pulled/forged")[0] == 404
            assert not list((s.home / "models" / "partials").iterdir())
            st, text = s.post("/v1/models/pull", {"name": "pulled/x", "url": url, "signature": "zz"})
            assert st == 400 and assert_openai_error(text)["param"] == "signature", text
        finally:
            files.close()
    finally:
        s.stop()


def test_tee_mode_refuses_to_start_with_an_unsigned_model(tmp_path, sealed):
    d, public, paths = sealed
    code, out = start_failure(tmp_path, config(
        f'tee_mode = true\nmodel_signing_key = "{public}"\nmodel "good" {{ path = "{paths["good"]}" }}\n'
        f'model "missing" {{ path = "{paths["missing"]}" }}\n'))
    assert code == 1 and "model `missing` failed verification" in out and "signature file" in out, out
    home = tmp_path / "ok"
    home.mkdir()
    s = Server(home, config=config(
        f'tee_mode = true\nmodel_signing_key = "{public}"\nmodel "good" {{ path = "{paths["good"]}" }}\n'))
    try:
        st, text = chat(s, "good")
        assert st == 200, text
    finally:
        s.stop()


def test_a_bad_signing_key_is_a_config_error(tmp_path):
    code, out = start_failure(tmp_path, config('model_signing_key = "xyz"\n'))
    assert code == 1 and "config.hcl:3: `model_signing_key`: expected 64 hex characters" in out, out
