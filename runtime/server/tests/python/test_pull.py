"""`POST /v1/models/pull` and `GET /v1/models/pull/{name}/status` against a local HTTP server
started by the test: plain URLs, a Hugging Face-style API with token auth, HTTP Range resume
after a dropped connection and after a crash of the server, one pull per model at a time (409),
and digest or format mismatches that register nothing and leave no file behind."""
import json
import subprocess
import threading
import urllib.parse

import pytest

from harness import (BIN, MODEL, MODELS, FileServer, Server, assert_openai_error, clean_env,
                     sha256, sse_events, wait_for)

DATA = MODEL.read_bytes() if MODEL.exists() else b""
TOKEN = "hf_test_token_5b1e"
WRONG = "0" * 64


@pytest.fixture(scope="module")
def files():
    fs = FileServer()
    yield fs
    fs.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, files):
    home = tmp_path_factory.mktemp("pull")
    s = Server(home, extra=f'model_hashes = {{\n  "pinned/model" = "sha256:{WRONG}"\n}}\n',
               env_extra={"HF_ENDPOINT": files.url, "HF_TOKEN": ""})
    yield s
    s.stop()


def pull(server, body, timeout=180):
    """Runs a pull with SSE progress; returns (HTTP status, events or error body)."""
    st, text, headers = server.request("POST", "/v1/models/pull", body=body, timeout=timeout)
    if st != 200:
        return st, text
    assert headers.get("content-type", headers.get("Content-Type", "")).startswith("text/event-stream")
    return st, sse_events(text)


def status(server, name):
    return server.get_json("/v1/models/pull/" + urllib.parse.quote(name, safe="/:") + "/status")


def store_files(server, sub):
    d = server.home / "models" / sub
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_pull_url_streams_progress_registers_and_serves(server, files):
    url = files.add("/m/tiny.gguf", DATA)
    st, events = pull(server, {"name": "url/tiny", "url": url})
    assert st == 200, events
    kinds = [e["status"] for e in events]
    assert kinds[0] == "resolving" and events[0]["url"] == url
    assert "downloading" in kinds and kinds[-2:] == ["verifying", "success"], kinds
    done = [e for e in events if e["status"] == "downloading"][-1]
    assert done["completed"] == done["total"] == len(DATA)
    assert events[-1]["sha256"] == sha256(DATA) and events[-1]["id"] == "url/tiny"
    st, card = server.get_json("/v1/models/url/tiny")
    assert st == 200 and card["sha256"] == sha256(DATA) and card["size"] == len(DATA)
    assert f"sha256-{sha256(DATA)}" in store_files(server, "blobs")
    assert store_files(server, "partials") == []
    st, s = status(server, "url/tiny")
    assert st == 200 and s["status"] == "success" and s["completed"] == s["total"] == len(DATA)
    assert s["sha256"] == sha256(DATA) and s["error"] is None
    # The pulled model serves.
    st, text = server.post("/v1/chat/completions", {"model": "url/tiny", "max_tokens": 2,
                                                    "messages": [{"role": "user", "content": "hi"}]})
    assert st == 200 and json.loads(text)["choices"], text
    # A second pull of a present model answers at once (no download); `stream: false` gives JSON.
    before = len(files.requests("/m/tiny.gguf"))
    st, text, _ = server.request("POST", "/v1/models/pull", {"name": "url/tiny", "url": url, "stream": False})
    assert st == 200 and json.loads(text)["sha256"] == sha256(DATA), text
    assert len(files.requests("/m/tiny.gguf")) == before
    # `force` downloads again.
    st, events = pull(server, {"name": "url/tiny", "url": url, "force": True})
    assert events[-1]["status"] == "success" and len(files.requests("/m/tiny.gguf")) == before + 1


