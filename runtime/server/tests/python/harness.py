"""Shared helpers for the `a3s-power serve` tests: the binary, the generated model, a server
started the way a user starts it (a config file under `A3S_POWER_HOME`), plain HTTP helpers, SSE
parsing, and a local HTTP file server (Range, dropped connections, a held transfer, a Hugging
Face-style API) for pulls. Nothing here talks to the internet.

Every wait polls for a condition under a generous deadline: the machine is shared and loaded."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
BIN = Path(os.environ.get("A3S_POWER_BIN") or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug" / "a3s-power")
MODELS = Path(os.environ.get("PICOLM_TEST_MODELS", Path.home() / ".cache" / "a3s-power" / "models"))
MODEL = MODELS / "tiny-qwen2-q8_0.gguf"
DEADLINE = float(os.environ.get("A3S_TEST_DEADLINE", "90"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(cond, what, timeout=DEADLINE, interval=0.05):
    """Polls `cond()` until it returns something truthy; fails the test naming `what`."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = cond()
        except Exception as e:  # a condition that raises is "not yet"
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def clean_env(**extra):
    """The environment without A3S_POWER_* / HF_* leaking in from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("A3S_POWER_", "A3S_TEE_", "HF_"))}
    env.update(extra)
    return env


def base_config(port, audit, model=MODEL):
    return (f'port = {port}\nnum_parallel = 4\nmax_queue = 64\nkeep_alive = "-1"\n'
            f'redact_logs = true\naudit_log = "{audit}"\n'
            f'model "tiny" {{\n  path = "{model}"\n}}\n')


class Server:
    """`a3s-power serve` with `$A3S_POWER_HOME/config.hcl`. `config` replaces the default body
    (use `{port}` and `{audit}` placeholders); `extra` is appended. Every server started is
    remembered in `Server.started`; conftest.py kills any still running when the session ends,
    so a failing test never leaves one behind."""

    started = []

    def __init__(self, tmp, extra="", env_extra=None, config=None, wait=True):
        if not BIN.exists():
            pytest.fail(f"{BIN} missing: cargo build -p a3s-power")
        if not MODEL.exists():
            pytest.fail(f"{MODEL} missing: tools/gen-model.py --preset tiny-qwen2 --types q8_0")
        self.home = Path(tmp)
        self.port = free_port()
        self.audit = self.home / "audit.jsonl"
        body = base_config(self.port, self.audit) if config is None else \
            config.replace("{port}", str(self.port)).replace("{audit}", str(self.audit))
        (self.home / "config.hcl").write_text(body + extra)
        self.log = self.home / f"server-{self.port}.log"
        env = dict(os.environ, A3S_POWER_HOME=str(self.home), A3S_POWER_LOG="debug", **(env_extra or {}))
        self.proc = subprocess.Popen([str(BIN), "serve"], stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, env=env)
        Server.started.append(self)
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            self.wait_ready()

    def wait_ready(self):
        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n" + self.log.read_text())
            urllib.request.urlopen(self.url + "/health", timeout=2).read()
            return True
        wait_for(up, "the server's /health")

    def logs(self):
        return self.log.read_text()

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    # -- HTTP ------------------------------------------------------------------------------------

    def request(self, method, path, body=None, raw=None, headers=None, timeout=120):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def get_json(self, path):
        st, text, _ = self.request("GET", path)
        return st, (json.loads(text) if text else None)

    def post(self, path, body=None, raw=None, headers=None):
        st, text, _ = self.request("POST", path, body=body, raw=raw, headers=headers)
        return st, text

    def metrics(self):
        return urllib.request.urlopen(self.url + "/metrics", timeout=30).read().decode()

    def metric(self, name, labels=None):
        """The value of one sample (0 when absent)."""
        want = "" if not labels else "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = m.group(2) or ""
            if labels:
                pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', got))
                if pairs != {k: str(v) for k, v in labels.items()}:
                    continue
            elif got:
                continue
            return float(m.group(3))
        return 0.0

    def loaded(self):
        _, doc = self.get_json("/v1/models")
        return sorted(m["id"] for m in doc["data"] if m.get("loaded"))


def sse_events(text):
    """`data:` payloads of an SSE body, JSON-decoded where they are JSON."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") or line.startswith("data:"):
            d = line[5:].strip()
            try:
                out.append(json.loads(d))
            except ValueError:
                out.append(d)
    return out


