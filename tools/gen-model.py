#!/usr/bin/env python3
"""Write deterministic random-weight GGUF models for tests and benchmarks.

No weights are downloaded: every tensor is drawn from a seeded numpy generator, and the
tokenizer is copied from one of the vocab-only GGUF files that llama.cpp ships for its own
tokenizer tests (runtime/picolm/testdata/vocab, see PROVENANCE.md there), optionally cut down
to a smaller vocabulary so test models stay small. Quantized variants are produced by
llama.cpp's own quantizer through llama-cpp-python (`llama_model_quantize`).

    tools/gen-model.py --preset tiny-llama --out models/ --types f32,q8_0,q4_k_m
    tools/gen-model.py --preset llama1b --out models/ --types q4_k_m,q8_0

Output files are named `<preset>-<type>.gguf`. The same preset, seed and types always give
byte-identical files; existing outputs are kept unless --force is given.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("gen-model.py needs the `gguf` package: pip install gguf numpy llama-cpp-python")

ROOT = Path(__file__).resolve().parent.parent
VOCAB_DIR = ROOT / "runtime" / "picolm" / "testdata" / "vocab"


@dataclass(frozen=True)
class Preset:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    vocab: str  # vocab-only GGUF in VOCAB_DIR
    vocab_size: int | None  # cut the vocabulary down to this many tokens (None: keep all)
    n_ctx: int = 2048
    tied: bool = False  # no output.weight: the LM head is the token embedding
    rope_theta: float = 10000.0


PRESETS = {
    # Small enough to generate and run in seconds, shaped so every K-quant applies
    # (rows are multiples of 256) and GQA is exercised.
    "tiny-llama": Preset("llama", 256, 2, 4, 2, 768, "ggml-vocab-llama-spm.gguf", 4096, n_ctx=512),
    "tiny-qwen2": Preset(
        "qwen2", 256, 2, 4, 2, 768, "ggml-vocab-qwen2.gguf", 4096, n_ctx=512, tied=True, rope_theta=1000000.0
    ),
    # Seeds for the GGUF reader's fuzz corpus: every structure of a real file in a few KiB.
    "micro-llama": Preset("llama", 32, 1, 2, 1, 64, "ggml-vocab-llama-spm.gguf", 300, n_ctx=64),
    "micro-qwen2": Preset("qwen2", 32, 1, 2, 1, 64, "ggml-vocab-qwen2.gguf", 300, n_ctx=64, tied=True),
    # Large enough that weights dominate the resident set: the layer-streaming RSS test.
    "small-llama": Preset("llama", 1024, 8, 16, 4, 2816, "ggml-vocab-llama-spm.gguf", None),
    # The performance anchors of shared/PERF.md.
    "llama1b": Preset("llama", 2048, 22, 32, 4, 5632, "ggml-vocab-llama-spm.gguf", None),
    "qwen05b": Preset(
        "qwen2", 896, 24, 14, 2, 4864, "ggml-vocab-llama-spm.gguf", None, n_ctx=4096, tied=True, rope_theta=1000000.0
    ),
}

# Output type -> (llama_ftype name, pure). "pure" quantizes every 2-D tensor to the one type,
# so a test of that format really exercises it; the *_M mixes are what users download.
TYPES = {
    "f32": None,
    "f16": ("LLAMA_FTYPE_MOSTLY_F16", True),
    "bf16": ("LLAMA_FTYPE_MOSTLY_BF16", True),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", True),
    "q4_1": ("LLAMA_FTYPE_MOSTLY_Q4_1", True),
    "q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", True),
    "q5_1": ("LLAMA_FTYPE_MOSTLY_Q5_1", True),
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", True),
    "q4_k": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", True),
    "q5_k": ("LLAMA_FTYPE_MOSTLY_Q5_K_S", True),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", True),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", False),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", False),
}


def read_vocab(path: Path, keep: int | None) -> dict:
    """Tokenizer metadata from a vocab-only GGUF, optionally cut to `keep` tokens.

    Cutting keeps the first `keep` ordinary tokens, re-appends the control tokens (BOS, EOS,
    chat markers) after them with new ids, and keeps only the BPE merges whose parts and
    result all survive, so the smaller tokenizer is still self-consistent.
    """
    r = gguf.GGUFReader(str(path))
    f = r.fields

    def scalar(k):
        return f[k].contents() if k in f else None

    def array(k):
        return list(f[k].contents()) if k in f else None

    model = scalar("tokenizer.ggml.model")
    tokens = array("tokenizer.ggml.tokens")
    types = array("tokenizer.ggml.token_type")
    scores = array("tokenizer.ggml.scores")
    merges = array("tokenizer.ggml.merges")
    special = {k: scalar(f"tokenizer.ggml.{k}") for k in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id")}
    out = {
        "model": model,
        "pre": scalar("tokenizer.ggml.pre"),
        "add_bos": scalar("tokenizer.ggml.add_bos_token"),
        "add_eos": scalar("tokenizer.ggml.add_eos_token"),
        "chat_template": scalar("tokenizer.chat_template"),
    }
    if keep is not None and keep < len(tokens):
        control = [i for i, t in enumerate(types) if t == 3 and i >= keep and not tokens[i].startswith("[PAD")]
        ids = list(range(keep)) + control
        remap = {old: new for new, old in enumerate(ids)}
        tokens = [tokens[i] for i in ids]
        types = [types[i] for i in ids]
        if scores is not None:
            scores = [scores[i] for i in ids]
        if merges is not None:
            vocab = set(tokens)
            kept = []
            for m in merges:
                a, _, b = m.partition(" ")
                if a in vocab and b in vocab and (a + b) in vocab:
                    kept.append(m)
            merges = kept
        special = {k: (remap.get(v) if v is not None else None) for k, v in special.items()}
    out.update(tokens=tokens, types=types, scores=scores, merges=merges, special=special)
    return out


def write_base(preset: Preset, seed: int, path: Path) -> None:
    """The F32 model every other type is quantized from."""
    p = preset
    vocab = read_vocab(VOCAB_DIR / p.vocab, p.vocab_size)
    n_vocab = len(vocab["tokens"])
    rng = np.random.default_rng(seed)
    head_dim = p.n_embd // p.n_head
    kv_dim = p.n_head_kv * head_dim

    w = gguf.GGUFWriter(str(path), p.arch)
    w.add_name(f"a3s-power random {p.arch} ({p.n_embd}x{p.n_layer}, seed {seed})")
    w.add_context_length(p.n_ctx)
    w.add_embedding_length(p.n_embd)
    w.add_block_count(p.n_layer)
    w.add_feed_forward_length(p.n_ff)
    w.add_head_count(p.n_head)
    w.add_head_count_kv(p.n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(p.rope_theta)
    w.add_layer_norm_rms_eps(1e-6 if p.arch == "qwen2" else 1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)
    w.add_tokenizer_model(vocab["model"])
    if vocab["pre"]:
        w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    if vocab["scores"] is not None:
        w.add_token_scores(vocab["scores"])
    if vocab["merges"] is not None:
        w.add_token_merges(vocab["merges"])
    s = vocab["special"]
    if s["bos_token_id"] is not None:
        w.add_bos_token_id(s["bos_token_id"])
    if s["eos_token_id"] is not None:
        w.add_eos_token_id(s["eos_token_id"])
    if s["unknown_token_id"] is not None:
        w.add_unk_token_id(s["unknown_token_id"])
    if s["padding_token_id"] is not None:
        w.add_pad_token_id(s["padding_token_id"])
    if vocab["add_bos"] is not None:
        w.add_add_bos_token(bool(vocab["add_bos"]))
    if vocab["add_eos"] is not None:
        w.add_add_eos_token(bool(vocab["add_eos"]))
    if vocab["chat_template"]:
        w.add_chat_template(vocab["chat_template"])

    # Scales chosen so the random network is "peaky": attention is not uniform and the top
    # logits are well separated, which gives the greedy-agreement test something to check.
    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, p.n_embd, 0.3))
    for i in range(p.n_layer):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", norm(p.n_embd))
        w.add_tensor(b + "attn_q.weight", mat(p.n_embd, p.n_embd, 0.08))
        w.add_tensor(b + "attn_k.weight", mat(kv_dim, p.n_embd, 0.08))
        w.add_tensor(b + "attn_v.weight", mat(kv_dim, p.n_embd, 0.08))
        if p.arch == "qwen2":
            w.add_tensor(b + "attn_q.bias", mat(1, p.n_embd, 0.1).reshape(-1))
            w.add_tensor(b + "attn_k.bias", mat(1, kv_dim, 0.1).reshape(-1))
            w.add_tensor(b + "attn_v.bias", mat(1, kv_dim, 0.1).reshape(-1))
        w.add_tensor(b + "attn_output.weight", mat(p.n_embd, p.n_embd, 0.15))
        w.add_tensor(b + "ffn_norm.weight", norm(p.n_embd))
        w.add_tensor(b + "ffn_gate.weight", mat(p.n_ff, p.n_embd, 0.08))
        w.add_tensor(b + "ffn_up.weight", mat(p.n_ff, p.n_embd, 0.08))
        w.add_tensor(b + "ffn_down.weight", mat(p.n_embd, p.n_ff, 0.12))
    w.add_tensor("output_norm.weight", norm(p.n_embd))
    if not p.tied:
        w.add_tensor("output.weight", mat(n_vocab, p.n_embd, 0.3))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, ftype_name: str, pure: bool, threads: int) -> None:
    try:
        import llama_cpp
    except ImportError:
        sys.exit("quantized variants need llama-cpp-python: pip install llama-cpp-python")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.pure = pure
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({ftype_name}) failed with {rc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--types", default="f32", help=f"comma-separated, of: {','.join(TYPES)}")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()

    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in TYPES:
            sys.exit(f"unknown type {t!r}; known: {', '.join(TYPES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    preset = PRESETS[args.preset]
    stem = args.preset if args.seed == 42 else f"{args.preset}-s{args.seed}"
    base = args.out / f"{stem}-f32.gguf"
    wanted = [(t, args.out / f"{stem}-{t}.gguf") for t in types]
    if not args.force and all(p.exists() for _, p in wanted):
        for _, p in wanted:
            print(p)
        return
    # Write to a temporary name and rename, so an interrupted run never leaves a half file.
    if args.force or not base.exists():
        with tempfile.NamedTemporaryFile(dir=args.out, suffix=".tmp", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            write_base(preset, args.seed, tmp_path)
            tmp_path.replace(base)
        finally:
            tmp_path.unlink(missing_ok=True)
    for t, path in wanted:
        if TYPES[t] is None or (path.exists() and not args.force):
            print(path)
            continue
        ftype, pure = TYPES[t]
        tmp_path = path.with_suffix(".tmp")
        try:
            quantize(base, tmp_path, ftype, pure, args.threads)
            tmp_path.replace(path)
        finally:
            tmp_path.unlink(missing_ok=True)
        print(path)
    if "f32" not in types and preset.n_embd >= 1024:
        base.unlink(missing_ok=True)  # the big F32 base is only a step


if __name__ == "__main__":
    main()