def test_pull_hugging_face_style_with_token(server, files):
    q4 = (MODELS / "tiny-qwen2-q4_k_m.gguf").read_bytes()
    files.repos["org/Tiny-GGUF"] = ["README.md", "tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf", "tiny-Q8_0-extra.gguf"]
    files.add("/org/Tiny-GGUF/resolve/main/tiny-Q8_0.gguf", DATA)
    files.add("/org/Tiny-GGUF/resolve/main/tiny-Q4_K_M.gguf", q4)
    files.token = TOKEN
    try:
        # `owner/repo:QUANT` resolves through the API (shortest matching .gguf) with the token.
        st, events = pull(server, {"name": "org/Tiny-GGUF:Q8_0", "token": TOKEN})
        assert events[-1]["status"] == "success", events
        assert events[-1]["sha256"] == sha256(DATA)
        assert events[0]["url"] == files.url + "/org/Tiny-GGUF/resolve/main/tiny-Q8_0.gguf"
        api = files.requests("/api/models/org/Tiny-GGUF")
        assert api and api[-1][3] == f"Bearer {TOKEN}"
        # `owner/repo/file.gguf` goes straight to the file.
        st, events = pull(server, {"name": "org/Tiny-GGUF/tiny-Q4_K_M.gguf", "token": TOKEN})
        assert events[-1]["status"] == "success" and events[-1]["sha256"] == sha256(q4), events
        st, card = server.get_json("/v1/models/org/Tiny-GGUF/tiny-Q4_K_M.gguf")
        assert st == 200 and card["sha256"] == sha256(q4)
        # Without the token: the hub's 401 is reported, nothing is registered.
        st, events = pull(server, {"name": "org/Tiny-GGUF:Q4_K_M"})
        assert events[-1]["status"] == "error" and "HTTP 401" in events[-1]["error"], events
        assert server.get_json("/v1/models/org/Tiny-GGUF:Q4_K_M")[0] == 404
        st, s = status(server, "org/Tiny-GGUF:Q4_K_M")
        assert s["status"] == "failed" and "HTTP 401" in s["error"]
        # A tag that matches no file names the repository.
        st, events = pull(server, {"name": "org/Tiny-GGUF:Q2_K", "token": TOKEN})
        assert "no .gguf file matching `Q2_K`" in events[-1]["error"], events
    finally:
        files.token = None
    assert TOKEN not in server.logs(), "the token must never reach the logs"
    assert TOKEN not in json.dumps(status(server, "org/Tiny-GGUF:Q8_0")[1])


def test_hf_token_from_the_environment(tmp_path, files):
    files.repos["env/Repo-GGUF"] = ["repo-Q8_0.gguf"]
    files.add("/env/Repo-GGUF/resolve/main/repo-Q8_0.gguf", DATA)
    s = Server(tmp_path, env_extra={"HF_ENDPOINT": files.url, "HF_TOKEN": TOKEN})
    files.token = TOKEN
    try:
        st, events = pull(s, {"name": "env/Repo-GGUF:Q8_0"})
        assert events[-1]["status"] == "success", events
        assert {r[3] for r in files.requests("/env/Repo-GGUF/resolve/main/repo-Q8_0.gguf")} == {f"Bearer {TOKEN}"}
        assert TOKEN not in s.logs()
    finally:
        files.token = None
        s.stop()


def test_range_resume_after_a_dropped_connection(server, files):
    path = "/m/drop-once.gguf"
    url = files.add(path, DATA)
    files.drop(path, at=1_000_000, times=1)
    st, events = pull(server, {"name": "resume/once", "url": url})
    assert events[-1]["status"] == "success", events
    assert events[-1]["sha256"] == sha256(DATA)
    ranges = [r[2] for r in files.requests(path)]
    assert ranges == [None, "bytes=1000000-"], ranges
    resumed = [e for e in events if e["status"] == "resuming"]
    assert resumed == [{"status": "resuming", "offset": 1_000_000, "total": len(DATA)}], events
    assert store_files(server, "partials") == []