def start_failure(tmp, config, env_extra=None, timeout=DEADLINE):
    """Runs `a3s-power serve` expecting it to refuse to start; returns (exit code, output)."""
    tmp = Path(tmp)
    (tmp / "config.hcl").write_text(config.replace("{port}", str(free_port())))
    env = clean_env(A3S_POWER_HOME=str(tmp), **(env_extra or {}))
    p = subprocess.run([str(BIN), "serve"], capture_output=True, text=True, env=env, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def assert_openai_error(text, status_type=None, code=None):
    """The body is exactly `{"error":{"message","type","param","code"}}`; returns the error."""
    doc = json.loads(text)
    assert set(doc) == {"error"}, text
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, text
    assert isinstance(err["message"], str) and err["message"], text
    if status_type:
        assert err["type"] == status_type, text
    if code:
        assert err["code"] == code, text
    return err


# -- a local file server for pulls ---------------------------------------------------------------

class FileServer:
    """Serves registered byte strings over HTTP/1.1 with Range support, plus a Hugging Face-style
    API (`/api/models/<owner>/<repo>` and `/<owner>/<repo>/resolve/main/<file>`).

    - `drop(path, at, times)`: the next `times` GETs of `path` send the full Content-Length but
      only `at` bytes of the body, then the connection is cut.
    - `hold(path)`: GETs of `path` send the first 64 KiB and then wait until `release(path)`.
    - `token`: when set, every request must carry `Authorization: Bearer <token>` (else 401).
    Responses carry a strong ETag; a Range request whose `If-Range` differs gets the whole file.
    Every request is recorded in `log` as (method, path, Range, Authorization, If-Range)."""

    def __init__(self):
        self.files = {}
        self.drops = {}
        self.holds = {}
        self.token = None
        self.repos = {}
        self.log = []
        self.lock = threading.Lock()
        fs = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _deny(self, code, msg=b"no"):
                self.send_response(code)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)

            def do_GET(self):
                with fs.lock:
                    fs.log.append(("GET", self.path, self.headers.get("Range"), self.headers.get("Authorization"),
                                   self.headers.get("If-Range")))
                if fs.token and self.headers.get("Authorization") != f"Bearer {fs.token}":
                    return self._deny(401, b'{"error":"unauthorized"}')
                m = re.match(r"^/api/models/([^/]+)/([^/]+)$", self.path)
                if m:
                    files = fs.repos.get(f"{m.group(1)}/{m.group(2)}")
                    if files is None:
                        return self._deny(404)
                    body = json.dumps({"id": f"{m.group(1)}/{m.group(2)}",
                                       "siblings": [{"rfilename": f} for f in files]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = fs.files.get(self.path)
                if data is None:
                    return self._deny(404)
                start = 0
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and if_range is not None and if_range != etag:
                    rng = None  # the file changed: send it whole (RFC 9110 13.1.5)
                if rng:
                    m = re.match(r"^bytes=(\d+)-$", rng)
                    if not m:
                        return self._deny(400)
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                with fs.lock:
                    drop = fs.drops.get(self.path)
                    cut = None
                    if drop and drop[1] > 0:
                        cut = max(0, drop[0] - start)
                        fs.drops[self.path] = (drop[0], drop[1] - 1)
                    hold = fs.holds.get(self.path)
                try:
                    if cut is not None:
                        self.wfile.write(body[:cut])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if hold is not None:
                        self.wfile.write(body[:65536])
                        self.wfile.flush()
                        hold.wait(DEADLINE * 2)
                        body = body[65536:]
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path, data):
        self.files[path] = data
        return self.url + path

    def drop(self, path, at, times=1):
        with self.lock:
            self.drops[path] = (at, times)

    def hold(self, path):
        ev = threading.Event()
        with self.lock:
            self.holds[path] = ev
        return ev

    def release(self, path):
        with self.lock:
            ev = self.holds.pop(path, None)
        if ev:
            ev.set()

    def requests(self, path):
        with self.lock:
            return [r for r in self.log if r[1] == path]

    def close(self):
        for ev in list(self.holds.values()):
            ev.set()
        self.httpd.shutdown()
        self.httpd.server_close()
