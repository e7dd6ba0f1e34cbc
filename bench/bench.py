#!/usr/bin/env python3
"""picolm vs llama.cpp: same GGUF file, same thread count, one run, ratios.

Each configuration runs both engines back to back in fresh processes (so peak RSS is each
engine's own), alternating which goes first, `--reps` times; the best of the reps is kept
for each engine, which is how llama-bench-style numbers are usually compared on a noisy
shared machine. llama.cpp is measured with weight repacking on and off and its better
figure is used for each column (repack off is its faster prefill here, on its faster decode).

    bench/bench.py --models ~/.cache/a3s-power/models            # llama1b-like and qwen0.5b-like
    bench/bench.py --smoke --models ~/.cache/a3s-power/models    # tiny model, seconds; CI

The smoke run checks that the harness works and prints ratios; it never fails on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("PICOLM_BIN") or ROOT / "target" / "release" / "a3s-power")


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def picolm(model: Path, pp: int, tg: int, threads: int) -> dict:
    return run_json([str(BIN), "bench", "--model", str(model), "--prompt-tokens", str(pp), "--gen-tokens", str(tg), "--threads", str(threads)])


def llama_cpp(model: Path, pp: int, tg: int, threads: int, repack: int) -> dict:
    return run_json([sys.executable, str(ROOT / "bench" / "llama_cpp_runner.py"), "--model", str(model), "--prompt-tokens", str(pp), "--gen-tokens", str(tg), "--threads", str(threads), "--repack", str(repack)])


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", default=None, help="comma-separated thread counts")
    ap.add_argument("--set", default=None, help="comma-separated preset-type names, e.g. llama1b-q4_k_m")
    args = ap.parse_args()
    if args.smoke:
        models, pp, tg, reps, threads = ["tiny-llama-q4_k_m", "tiny-qwen2-q8_0"], 64, 16, 1, [2]
    else:
        models, pp, tg, reps, threads = ["llama1b-q4_k_m", "llama1b-q8_0", "qwen05b-q4_k_m", "qwen05b-q8_0"], 512, 128, 2, [1, 2]
    if args.set:
        models = args.set.split(",")
    if args.reps:
        reps = args.reps
    if args.threads:
        threads = [int(t) for t in args.threads.split(",")]
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: cargo build --release -p a3s-power")
    for name in models:
        preset, ty = name.rsplit("-", 1) if not name.endswith("_k_m") else (name[: -len("-q4_k_m")], name[-len("q4_k_m"):])
        subprocess.run([sys.executable, str(ROOT / "tools" / "gen-model.py"), "--preset", preset, "--types", ty, "--out", str(args.models)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus; pp{pp}/tg{tg}; best of {reps}; llama.cpp = llama-cpp-python " + __import__("llama_cpp").__version__)
    hdr = f"{'model':<18} {'thr':>3} | {'pp picolm':>9} {'pp llama':>9} {'ratio':>6} | {'tg picolm':>9} {'tg llama':>9} {'ratio':>6} | {'ttft ratio':>10} | {'RSS picolm':>10} {'RSS llama':>10}"
    print(hdr)
    print("-" * len(hdr))
    for name in models:
        model = args.models / f"{name}.gguf"
        for t in threads:
            ours, theirs = [], []
            for r in range(reps):
                order = [0, 1] if r % 2 == 0 else [1, 0]
                for o in order:
                    if o == 0:
                        ours.append(picolm(model, pp, tg, t))
                    else:
                        theirs.append(llama_cpp(model, pp, tg, t, 1))
                        theirs.append(llama_cpp(model, pp, tg, t, 0))
            best = lambda xs, k: max(x[k] for x in xs)
            pp_o, pp_l = best(ours, "pp_tok_s"), best(theirs, "pp_tok_s")
            tg_o, tg_l = best(ours, "tg_tok_s"), best(theirs, "tg_tok_s")
            ttft_o, ttft_l = min(x["ttft_ms"] for x in ours), min(x["ttft_ms"] for x in theirs)
            rss_o = min(x["peak_rss_bytes"] for x in ours) / 2**20
            rss_l = min(x["peak_rss_bytes"] for x in theirs if x["repack"]) / 2**20
            print(f"{name:<18} {t:>3} | {pp_o:>9.1f} {pp_l:>9.1f} {pp_o / pp_l:>5.2f}x | {tg_o:>9.1f} {tg_l:>9.1f} {tg_o / tg_l:>5.2f}x | {ttft_o / ttft_l:>9.2f}x | {rss_o:>8.0f}Mi {rss_l:>8.0f}Mi")
    print("ratios are picolm / llama.cpp (higher is better for tok/s; ttft lower is better); llama.cpp RSS with repack (its default)")


if __name__ == "__main__":
    main()
