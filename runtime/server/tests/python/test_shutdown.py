"""Graceful shutdown of `a3s-power serve` on SIGTERM: new connections are refused at once, an
in-flight stream completes, the audit log is flushed and the process exits 0 — and when a stream
outlives `shutdown_timeout` (or a second signal arrives) it is ended cleanly with an error event
and `[DONE]`, not cut. `timing_padding` holds each stream open for a known minimum time."""
import http.client
import json
import signal
import socket
import threading
import time

from harness import Server, sse_events, wait_for


class Stream(threading.Thread):
    """A streaming chat read line by line; `first` is set when the first event arrives."""

    def __init__(self, server, max_tokens=4):
        super().__init__(daemon=True)
        self.server, self.max_tokens = server, max_tokens
        self.first = threading.Event()
        self.lines = []
        self.error = None

    def run(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=300)
            c.request("POST", "/v1/chat/completions", body=json.dumps({
                "model": "tiny", "stream": True, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": "hi"}]}),
                headers={"Content-Type": "application/json"})
            r = c.getresponse()
            self.status = r.status
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.decode().rstrip("\r\n")
                if line:
                    self.lines.append(line)
                    self.first.set()
        except Exception as e:  # recorded, asserted by the test
            self.error = e
        finally:
            self.first.set()

    def events(self):
        return sse_events("\n".join(self.lines))


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_sigterm_completes_the_stream_refuses_new_connections_and_exits_0(tmp_path):
    s = Server(tmp_path, extra='timing_padding = "12s"\n')
    st = Stream(s)
    st.start()
    assert st.first.wait(120) and st.error is None, st.error
    s.signal(signal.SIGTERM)
    wait_for(lambda: refused(s.port), "new connections to be refused")
    in_flight = st.is_alive()
    st.join(timeout=120)
    assert st.error is None, st.error
    assert in_flight, "the stream was still open when new connections were refused"
    ev = st.events()
    assert st.status == 200 and ev[-1] == "[DONE]", ev
    assert [e["choices"][0]["finish_reason"] for e in ev[:-1] if e["choices"]][-1] in ("stop", "length")
    assert not any(isinstance(e, dict) and "error" in e for e in ev), ev
    assert s.proc.wait(timeout=60) == 0
    logs = s.logs()
    assert "shutting down" in logs and "a3s-power: stopped" in logs
    audit = [json.loads(line) for line in s.audit.read_text().splitlines()]
    assert any(a.get("event") == "inference" and a.get("outcome", "").startswith("chat:") for a in audit), audit


def test_a_stream_past_the_grace_period_is_ended_cleanly(tmp_path):
    s = Server(tmp_path, extra='timing_padding = "300s"\nshutdown_timeout = "1s"\n')
    st = Stream(s)
    st.start()
    assert st.first.wait(120) and st.error is None, st.error
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    st.join(timeout=120)
    assert not st.is_alive() and st.error is None, st.error
    ev = st.events()
    assert ev[-1] == "[DONE]", ev
    err = ev[-2]["error"]
    assert err["code"] == "service_unavailable" and "shutting down" in err["message"], ev
    assert s.proc.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 60, "exited long before the stream's 300 s padding"
    assert "shutdown grace period over" in s.logs()


def test_a_second_signal_ends_the_grace_period(tmp_path):
    s = Server(tmp_path, extra='timing_padding = "300s"\nshutdown_timeout = "300s"\n')
    st = Stream(s)
    st.start()
    assert st.first.wait(120) and st.error is None, st.error
    s.signal(signal.SIGTERM)
    wait_for(lambda: refused(s.port), "new connections to be refused")
    assert st.is_alive(), "the stream waits for the grace period"
    s.signal(signal.SIGINT)
    st.join(timeout=120)
    assert not st.is_alive() and st.events()[-1] == "[DONE]"
    assert "shutting down" in st.events()[-2]["error"]["message"]
    assert s.proc.wait(timeout=60) == 0