def test_failed_pull_keeps_the_partial_and_the_next_pull_resumes(server, files):
    path = "/m/drop-always.gguf"
    url = files.add(path, DATA)
    files.drop(path, at=700_000, times=3)  # every attempt of the first pull
    st, events = pull(server, {"name": "resume/later", "url": url})
    assert events[-1]["status"] == "error", events
    assert "partial download kept" in events[-1]["error"], events
    st, s = status(server, "resume/later")
    assert s["status"] == "failed" and s["completed"] == 700_000 and s["total"] == len(DATA), s
    assert server.get_json("/v1/models/resume/later")[0] == 404
    assert [f for f in store_files(server, "partials") if f.endswith(".partial")], "the partial is kept"
    n = len(files.requests(path))
    st, events = pull(server, {"name": "resume/later", "url": url})
    assert events[-1]["status"] == "success" and events[-1]["sha256"] == sha256(DATA), events
    assert [r[2] for r in files.requests(path)[n:]] == ["bytes=700000-"]
    assert {"status": "resuming", "offset": 700_000, "total": len(DATA)} in events


def test_a_file_changed_upstream_is_not_spliced(server, files):
    """The partial's ETag goes out as If-Range: when the remote file changed, the server sends it
    whole and the pull starts over instead of joining two versions."""
    path = "/m/changing.gguf"
    url = files.add(path, DATA)
    files.drop(path, at=500_000, times=3)
    st, events = pull(server, {"name": "changed/upstream", "url": url})
    assert events[-1]["status"] == "error", events
    new = (MODELS / "tiny-qwen2-q4_k_m.gguf").read_bytes()
    assert len(new) > 500_000 and new != DATA
    files.add(path, new)
    n = len(files.requests(path))
    st, events = pull(server, {"name": "changed/upstream", "url": url})
    assert events[-1]["status"] == "success" and events[-1]["sha256"] == sha256(new), events
    (req,) = files.requests(path)[n:]
    assert req[2] == "bytes=500000-" and req[4] == '"' + sha256(DATA)[:16] + '"', req
    assert not any(e["status"] == "resuming" for e in events)


def test_pull_resumes_after_the_server_is_killed(tmp_path, files):
    """A crash mid-download: the status survives the restart (marked interrupted) and the next
    pull continues the partial file with a Range request."""
    path = "/m/crash.gguf"
    url = files.add(path, DATA)
    files.hold(path)
    s = Server(tmp_path, env_extra={"HF_ENDPOINT": files.url})
    def doomed():  # its server is killed mid-stream: the read fails, as it should
        try:
            s.request("POST", "/v1/models/pull", {"name": "crash/model", "url": url})
        except Exception:
            pass
    t = threading.Thread(target=doomed)
    t.daemon = True
    t.start()
    partials = tmp_path / "models" / "partials"
    wait_for(lambda: any(p.stat().st_size > 0 for p in partials.glob("*.partial")), "a partial download on disk")
    st, doc = s.get_json("/v1/models/pull/crash/model/status")
    assert st == 200 and doc["status"] == "pulling", doc
    s.proc.kill()
    s.proc.wait()
    files.release(path)
    (part,) = partials.glob("*.partial")
    have = part.stat().st_size
    assert 0 < have < len(DATA)
    s2 = Server(tmp_path, env_extra={"HF_ENDPOINT": files.url})
    try:
        st, doc = s2.get_json("/v1/models/pull/crash/model/status")
        assert st == 200 and doc["status"] == "failed" and "interrupted" in doc["error"], doc
        n = len(files.requests(path))
        st, events = pull(s2, {"name": "crash/model", "url": url})
        assert events[-1]["status"] == "success" and events[-1]["sha256"] == sha256(DATA), events
        assert [r[2] for r in files.requests(path)[n:]] == [f"bytes={have}-"]
        assert {"status": "resuming", "offset": have, "total": len(DATA)} in events
        st, doc = s2.get_json("/v1/models/pull/crash/model/status")
        assert doc["status"] == "success"
    finally:
        s2.stop()


