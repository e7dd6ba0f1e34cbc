"""Model lifecycle through the HTTP API: autoload, `max_loaded_models` with least-recently-used
eviction (never of a busy model), `keep_alive` ("-1", "0", durations) enforced by the background
reaper, and unload on delete. Observed through `/v1/models` (`loaded`), `/health` and the
`a3s_power_model_loads_total` / `a3s_power_loaded_models` metrics."""
import json
import threading
import time

from harness import MODEL, Server, assert_openai_error, sse_events, wait_for

MSGS = [{"role": "user", "content": "hi"}]


def models_config(names, extra):
    return ('port = {port}\nnum_parallel = 2\n' + extra +
            "".join(f'model "{n}" {{ path = "{MODEL}" }}\n' for n in names))


def chat(s, model, **kw):
    st, text = s.post("/v1/chat/completions", dict({"model": model, "max_tokens": 2, "messages": MSGS}, **kw))
    assert st == 200, text
    return text


def loads(s, event):
    return s.metric("a3s_power_model_loads_total", {"event": event})


def test_lru_eviction_respects_max_loaded_models(tmp_path):
    s = Server(tmp_path, config=models_config("abc", 'max_loaded_models = 2\nkeep_alive = "-1"\n'))
    try:
        assert s.loaded() == []
        chat(s, "a")
        chat(s, "b")
        assert s.loaded() == ["a", "b"]
        chat(s, "a")  # a is now the most recently used
        chat(s, "c")  # evicts b, the least recently used
        assert s.loaded() == ["a", "c"]
        assert loads(s, "load") == 3 and loads(s, "evict") == 1
        chat(s, "b")  # evicts a (c was used after a)
        assert s.loaded() == ["b", "c"]
        assert loads(s, "load") == 4 and loads(s, "evict") == 2
        assert s.metric("a3s_power_loaded_models") == 2
        assert s.get_json("/health")[1]["loaded_models"] == 2
        # keep_alive = "-1": the reaper (every 0.5 s) never unloads them.
        time.sleep(2)
        assert s.loaded() == ["b", "c"] and loads(s, "unload") == 0
        # DELETE unloads and deregisters.
        st, text, _ = s.request("DELETE", "/v1/models/c")
        assert st == 200 and json.loads(text)["deleted"] is True, text
        assert s.loaded() == ["b"] and loads(s, "unload") == 1
    finally:
        s.stop()


def test_a_busy_model_is_never_evicted(tmp_path):
    # One slot for models; a stream padded to >= 12 s keeps `a` busy while `b` is asked for.
    s = Server(tmp_path, config=models_config("ab", 'max_loaded_models = 1\nkeep_alive = "-1"\n'
                                                     'timing_padding = "12s"\n'))
    out = {}
    try:
        t = threading.Thread(target=lambda: out.update(r=s.post("/v1/chat/completions", {
            "model": "a", "max_tokens": 2, "stream": True, "messages": MSGS})))
        t.start()
        wait_for(lambda: s.loaded() == ["a"], "model a loaded by the stream")
        st, text = s.post("/v1/chat/completions", {"model": "b", "max_tokens": 2, "messages": MSGS})
        busy_while_streaming = t.is_alive()
        assert st == 503, text
        err = assert_openai_error(text, "server_error", "service_unavailable")
        assert "busy" in err["message"] and "max_loaded_models" in err["message"]
        assert busy_while_streaming, "the stream must still be open when b is refused"
        t.join(timeout=120)
        st, body = out["r"]
        assert st == 200 and sse_events(body)[-1] == "[DONE]"
        assert s.loaded() == ["a"]
        chat(s, "b")  # a is idle now: evicted
        assert s.loaded() == ["b"] and loads(s, "evict") == 1
    finally:
        s.stop()


def test_keep_alive_duration_unloads_idle_models(tmp_path):
    s = Server(tmp_path, config=models_config("a", 'keep_alive = "8s"\n'))
    try:
        chat(s, "a")
        t0 = time.monotonic()
        still = s.loaded()
        if time.monotonic() - t0 < 4:  # only meaningful when the check ran well inside 8 s
            assert still == ["a"], "unloaded before keep_alive"
        wait_for(lambda: s.loaded() == [], "the reaper to unload the idle model")
        assert loads(s, "unload") == 1 and s.metric("a3s_power_loaded_models") == 0
        assert "model unloaded (keep_alive)" in s.logs()
        chat(s, "a")  # autoloads again
        assert loads(s, "load") == 2
    finally:
        s.stop()


def test_keep_alive_zero_unloads_after_each_request(tmp_path):
    s = Server(tmp_path, config=models_config("a", 'keep_alive = "0"\n'))
    try:
        for i in range(1, 3):
            chat(s, "a")
            wait_for(lambda: s.loaded() == [], "unload after the request")
            assert loads(s, "load") == i and loads(s, "unload") == i
    finally:
        s.stop()


def test_layer_streaming_serves_the_same_tokens(tmp_path):
    """`layer_streaming = true` (what the operator sets for `layerStreaming`) changes how weights
    are paged, never the result: greedy output equals the resident model's."""
    outs = []
    for streaming in ("false", "true"):
        home = tmp_path / streaming
        home.mkdir()
        s = Server(home, config=models_config("a", f'layer_streaming = {streaming}\n'))
        try:
            text = chat(s, "a", max_tokens=12, temperature=0, seed=1)
            outs.append(json.loads(text)["choices"][0]["message"]["content"])
            assert f"layer_streaming={streaming}" in s.logs()
        finally:
            s.stop()
    assert outs[0] and outs[0] == outs[1], outs
