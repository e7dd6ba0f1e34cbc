#!/usr/bin/env python3
"""picolm vs llama.cpp: same GGUF file, same thread count, one run, ratios.

Each configuration runs both engines back to back in fresh processes (so peak RSS is each
engine's own), alternating which goes first, `--reps` times; the best of the reps is kept
for each engine, which is how llama-bench-style numbers are usually compared on a noisy
shared machine. llama.cpp is measured with weight repacking on and off and its better
figure is used for each column (repack off is its faster prefill here, on its faster decode).

    bench/bench.py --models ~/.cache/a3s-power/models            # llama1b-like and qwen0.5b-like
    bench/bench.py --smoke --models ~/.cache/a3s-power/models    # tiny model, seconds; CI

Three tables (--tables picks some):
  main       picolm vs llama.cpp: prefill, decode, TTFT, peak RSS.
  streaming  picolm resident vs --layer-streaming, both with a 2048-position KV cache: decode
             tok/s, their ratio and each one's peak RSS (same invocation, alternating order).
  multi      picolm decoding 1 and 4 sequences together: aggregate decode tok/s and the ratio.

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
BIN = Path(os.environ.get("PICOLM_BIN") or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release" / "a3s-power")


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def picolm(model: Path, pp: int, tg: int, threads: int, *extra: str) -> dict:
    return run_json([str(BIN), "bench", "--model", str(model), "--prompt-tokens", str(pp), "--gen-tokens", str(tg), "--threads", str(threads), *extra])


STREAM_CTX = 2048
MULTI_SEQS = 4


def best_of(reps: int, runs: dict) -> dict:
    """Run each named configuration `reps` times, alternating which goes first; keep every result."""
    out = {k: [] for k in runs}
    names = list(runs)
    for r in range(reps):
        for k in names if r % 2 == 0 else names[::-1]:
            out[k].append(runs[k]())
    return out


def streaming_table(models: list[str], root: Path, threads: list[int], pp: int, tg: int, reps: int) -> None:
    print(f"\nlayer streaming (picolm, KV cache {STREAM_CTX} positions, pp{pp}/tg{tg}; best of {reps}, alternating)")
    hdr = f"{'model':<18} {'thr':>3} | {'tg resident':>11} {'tg stream':>9} {'ratio':>6} | {'RSS resident':>12} {'RSS stream':>10} | {'huge pages':>10}"
    print(hdr)
    print("-" * len(hdr))
    ctx = ["--ctx-size", str(STREAM_CTX)]
    for name in models:
        model = root / f"{name}.gguf"
        for t in threads:
            res = best_of(reps, {
                "resident": lambda: picolm(model, pp, tg, t, *ctx),
                "stream": lambda: picolm(model, pp, tg, t, *ctx, "--layer-streaming"),
            })
            tg_r, tg_s = (max(x["tg_tok_s"] for x in res[k]) for k in ("resident", "stream"))
            rss_r, rss_s = (max(x["peak_rss_bytes"] for x in res[k]) / 2**20 for k in ("resident", "stream"))
            huge = min((x.get("huge_page_share") for x in res["stream"] if x.get("huge_page_share") is not None), default=None)
            huge_s = "n/a" if huge is None else f"{huge * 100:.0f}%"
            print(f"{name:<18} {t:>3} | {tg_r:>11.1f} {tg_s:>9.1f} {tg_s / tg_r:>5.2f}x | {rss_r:>10.0f}Mi {rss_s:>8.0f}Mi | {huge_s:>10}")
    print("ratio is streaming / resident decode tok/s; RSS is the worse (higher) peak of the reps; huge pages: share of the file mapped as 2 MiB pages")


def multi_table(models: list[str], root: Path, threads: list[int], pp: int, tg: int, reps: int) -> None:
    print(f"\nmulti-sequence decode (picolm, {MULTI_SEQS} sequences vs 1, pp{pp}/tg{tg} per sequence; best of {reps}, alternating)")
    hdr = f"{'model':<18} {'thr':>3} | {'tg 1 seq':>9} {f'tg {MULTI_SEQS} seqs':>10} {'ratio':>6}"
    print(hdr)
    print("-" * len(hdr))
    for name in models:
        model = root / f"{name}.gguf"
        for t in threads:
            res = best_of(reps, {
                1: lambda: picolm(model, pp, tg, t, "--sequences", "1"),
                MULTI_SEQS: lambda: picolm(model, pp, tg, t, "--sequences", str(MULTI_SEQS)),
            })
            one, many = (max(x["tg_tok_s"] for x in res[k]) for k in (1, MULTI_SEQS))
            print(f"{name:<18} {t:>3} | {one:>9.1f} {many:>10.1f} {many / one:>5.2f}x")
    print(f"tok/s is aggregate over the sequences; ratio is {MULTI_SEQS} sequences / 1 (the issue's bar: 2.5x)")


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
    ap.add_argument("--tables", default="main,streaming,multi", help="comma-separated: main, streaming, multi")
    args = ap.parse_args()
    tables = set(args.tables.split(","))
    if tables - {"main", "streaming", "multi"}:
        sys.exit(f"unknown table(s): {', '.join(sorted(tables - {'main', 'streaming', 'multi'}))}")
    if args.smoke:
        models, pp, tg, reps, threads, multi_pp = ["tiny-llama-q4_k_m", "tiny-qwen2-q8_0"], 64, 16, 1, [2], 16
    else:
        models, pp, tg, reps, threads, multi_pp = ["llama1b-q4_k_m", "llama1b-q8_0", "qwen05b-q4_k_m", "qwen05b-q8_0"], 512, 128, 2, [1, 2], 64
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

    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus; 1-min load {os.getloadavg()[0]:.2f}")
    if "main" in tables:
        main_table(models, args.models, threads, pp, tg, reps)
    if "streaming" in tables:
        streaming_table(models, args.models, threads, pp, tg, reps)
    if "multi" in tables:
        multi_table(models, args.models, threads, multi_pp, tg, reps)


def main_table(models: list[str], root: Path, threads: list[int], pp: int, tg: int, reps: int) -> None:
    print(f"\npicolm vs llama.cpp (pp{pp}/tg{tg}; best of {reps}; llama.cpp = llama-cpp-python " + __import__("llama_cpp").__version__ + ")")
    hdr = f"{'model':<18} {'thr':>3} | {'pp picolm':>9} {'pp llama':>9} {'ratio':>6} | {'tg picolm':>9} {'tg llama':>9} {'ratio':>6} | {'ttft ratio':>10} | {'RSS picolm':>10} {'RSS llama':>10}"
    print(hdr)
    print("-" * len(hdr))
    for name in models:
        model = root / f"{name}.gguf"
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
