"""The OpenAI-compatible API, proven with the official `openai` client against `a3s-power serve`
started the way a user starts it (a config file, a generated model)."""
import hashlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from harness import BIN, MODEL, Server, free_port

CANARY = "CANARY-7f3a9c2e-SECRET"
API_KEY = "sk-test-a3s-power"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("home"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def post(server, path, body, raw=None, headers=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_chat_multi_turn_and_usage(client):
    r = client.chat.completions.create(
        model="tiny", max_tokens=8, seed=1, temperature=0,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
                  {"role": "assistant", "content": "Hi."},
                  {"role": "user", "content": "More?"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = client.chat.completions.create(
        model="tiny", max_tokens=8, seed=1, temperature=0,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Hello"},
                  {"role": "assistant", "content": "Hi."},
                  {"role": "user", "content": "More?"}])
    assert again.choices[0].message.content == r.choices[0].message.content, "greedy is deterministic"


def test_streaming_one_event_per_token_and_done(server, client):
    chunks = list(client.chat.completions.create(
        model="tiny", max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 6
    content_events = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert 1 <= len(content_events) <= 6
    non_stream = client.chat.completions.create(
        model="tiny", max_tokens=6, temperature=0, messages=[{"role": "user", "content": "Count"}])
    assert non_stream.choices[0].message.content == text
    # Raw SSE ends with [DONE].
    req = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps({
        "model": "tiny", "stream": True, "max_tokens": 3,
        "messages": [{"role": "user", "content": "x"}]}).encode(),
        headers={"Content-Type": "application/json"})
    body = urllib.request.urlopen(req, timeout=60).read().decode()
    events = [l[6:] for l in body.splitlines() if l.startswith("data: ")]
    assert events[-1] == "[DONE]"


def test_stop_strings(client):
    r = client.chat.completions.create(model="tiny", max_tokens=20, temperature=0,
                                       messages=[{"role": "user", "content": "Hello"}])
    text = r.choices[0].message.content
    assert len(text) > 4
    stop = text[2:4]
    s = client.chat.completions.create(model="tiny", max_tokens=20, temperature=0, stop=[stop],
                                       messages=[{"role": "user", "content": "Hello"}])
    assert s.choices[0].message.content == text[:text.index(stop)]
    assert s.choices[0].finish_reason == "stop"


SCHEMA = {
    "type": "object",
    "properties": {
        "colors": {"type": "array", "maxItems": 3, "items": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12},
                           "hex": {"type": "string", "maxLength": 7}},
            "required": ["name", "hex"]}},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["colors", "count"],
}


@pytest.mark.parametrize("seed", range(5))
def test_json_schema_output_validates(client, seed):
    r = client.chat.completions.create(
        model="tiny", max_tokens=400, seed=seed, temperature=1.0,
        messages=[{"role": "user", "content": "List 3 colors with hex codes"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "colors", "schema": SCHEMA, "strict": True}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


def test_json_object(client):
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny", max_tokens=400, seed=seed, temperature=1.0,
            messages=[{"role": "user", "content": "json please"}],
            response_format={"type": "json_object"})
        assert isinstance(json.loads(r.choices[0].message.content), dict)


TOOLS = [{"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["location", "unit"]}}}]


def test_forced_tool_call(client):
    r = client.chat.completions.create(
        model="tiny", max_tokens=200, seed=3, tools=TOOLS, tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in SF?"}])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    call = msg.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[0]["function"]["parameters"])
    # The call and its result go back in as history (arguments as a JSON string).
    follow = client.chat.completions.create(
        model="tiny", max_tokens=5, tools=TOOLS,
        messages=[{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")
    stream = list(client.chat.completions.create(
        model="tiny", max_tokens=200, seed=3, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True,
        messages=[{"role": "user", "content": "SF?"}]))
    calls = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_completions_and_embeddings(client):
    c = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert c.object == "text_completion" and c.usage.completion_tokens == 5
    s = list(client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5,
                                       temperature=0, stream=True))
    assert "".join(x.choices[0].text for x in s if x.choices) == c.choices[0].text
    e = client.embeddings.create(model="tiny", input=["hello world", "goodbye"])
    assert len(e.data) == 2
    for d in e.data:
        assert abs(sum(x * x for x in d.embedding) - 1.0) < 1e-3
    assert e.data[0].embedding != e.data[1].embedding


def test_models_list_get_register_delete(server, client):
    ids = [m.id for m in client.models.list().data]
    assert "tiny" in ids
    assert client.models.retrieve("tiny").id == "tiny"
    st, body = post(server, "/v1/models", {"name": "org/copy:Q8_0", "path": str(MODEL)})
    assert st == 201, body
    assert json.loads(body)["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    r = client.chat.completions.create(model="org/copy:Q8_0", max_tokens=2,
                                       messages=[{"role": "user", "content": "hi"}])
    assert r.model == "org/copy:Q8_0"
    client.models.delete("org/copy:Q8_0")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("org/copy:Q8_0")
    st, body = post(server, "/v1/models", {"name": "bad", "path": str(MODEL), "sha256": "0" * 64})
    assert st == 422 and "verification" in body


@pytest.mark.parametrize("body,raw,status,needle", [
    (None, b"{not json", 400, "malformed JSON"),
    (None, b"", 400, "invalid request body"),
    ({"model": "tiny", "messages": "hi"}, None, 400, "wrong type"),
    ({"model": "tiny"}, None, 400, "missing field `messages`"),
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, None, 404, "does not exist"),
    ({"model": "tiny", "messages": []}, None, 400, "must not be empty"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, None, 400, "role"),
    ({"model": "tiny", "max_tokens": 10 ** 9, "messages": [{"role": "user", "content": "x"}]}, None, 400, "max_tokens"),
    ({"model": "tiny", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}, None, 400, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 2000}]}, None, 400, "context"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}}},
     None, 422, "pattern"),
    (None, b'{"model":"tiny","messages":[{"role":"user","content":"' + b"x" * (5 << 20) + b'"}]}', 413, "exceeds"),
])
def test_bad_input_table(server, body, raw, status, needle):
    st, text = post(server, "/v1/chat/completions", body, raw=raw)
    assert st == status, text
    err = json.loads(text)["error"]
    assert needle in err["message"] and err["type"]
    assert set(err) == {"message", "type", "param", "code"}


def test_canary_never_leaks(server, client):
    msgs = [{"role": "user", "content": CANARY}]
    client.chat.completions.create(model="tiny", max_tokens=3, messages=msgs)
    list(client.chat.completions.create(model="tiny", max_tokens=3, messages=msgs, stream=True))
    client.completions.create(model="tiny", prompt=CANARY, max_tokens=3)
    client.embeddings.create(model="tiny", input=CANARY)
    bodies = []
    for b in [{"model": CANARY, "messages": msgs},
              {"model": "tiny", "messages": [{"role": CANARY, "content": CANARY}]},
              {"model": "tiny", "messages": msgs, "response_format": {"type": CANARY}},
              {"model": "tiny", "messages": msgs, "tool_choice": CANARY, "tools": TOOLS}]:
        bodies.append(post(server, "/v1/chat/completions", b)[1])
    bodies.append(post(server, "/v1/chat/completions", None, raw=('{"model": "' + CANARY).encode())[1])
    bodies.append(post(server, "/v1/chat/completions", None, raw=('{"model": 1, "x": "' + CANARY + '"').encode())[1])
    metrics = urllib.request.urlopen(server.url + "/metrics").read().decode()
    time.sleep(0.5)
    logs = server.log.read_text()
    audit = server.audit.read_text() if server.audit.exists() else ""
    assert "request" in logs and "inference" in audit, "the sinks are live"
    for where, text in [("metrics", metrics), ("logs", logs), ("audit", audit)] + \
            [(f"error body {i}", b) for i, b in enumerate(bodies)]:
        assert CANARY not in text, f"canary leaked into {where}"


def test_load_32_concurrent_streams(client):
    def one(i):
        chunks = list(client.chat.completions.create(
            model="tiny", max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"client {i % 4}"}]))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return i, text, chunks[-1].usage.completion_tokens
    t0 = time.time()
    with ThreadPoolExecutor(32) as ex:
        results = list(ex.map(one, range(32)))
    assert time.time() - t0 < 120
    by_prompt = {}
    for i, text, n in results:
        assert n == 8
        by_prompt.setdefault(i % 4, set()).add(text)
    assert all(len(v) == 1 for v in by_prompt.values()), "same prompt, same greedy text: no mix-ups"


