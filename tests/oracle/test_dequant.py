#!/usr/bin/env python3
"""Dequantization is bit-exact with gguf-py (gguf.quants.dequantize), the independent oracle.

For every supported type, random blocks (raw random bytes, which include Inf/NaN scales, and
blocks with sane fp16 scales, plus gguf-py's own quantization of random floats where it can
quantize) are written to a GGUF file; the C kernel and its reference twin dequantize every row
(tests/unit/dequant_dump.c) and the f32 results must equal gguf-py's bit for bit (NaN only
where gguf-py has NaN). Also checks our block sizes against gguf-py's GGML_QUANT_SIZES.
"""
import subprocess

import numpy as np
import gguf

from lsoracle import BUILD, check, done, tmpdir
from fixtures import random_k_blocks

Q = gguf.GGMLQuantizationType
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K]
ROWS = 7


def blocks_for(qt, rng):
    block, size = gguf.GGML_QUANT_SIZES[qt]
    cols = block * 5 if block > 1 else 333  # odd row lengths for the plain float types
    raw = rng.integers(0, 256, size=(ROWS, cols // block * size), dtype=np.uint8)
    if qt in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        sane = random_k_blocks(qt, ROWS, cols, rng)
    elif qt in (Q.F32, Q.F16, Q.BF16):
        x = rng.normal(0, 3, size=(ROWS, cols)).astype(np.float32)
        sane = gguf.quants.quantize(x, qt) if qt == Q.BF16 else x.astype(np.float16 if qt == Q.F16 else np.float32).view(np.uint8)
    else:
        sane = gguf.quants.quantize(rng.normal(0, 1, size=(ROWS, cols)).astype(np.float32), qt)
    return [("random", raw), ("sane", sane.reshape(ROWS, -1))]


def main():
    rng = np.random.default_rng(1234)
    d = tmpdir()
    path = str(d / "blocks.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    expect = {}
    for qt in TYPES:
        for kind, raw in blocks_for(qt, rng):
            name = f"{qt.name}.{kind}"
            w.add_tensor(name, raw, raw_dtype=qt)
            expect[name] = gguf.quants.dequantize(raw, qt).astype(np.float32).reshape(-1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for variant in ("cpu", "ref"):
        out = d / variant
        out.mkdir()
        args = [str(BUILD / "tests" / "dequant_dump"), path, str(out)] + (["--ref"] if variant == "ref" else [])
        p = subprocess.run(args, capture_output=True, text=True)
        check(p.returncode == 0, f"dequant_dump failed: {p.stderr}")
        for name, want in expect.items():
            got = np.fromfile(out / f"{name}.f32", dtype=np.float32)
            check(got.shape == want.shape, f"{variant} {name}: {got.shape} values, expected {want.shape}")
            nan_w, nan_g = np.isnan(want), np.isnan(got)
            check(np.array_equal(nan_w, nan_g), f"{variant} {name}: NaN positions differ")
            same = got.view(np.uint32)[~nan_w] == want.view(np.uint32)[~nan_w]
            bad = np.flatnonzero(~same)
            check(bad.size == 0, f"{variant} {name}: {bad.size} values differ, first at {bad[:1]}: "
                  f"{got[~nan_w][bad[:1]]} vs {want[~nan_w][bad[:1]]}")
    # The block table in base/dtype.c against gguf-py's.
    p = subprocess.run([str(BUILD / "tests" / "test_base"), "--dtype-table"], capture_output=True, text=True)
    check(p.returncode == 0, f"test_base --dtype-table failed: {p.stderr}")
    ours = {int(l.split()[0]): (int(l.split()[2]), int(l.split()[3])) for l in p.stdout.splitlines()}
    for t, (block, size) in gguf.GGML_QUANT_SIZES.items():
        if t == Q.Q8_1:
            continue  # gguf-py keeps the old 40-byte layout; ggml's block_q8_1 is 36 bytes
        if int(t) in ours:
            check(ours[int(t)] == (block, size), f"{t.name}: ours {ours[int(t)]}, gguf-py {(block, size)}")
    done("test_dequant")


if __name__ == "__main__":
    main()
