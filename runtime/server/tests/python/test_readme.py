"""Every `curl` in README.md runs, as written, against the real `a3s-power serve`.

The server is configured by the README's own quick-start heredoc (checked with `--check` first);
each ```sh block with a curl is run by bash with only the server's and the example file server's
addresses rewritten, and with `curl` wrapped to fail on an HTTP error and keep each answer apart.
`$HOME` points at a directory whose `.cache/a3s-power/models` holds the generated test models, so
the paths in the README resolve. Hugging Face-style pulls go to a local stand-in (`HF_ENDPOINT`)."""
import json
import os
import re
import subprocess

import jsonschema

from harness import BIN, MODELS, ROOT, FileServer, Server, clean_env, sse_events

README = ROOT / "README.md"
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
          "/v1/models/pull", "/v1/models/{*name}", "/v1/attestation", "/health", "/ready", "/metrics"}
WRAP = ('n=0\ncurl() { n=$((n+1)); command curl --fail-with-body -sS --max-time 600 "$@" > "$OUT/$n.out"; }\n')


def sh_blocks():
    return re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)


def check(block, name, out):
    """One curl's answer: JSON without an error, a complete SSE stream, or metrics."""
    if out.startswith("data:"):
        ev = sse_events(out)
        assert ev, name
        if isinstance(ev[-1], dict) and "status" in ev[-1]:  # a pull
            assert ev[-1]["status"] == "success", (name, ev)
        else:
            assert ev[-1] == "[DONE]", (name, ev)
            assert not any(isinstance(e, dict) and "error" in e for e in ev), (name, ev)
        return ev
    if out.startswith("# HELP"):
        assert "a3s_power_http_requests_total" in out, name
        return out
    doc = json.loads(out)
    assert isinstance(doc, dict) and doc.get("error") is None, (name, doc)
    if "status" in doc and "completed" in doc:  # a pull's status
        assert doc["status"] == "success", (name, doc)
    body = re.search(r"-d '(\{.*\})'", block, re.S)
    if body and doc.get("object") == "chat.completion":
        req = json.loads(body.group(1))
        choice = doc["choices"][0]
        if req.get("tool_choice") == "required":
            assert choice["finish_reason"] == "tool_calls", doc
            call = choice["message"]["tool_calls"][0]["function"]
            params = req["tools"][0]["function"]["parameters"]
            jsonschema.validate(json.loads(call["arguments"]), params)
        rf = req.get("response_format", {})
        if rf.get("type") == "json_schema" and choice["finish_reason"] == "stop":
            jsonschema.validate(json.loads(choice["message"]["content"]), rf["json_schema"]["schema"])
    return doc


def test_every_curl_in_the_readme_runs(tmp_path):
    blocks = [b for b in sh_blocks() if re.search(r"^\s*curl ", b, re.M)]
    (quick,) = [b for b in blocks if "a3s-power serve" in b]
    examples = [b for b in blocks if b is not quick]
    assert len(examples) >= 10, "the README lost its curl examples"
    home = tmp_path / "home"
    (home / ".cache" / "a3s-power").mkdir(parents=True)
    os.symlink(MODELS, home / ".cache" / "a3s-power" / "models")
    env = clean_env(HOME=str(home))
    # The quick start's configuration, expanded by bash as the README's heredoc is.
    heredoc = re.search(r"^cat > \S+ <<HCL\n(.*?\n)HCL$", quick, re.S | re.M).group(1)
    hcl = subprocess.run(["bash", "-c", "cat <<HCL\n" + heredoc + "HCL\n"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "port = 11434" in hcl
    files = FileServer()
    try:
        for f in set(re.findall(r"http://127\.0\.0\.1:8000/([\w.\-]+)", README.read_text())):
            files.add("/" + f, (MODELS / f).read_bytes())
        for owner, repo, quant in set(re.findall(r'"name": "([\w.\-]+)/([\w.\-]+):(\w+)"', README.read_text())):
            stem = repo.lower().removesuffix("-gguf")
            files.repos[f"{owner}/{repo}"] = [f"{stem}-q8_0.gguf", f"{stem}-{quant.lower()}.gguf"]
            files.add(f"/{owner}/{repo}/resolve/main/{stem}-q8_0.gguf", b"decoy")
            files.add(f"/{owner}/{repo}/resolve/main/{stem}-{quant.lower()}.gguf",
                      (MODELS / "tiny-qwen2-q4_k_m.gguf").read_bytes())
        s = Server(tmp_path, config=hcl.replace("port = 11434", "port = {port}"), wait=False,
                   env_extra={"A3S_TEE_SIMULATE": "1", "HF_ENDPOINT": files.url, "HOME": str(home)})
        try:
            cfg = tmp_path / "config.hcl"
            p = subprocess.run([str(BIN), "serve", "--config", str(cfg), "--check"], env=env,
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0 and p.stdout.startswith("configuration OK"), p.stdout + p.stderr
            s.wait_ready()
            quick_curls = "\n".join(line for line in quick.splitlines()
                                    if line.startswith(("curl ", "  -d")))
            answers = 0
            for i, block in enumerate([quick_curls] + examples):
                out = tmp_path / f"out{i}"
                out.mkdir()
                script = WRAP + block.replace("localhost:11434", f"127.0.0.1:{s.port}") \
                    .replace("127.0.0.1:8000", f"127.0.0.1:{files.port}")
                p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=dict(env, OUT=str(out)),
                                   capture_output=True, text=True, timeout=900)
                outs = sorted(out.iterdir(), key=lambda f: int(f.stem))
                assert p.returncode == 0, f"README example failed:\n{block}\n{p.stderr}\n" + \
                    "\n".join(f.read_text()[:2000] for f in outs)
                assert len(outs) == len(re.findall(r"^\s*curl ", block, re.M)), block
                for f in outs:
                    check(block, block.splitlines()[0], f.read_text())
                    answers += 1
            assert answers >= 15
            served = set(re.findall(r'route="([^"]+)",status="2\d\d"', s.metrics()))
            assert ROUTES <= served, f"the README exercises no successful call of {ROUTES - served}"
        finally:
            s.stop()
    finally:
        files.close()
