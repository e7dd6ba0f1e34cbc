"""`/metrics` passes `promtool check metrics` (Prometheus' own linter, built from its Go module by
tools/promtool.sh) with every metric family populated: HTTP, inference, TTFT, tokens, queue,
loads and evictions, pulls, verifications, attestations, redactions, 429s. A deliberately bad
exposition is fed to the same promtool first, to show the check can fail."""
import glob
import os
import subprocess
from pathlib import Path

import pytest

from harness import MODEL, FileServer, Server, sse_events

MSGS = [{"role": "user", "content": "hi"}]


def promtool():
    p = os.environ.get("PROMTOOL")
    if p and Path(p).is_file():
        return p
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "a3s-power"
    found = sorted(glob.glob(str(cache / "promtool-*" / "promtool")))
    if not found:
        pytest.fail("promtool missing: run tools/promtool.sh (make server-tests does) or set PROMTOOL")
    return found[-1]


def lint(text):
    p = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_promtool_rejects_a_bad_exposition():
    code, out = lint("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
                     "# TYPE latency_ms gauge\nlatency_ms 3\n")
    assert code != 0 and "requests" in out and "latency_ms" in out, out


def test_metrics_pass_promtool(tmp_path):
    files = FileServer()
    s = Server(tmp_path, extra='max_concurrent_requests = 8\nrate_limit_rps = 50\n'
                               'max_loaded_models = 1\n'
                               f'model "other" {{ path = "{MODEL}" }}\n',
               env_extra={"A3S_TEE_SIMULATE": "1"})
    try:
        assert s.post("/v1/chat/completions", {"model": "tiny", "max_tokens": 3, "messages": MSGS})[0] == 200
        st, body = s.post("/v1/chat/completions", {"model": "tiny", "max_tokens": 3, "stream": True,
                                                   "messages": MSGS})
        assert st == 200 and sse_events(body)[-1] == "[DONE]"
        assert s.post("/v1/completions", {"model": "tiny", "max_tokens": 2, "prompt": "x"})[0] == 200
        assert s.post("/v1/embeddings", {"model": "tiny", "input": "x"})[0] == 200
        assert s.post("/v1/chat/completions", {"model": "other", "max_tokens": 2, "messages": MSGS})[0] == 200
        assert s.post("/v1/chat/completions", {"model": "nope", "messages": MSGS})[0] == 404
        url = files.add("/m.gguf", MODEL.read_bytes())
        st, body = s.post("/v1/models/pull", {"name": "pulled", "url": url})
        assert sse_events(body)[-1]["status"] == "success"
        st, body = s.post("/v1/models/pull", {"name": "bad", "url": url, "sha256": "0" * 64})
        assert sse_events(body)[-1]["status"] == "error"
        assert s.request("GET", "/v1/attestation?nonce=" + "00" * 32)[0] == 200
        codes = [s.request("GET", "/v1/models")[0] for _ in range(80)]
        assert 429 in codes
        text = s.metrics()
        for family in ["http_requests_total", "http_request_duration_seconds", "inference_requests_total",
                       "time_to_first_token_seconds", "decode_tokens_per_second", "prompt_tokens_total",
                       "completion_tokens_total", "queue_depth", "active_sequences", "loaded_models",
                       "model_loads_total", "pulls_total", "model_verifications_total",
                       "attestations_total", "log_redactions_total", "rate_limited_total",
                       "audit_events_total"]:
            assert f"# TYPE a3s_power_{family} " in text, family
        assert 'a3s_power_model_loads_total{event="evict"}' in text
        assert 'a3s_power_pulls_total{result="failed"}' in text
        code, out = lint(text)
        assert code == 0 and out.strip() == "", out
    finally:
        s.stop()
        files.close()