def test_health_ready_metrics(server):
    h = json.loads(urllib.request.urlopen(server.url + "/health").read())
    assert h["status"] == "ok" and "tee" in h
    r = urllib.request.urlopen(server.url + "/ready")
    assert r.status == 200
    m = urllib.request.urlopen(server.url + "/metrics").read().decode()
    assert "a3s_power_time_to_first_token_seconds_count" in m
    st, body = post(server, "/v1/attestation", {})
    assert st == 405
    try:
        urllib.request.urlopen(server.url + "/v1/attestation")
        pytest.fail("no TEE: expected 503")
    except urllib.error.HTTPError as e:
        assert e.code == 503 and json.loads(e.read())["error"]["code"] == "tee_unavailable"


def test_auth_rate_limit_and_attestation(tmp_path):
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    s = Server(tmp_path, extra=f'api_keys = ["{digest}"]\nmax_concurrent_requests = 2\n'
                               f'rate_limit_rps = 5\ntee_mode = true\n')
    try:
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=s.url + "/v1", api_key=API_KEY, max_retries=0)
        assert good.models.list().data
        codes = []
        for _ in range(20):
            try:
                good.models.list()
                codes.append(200)
            except openai.RateLimitError:
                codes.append(429)
        assert 429 in codes and 200 in codes
    finally:
        s.stop()


