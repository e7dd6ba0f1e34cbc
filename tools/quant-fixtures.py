#!/usr/bin/env python3
"""Writes the reference fixtures for picolm's quant tests (runtime/picolm/tests/quant_fixtures.rs).

For every format picolm dequantizes, it draws random block bytes (seeded numpy, with finite
f16 scale fields: normal, subnormal, zero and large values) and stores them together with
gguf-py's `gguf.quants.dequantize` output, so the Rust scalar dequantizers are checked against
an independent implementation on the same bytes. It also stores `gguf.quants.quantize(.., Q8_0)`
of random activations for the Q8_0 quantizer check.

Deterministic: the same gguf/numpy versions give the same bytes. Usage:

    pip install gguf numpy
    python3 tools/quant-fixtures.py            # writes runtime/picolm/testdata/quant/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

SEED = 0x5EED_0002
OUT = Path(__file__).resolve().parent.parent / "runtime" / "picolm" / "testdata" / "quant"

# Byte offsets of the f16 scale fields inside one block (ggml-common.h). Everything else in a
# block is quant bits or packed integer scales, for which every bit pattern is meaningful.
F16_FIELDS: dict[T, list[int]] = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
BLOCKS = {T.Q2_K: 4, T.Q3_K: 4, T.Q4_K: 4, T.Q5_K: 4, T.Q6_K: 4}  # others: 16 blocks


def random_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 values of mixed magnitude, as scales appear in real files and beyond."""
    kind = rng.integers(0, 8, size=n)
    v = rng.normal(0.0, 0.02, size=n)
    v = np.where(kind == 0, rng.normal(0.0, 3e-6, size=n), v)  # subnormal f16 range
    v = np.where(kind == 1, rng.normal(0.0, 50.0, size=n), v)
    v = np.where(kind == 2, 0.0, v)
    return v.astype(np.float16)


def special_f16() -> np.ndarray:
    return np.array(
        [0.0, -0.0, np.inf, -np.inf, 65504.0, -65504.0, 6e-8, -6e-8, 6.1035e-5, 1.0, -2.0],
        dtype=np.float16,
    )


def block_bytes(rng: np.random.Generator, qtype: T, nblocks: int) -> np.ndarray:
    _, size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        blocks[:, off : off + 2] = random_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return blocks.reshape(-1)


def float_bytes(rng: np.random.Generator, qtype: T, n: int) -> np.ndarray:
    if qtype == T.F32:
        v = rng.normal(0.0, 1.0, size=n).astype(np.float32)
        v[:4] = [np.inf, -np.inf, 1e-40, -0.0]
        return v.view(np.uint8)
    if qtype == T.F16:
        v = random_f16(rng, n)
        sp = special_f16()
        v[: len(sp)] = sp
        return v.view(np.uint8)
    # BF16: random finite bit patterns (exponent != 0xFF) plus signed zeros and infinities.
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bits = np.where((bits & 0x7F80) == 0x7F80, bits & 0xFF7F, bits).astype(np.uint16)
    bits[:4] = [0x0000, 0x8000, 0x7F80, 0xFF80]
    return bits.view(np.uint8)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    entries = []
    for qtype in [T.F32, T.F16, T.BF16, *F16_FIELDS]:
        block_len, _ = GGML_QUANT_SIZES[qtype]
        if block_len == 1:
            n = 512
            raw = float_bytes(rng, qtype, n)
        else:
            nblocks = BLOCKS.get(qtype, 16)
            n = nblocks * block_len
            raw = block_bytes(rng, qtype, nblocks)
        values = np.asarray(quants.dequantize(raw, qtype), dtype=np.float32).reshape(-1)
        assert values.size == n, (qtype.name, values.size, n)
        (OUT / f"{qtype.name}.bin").write_bytes(raw.tobytes())
        (OUT / f"{qtype.name}.f32").write_bytes(values.astype("<f4").tobytes())
        entries.append({"type": qtype.name, "n": n, "blocks": f"{qtype.name}.bin", "values": f"{qtype.name}.f32"})

    # Q8_0 quantization of activation-like rows: 64 blocks, one all-zero, one with a single
    # non-zero value, the rest normal with per-block magnitudes spread over 1e-3 .. 1e2.
    x = rng.normal(0.0, 1.0, size=(64, 32)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-3, 2, size=(64, 1))).astype(np.float32)
    x[0] = 0.0
    x[1] = 0.0
    x[1, 7] = -3.5
    q = quants.quantize(x, T.Q8_0).reshape(-1)
    (OUT / "q8_0_input.f32").write_bytes(x.astype("<f4").tobytes())
    (OUT / "q8_0_gguf.bin").write_bytes(q.tobytes())

    import gguf  # noqa: PLC0415 - only for the version stamp

    manifest = {
        "generator": "tools/quant-fixtures.py",
        "seed": SEED,
        "gguf": getattr(gguf, "__version__", None) or _pkg_version("gguf"),
        "numpy": np.__version__,
        "dequantize": entries,
        "quantize_q8_0": {"n": int(x.size), "input": "q8_0_input.f32", "output": "q8_0_gguf.bin"},
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(entries)} formats + q8_0 quantization to {OUT} ({total} bytes)", file=sys.stderr)
    return 0


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
