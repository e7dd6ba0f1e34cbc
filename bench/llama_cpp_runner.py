#!/usr/bin/env python3
"""llama.cpp's side of bench.py: one model, one setting, JSON on stdout.

Uses llama-cpp-python's low-level API (no Python per-token sampling overhead beyond an argmax)
so the numbers are llama-bench's: `pp` decodes a prompt of pseudo-random ids as one batch,
`tg` decodes tokens one at a time. `--repack 0` turns off llama.cpp's weight repacking
(`use_extra_bufts`), its faster prefill setting on this CPU (shared/PERF.md).
"""

import argparse
import ctypes
import json
import resource
import time

import llama_cpp as L
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--prompt-tokens", type=int, default=512)
ap.add_argument("--gen-tokens", type=int, default=128)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--repack", type=int, default=1)
a = ap.parse_args()

L.llama_backend_init()
mp = L.llama_model_default_params()
mp.use_extra_bufts = bool(a.repack)
model = L.llama_model_load_from_file(a.model.encode(), mp)
if not model:
    raise SystemExit(f"llama.cpp could not load {a.model}")
vocab = L.llama_model_get_vocab(model)
n_vocab = L.llama_vocab_n_tokens(vocab)
cp = L.llama_context_default_params()
cp.n_ctx = a.prompt_tokens + a.gen_tokens + 16
cp.n_batch = max(a.prompt_tokens, 1)
cp.n_ubatch = max(a.prompt_tokens, 1)
cp.n_threads = a.threads
cp.n_threads_batch = a.threads
ctx = L.llama_init_from_model(model, cp)

s = 0x2545F4914F6CDD1D
ids = []
for _ in range(a.prompt_tokens):
    s = (s * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
    ids.append((s >> 33) % n_vocab)


def decode(tokens):
    arr = (L.llama_token * len(tokens))(*tokens)
    if L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens))) != 0:
        raise SystemExit("llama_decode failed")
    ptr = L.llama_get_logits_ith(ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))


t = time.perf_counter()
tok = decode(ids)
pp_s = time.perf_counter() - t
t = time.perf_counter()
for _ in range(a.gen_tokens):
    tok = decode([tok])
tg_s = time.perf_counter() - t
print(json.dumps({
    "engine": "llama.cpp",
    "repack": bool(a.repack),
    "threads": a.threads,
    "pp_tok_s": a.prompt_tokens / pp_s,
    "tg_tok_s": a.gen_tokens / tg_s,
    "ttft_ms": pp_s * 1e3,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
