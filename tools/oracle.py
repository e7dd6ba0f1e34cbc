#!/usr/bin/env python3
"""Reference outputs from llama.cpp for picolm's oracle test.

For every (preset, type) model made by tools/gen-model.py this runs llama.cpp (through
llama-cpp-python, the same library the benchmarks use) on a fixed prompt and writes
`<out>/<preset>-<type>.json` with:

- `model_sha256`: the model file's digest, so a test knows its model is the one measured;
- `prompt`, `tokens`: the prompt and llama.cpp's token ids for it (BOS added);
- `last_logits`: every logit at the last prompt position;
- `positions`: for every prompt position, the top-8 (id, logit) and a strided sample of
  logits (every 16th id), which catches errors at early positions too;
- `greedy`: 64 greedily generated tokens, each with llama.cpp's top-1 logit and the margin
  between its top-1 and top-2 logits (where the margin is below the test's tolerance the two
  engines may legitimately pick different tokens).

    tools/oracle.py --models /tmp/models --out runtime/picolm/testdata/oracle

The checked-in fixtures are regenerated with this command; CI also runs it against freshly
generated models and compares picolm with the live result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away,"
N_GREEDY = 64
PRESETS = ["tiny-llama", "tiny-qwen2"]
TYPES = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "q4_k_m"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def r(x: float) -> float:
    return float(f"{float(x):.6g}")


def reference(model: Path) -> dict:
    from llama_cpp import Llama

    # The plain attention path (flash_attn off) keeps the f32 softmax; one thread and one
    # batch make the reduction order fixed.
    llm = Llama(
        model_path=str(model),
        n_ctx=256,
        n_batch=256,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        flash_attn=False,
        verbose=False,
    )
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    llm.eval(tokens)
    scores = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    positions = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:8]
        positions.append({"top": [[int(i), r(row[i])] for i in top], "strided": [r(x) for x in row[::16]]})
    greedy = []
    logits = scores[-1]
    for _ in range(N_GREEDY):
        order = np.argsort(-logits, kind="stable")[:2]
        tok = int(order[0])
        greedy.append({"token": tok, "top1": r(logits[order[0]]), "margin": r(logits[order[0]] - logits[order[1]])})
        llm.eval([tok])
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return {
        "model_sha256": sha256(model),
        "llama_cpp_python": __import__("llama_cpp").__version__,
        "prompt": PROMPT,
        "tokens": [int(t) for t in tokens],
        "n_vocab": int(scores.shape[1]),
        "last_logits": [r(x) for x in scores[-1]],
        "positions": positions,
        "greedy": greedy,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True, help="where gen-model.py writes the models")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--types", default=",".join(TYPES))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    types = args.types.split(",")
    for preset in args.presets.split(","):
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "gen-model.py"), "--preset", preset, "--out", str(args.models), "--types", ",".join(types)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for t in types:
            model = args.models / f"{preset}-{t}.gguf"
            ref = reference(model)
            out = args.out / f"{preset}-{t}.json"
            out.write_text(json.dumps(ref, separators=(",", ":")) + "\n")
            print(f"{out}: {len(ref['tokens'])} prompt tokens, greedy {[g['token'] for g in ref['greedy'][:8]]}...")


if __name__ == "__main__":
    main()