VERIFY = BIN.parent / "a3s-power-verify"


def _policy(path, measurement):
    path.write_text(json.dumps({
        "allowSimulated": True,
        "referenceValueSets": [{"name": "dev", "simulated": {"measurements": [measurement]}}],
    }))
    return path


def test_ra_tls_attestation_verifies_end_to_end(tmp_path):
    """`a3s-power serve` with simulated TEE evidence on an RA-TLS port, checked by the real
    `a3s-power-verify --url`: fresh nonce, handshake, /v1/attestation, every check."""
    if not VERIFY.exists():
        pytest.fail(f"{VERIFY} missing: cargo build -p power-attest")
    tls = free_port()
    srv = Server(tmp_path, extra=f"tls_port = {tls}\nra_tls = true\n", env_extra={"A3S_TEE_SIMULATE": "1"})
    try:
        # The simulated measurement defaults to SHA-384 of the running executable.
        measurement = hashlib.sha384(BIN.read_bytes()).hexdigest()
        digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
        for _ in range(100):  # the TLS listener starts alongside the HTTP one
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        args = [str(VERIFY), "--url", f"https://127.0.0.1:{tls}", "--model", "tiny", "--model-sha256", digest]
        ok = subprocess.run(args + ["--policy", str(_policy(tmp_path / "ok.json", measurement))],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        for check in ["reportData.binding", "reportData.model", "snp.signature", "refset[dev].simulated.measurement"]:
            assert f"PASS  {check}" in ok.stdout, ok.stdout
        bad = subprocess.run(args + ["--policy", str(_policy(tmp_path / "bad.json", "ab" * 48))],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "FAIL" in bad.stdout
        # The plain port serves the same evidence document for a caller's nonce.
        nonce = "11" * 32
        with urllib.request.urlopen(f"{srv.url}/v1/attestation?nonce={nonce}&model=tiny", timeout=30) as r:
            doc = json.loads(r.read())
        assert r.status == 200 and doc
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{srv.url}/v1/attestation?nonce=zz", timeout=30)
        assert e.value.code == 400
    finally:
        srv.stop()

