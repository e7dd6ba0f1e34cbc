"""The sample configurations in config/ pass `a3s-power serve --check`, and a broken one fails
with the file, the line, the key and the reason (environment overrides: the variable)."""
import os
import re
import subprocess

import pytest

from harness import BIN, ROOT, clean_env

SAMPLES = sorted((ROOT / "config").glob("*.hcl"))


def check(path, **env):
    return subprocess.run([str(BIN), "serve", "--config", str(path), "--check"], capture_output=True,
                          text=True, timeout=60, env=clean_env(**env))


def line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


def test_the_samples_are_there():
    assert {"power.hcl", "power-tee.hcl"} <= {p.name for p in SAMPLES}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_passes_check(path):
    data_dir = re.search(r'^data_dir = "(.*)"$', path.read_text(), re.M)
    existed = data_dir and os.path.exists(data_dir.group(1))
    p = check(path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"configuration OK: {path}\n"), p.stdout
    assert "listen: " in p.stdout and p.stderr == ""
    if data_dir and not existed:
        assert not os.path.exists(data_dir.group(1)), "--check must not touch the store"


def test_tee_sample_says_what_it_enforces():
    p = check(ROOT / "config" / "power-tee.hcl")
    assert "tee_mode: true, redact_logs: true, pinned models: 1, signing key: set" in p.stdout, p.stdout
    assert "tls_port: 11443 (RA-TLS)" in p.stdout


def test_environment_overrides_show_in_check():
    p = check(ROOT / "config" / "power.hcl", A3S_POWER_PORT="9999", A3S_POWER_HOST="0.0.0.0")
    assert p.returncode == 0 and "listen: 0.0.0.0:9999" in p.stdout, p.stdout + p.stderr
    p = check(ROOT / "config" / "power.hcl", A3S_POWER_PORT="http")
    assert p.returncode == 1
    assert p.stderr.startswith("error: environment variable A3S_POWER_PORT: `port`: expected an integer"), p.stderr


@pytest.mark.parametrize("old,new,key,reason", [
    ('keep_alive = "5m"', 'keep_alive = "5 minutes"', "keep_alive", "expected a duration"),
    ("max_loaded_models = 2", "max_loaded_modles = 2", "max_loaded_modles", "unknown key"),
    ("port = 11434", 'port = "eleven"', "port", "expected an integer in 1..=65535"),
    ("redact_logs = true", 'redact_logs = "yes"', "redact_logs", "expected true or false"),
    ('shutdown_timeout = "20s"', 'shutdown_timeout = "soon"', "shutdown_timeout", "expected a duration"),
    ('  "sha256:9f86', '  "sha256:9f8', "api_keys", "expected \"sha256:\" and 64 hex characters"),
])
def test_a_bad_value_names_file_line_and_key(tmp_path, old, new, key, reason):
    src = (ROOT / "config" / "power.hcl").read_text()
    assert old in src
    bad = src.replace(old, new)
    f = tmp_path / "power.hcl"
    f.write_text(bad)
    p = check(f)
    assert p.returncode == 1 and p.stdout == ""
    line = line_of(bad, key if key != "api_keys" else "api_keys")
    assert p.stderr.startswith(f"error: {f}:{line}: `{key}`: {reason}"), p.stderr


def test_tee_sample_cross_field_and_key_errors(tmp_path):
    src = (ROOT / "config" / "power-tee.hcl").read_text()
    f = tmp_path / "tee.hcl"
    f.write_text(src.replace("tls_port = 11443\n", ""))
    p = check(f)
    assert p.returncode == 1 and "`ra_tls`: requires `tls_port`" in p.stderr, p.stderr
    f.write_text(src.replace('model_signing_key = "3d40', 'model_signing_key = "0040'))
    p = check(f)
    line = line_of(src, "model_signing_key")
    assert p.returncode == 1, p.stdout
    assert p.stderr.startswith(f"error: {f}:{line}: `model_signing_key`: not an Ed25519 public key"), p.stderr
