"""429s on `/v1/*`: the concurrency cap (`max_concurrent_requests`, counting a streaming response
until its last byte) and the token bucket (`rate_limit_rps`), each with the OpenAI error body and
`Retry-After`; past the cap under load, every client gets either its complete, correct stream or
a clean 429. Held pulls from a local file server keep requests in flight for as long as the test
needs, so the cap is exercised without timing guesses."""
import json
import threading

import openai
import pytest

from harness import MODEL, FileServer, Server, assert_openai_error, sse_events, wait_for

MSGS = [{"role": "user", "content": "hi"}]
EXPECTED_429 = {"error": {"message": "too many concurrent requests; retry later",
                          "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}


def test_concurrency_cap_counts_open_streams(tmp_path):
    files = FileServer()
    s = Server(tmp_path, extra="max_concurrent_requests = 2\n")
    threads, out = [], {}
    try:
        data = MODEL.read_bytes()
        for i in range(2):
            path = f"/held{i}.gguf"
            files.add(path, data)
            files.hold(path)
            t = threading.Thread(target=lambda i=i, path=path: out.update({i: s.request(
                "POST", "/v1/models/pull", {"name": f"held/{i}", "url": files.url + path})}))
            t.start()
            threads.append(t)
        # Both pull streams are open (their downloads started) and hold the two permits.
        wait_for(lambda: all(files.requests(f"/held{i}.gguf") for i in range(2)), "two pulls in flight")
        st, text, headers = s.request("POST", "/v1/chat/completions",
                                      {"model": "tiny", "max_tokens": 2, "messages": MSGS})
        assert st == 429, text
        assert json.loads(text) == EXPECTED_429
        assert headers.get("retry-after", headers.get("Retry-After")) == "1"
        st, text, _ = s.request("GET", "/v1/models")
        assert st == 429
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="tiny", max_tokens=2, messages=MSGS)
        assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
        # Health and metrics are not under /v1 and stay reachable.
        assert s.request("GET", "/health")[0] == 200
        assert s.metric("a3s_power_rate_limited_total", {"reason": "concurrency"}) >= 3
        for i in range(2):
            files.release(f"/held{i}.gguf")
        for t in threads:
            t.join(timeout=180)
        for i in range(2):
            st, body, _ = out[i]
            assert st == 200 and sse_events(body)[-1]["status"] == "success", body
        # The permits came back with the ends of the streams.
        st, text = s.post("/v1/chat/completions", {"model": "tiny", "max_tokens": 2, "messages": MSGS})
        assert st == 200, text
    finally:
        files.close()  # releases held transfers
        s.stop()


def test_past_the_cap_every_client_gets_its_stream_or_a_clean_429(tmp_path):
    # Streams padded to >= 3 s overlap for sure; 12 clients released together against a cap of 4.
    s = Server(tmp_path, extra='max_concurrent_requests = 4\ntiming_padding = "3s"\n')
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        prompts = [f"client {i % 3}" for i in range(12)]
        reference = {}
        for p in set(prompts):
            r = client.chat.completions.create(model="tiny", max_tokens=6, temperature=0,
                                               messages=[{"role": "user", "content": p}])
            reference[p] = r.choices[0].message.content
        barrier = threading.Barrier(12)
        results = [None] * 12

        def one(i):
            barrier.wait()
            try:
                chunks = list(client.chat.completions.create(
                    model="tiny", max_tokens=6, temperature=0, stream=True,
                    stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": prompts[i]}]))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                results[i] = ("ok", text, chunks[-1].usage.completion_tokens)
            except openai.RateLimitError as e:
                results[i] = ("429", e.body, e.response.headers.get("retry-after"))
            except Exception as e:
                results[i] = ("other", repr(e), None)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert all(r is not None for r in results), "a client got no answer"
        kinds = [r[0] for r in results]
        assert "other" not in kinds, results
        assert 1 <= kinds.count("ok") and 1 <= kinds.count("429"), kinds
        for i, (kind, a, b) in enumerate(results):
            if kind == "ok":
                assert a == reference[prompts[i]], "a stream carried another request's text"
            else:
                assert a == EXPECTED_429["error"] and b == "1", (a, b)
    finally:
        s.stop()


def test_rate_limit_429(tmp_path):
    s = Server(tmp_path, extra="rate_limit_rps = 1\n")
    try:
        answers = [s.request("GET", "/v1/models") for _ in range(10)]
        codes = [a[0] for a in answers]
        assert codes[0] == 200 and 429 in codes, codes
        st, text, headers = answers[codes.index(429)]
        err = assert_openai_error(text, "rate_limit_error", "rate_limit_exceeded")
        assert err["message"] == "rate limit exceeded; retry later"
        assert headers.get("retry-after", headers.get("Retry-After")) == "1"
        assert s.metric("a3s_power_rate_limited_total", {"reason": "rate"}) == codes.count(429)
        assert all(s.request("GET", "/health")[0] == 200 for _ in range(5)), "/health is not limited"
        wait_for(lambda: s.request("GET", "/v1/models")[0] == 200, "the bucket to refill", interval=0.5)
    finally:
        s.stop()