def test_second_pull_of_the_same_model_is_409(server, files):
    path = "/m/slow.gguf"
    url = files.add(path, DATA)
    files.hold(path)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=pull(server, {"name": "dedup/model", "url": url})))
    t.start()
    try:
        wait_for(lambda: files.requests(path), "the first pull's download to start")
        wait_for(lambda: status(server, "dedup/model")[1]["status"] == "pulling", "status `pulling`")
        st, text = server.post("/v1/models/pull", {"name": "dedup/model", "url": url})
        assert st == 409, text
        err = assert_openai_error(text, "invalid_request_error", "conflict")
        assert "already in progress" in err["message"]
        # Another model pulls meanwhile.
        other = files.add("/m/other.gguf", DATA)
        st, events = pull(server, {"name": "dedup/other", "url": other})
        assert events[-1]["status"] == "success"
    finally:
        files.release(path)
        t.join(timeout=180)
    assert not t.is_alive()
    st, events = out["r"]
    assert st == 200 and events[-1]["status"] == "success", events
    assert len(files.requests(path)) == 1, "one download for one model"
    assert status(server, "dedup/model")[1]["status"] == "success"


@pytest.mark.parametrize("case", ["body_pin", "config_pin", "not_gguf"])
def test_mismatch_registers_nothing_and_leaves_no_file(server, files, case):
    name = {"body_pin": "bad/body", "config_pin": "pinned/model", "not_gguf": "bad/html"}[case]
    data = b"<html>not a model</html>" * 100 if case == "not_gguf" else DATA
    url = files.add(f"/m/{case}.bin", data)
    blobs = store_files(server, "blobs")
    body = {"name": name, "url": url}
    if case == "body_pin":
        body["sha256"] = "sha256:" + WRONG
    st, events = pull(server, body)
    assert events[-1]["status"] == "error", events
    if case == "not_gguf":
        assert "not a GGUF file" in events[-1]["error"], events
    else:
        assert f"SHA-256 mismatch: expected {WRONG}, got {sha256(data)}" in events[-1]["error"], events
    assert server.get_json("/v1/models/" + name)[0] == 404
    assert store_files(server, "blobs") == blobs, "no blob was added"
    assert store_files(server, "partials") == [], "no half-written file is left"
    st, s = status(server, name)
    assert s["status"] == "failed" and s["sha256"] is None
    # `stream: false` reports the same failure as an OpenAI error.
    st, text, _ = server.request("POST", "/v1/models/pull", dict(body, stream=False))
    assert st == 502, text
    assert_openai_error(text, "server_error", "pull_failed")


def test_http_errors_and_bad_requests(server, files):
    st, events = pull(server, {"name": "missing/file", "url": files.url + "/m/nope.gguf"})
    assert "HTTP 404" in events[-1]["error"], events
    assert len(files.requests("/m/nope.gguf")) == 1, "a 404 is not retried"
    st, text = server.post("/v1/models/pull", {"name": "x", "url": "ftp://example/x.gguf"})
    assert st == 400 and assert_openai_error(text)["param"] == "url", text
    st, text = server.post("/v1/models/pull", {"name": "../etc", "url": files.url + "/m/tiny.gguf"})
    assert st == 400, text
    assert_openai_error(text, "invalid_request_error")
    st, text = server.post("/v1/models/pull", {"url": files.url})
    assert st == 400 and "missing field `name`" in text
    st, text = server.request("GET", "/v1/models/pull/never/pulled/status")[:2]
    assert st == 404
    assert_openai_error(text, "invalid_request_error", "not_found")


def test_cli_pull_and_list(tmp_path, files):
    url = files.add("/m/cli.gguf", DATA)
    env = clean_env(A3S_POWER_HOME=str(tmp_path))
    p = subprocess.run([str(BIN), "pull", "cli/tiny", "--url", url], capture_output=True, text=True,
                       env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"cli/tiny sha256:{sha256(DATA)}"
    p = subprocess.run([str(BIN), "list"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and "cli/tiny" in p.stdout and sha256(DATA) in p.stdout, p.stdout
    p = subprocess.run([str(BIN), "pull", "cli/bad", "--url", url, "--sha256", WRONG],
                       capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 1 and "SHA-256 mismatch" in p.stderr, p.stderr
