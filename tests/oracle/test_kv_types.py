#!/usr/bin/env python3
"""The paged KV cache's element types end to end, against the float64 numpy reference
(ref_llama.py) on tiny random llama models (fixtures.py), over sequences of several 64-token
pages (prefill in odd micro-batches, then token-by-token decode), full attention and a
StreamingLLM stream whose window pages are evicted:

- f32 (`--kv-type f32`): logits within 1e-4 relative of the reference, as test_forward.py;
- bf16 and q8_0: the reference with its keys and values rounded as the cache stores them
  (bf16: round to nearest even; q8_0: blocks of 32 along the head dimension, keys in the model
  file's adjacent-pair order, d = fp16(amax/127), q = round-half-even(x·127/amax)). Both sides
  round the same way, but a value within an f32 ulp of a rounding boundary may round either
  way (as in test_forward.py's 8-bit activations), so: the median logit agrees to 1e-4, and
  the worst is well below the gap the rounding itself makes (reference rounded vs not), which
  a cache that ignored its type would show.

The error measure is test_forward.py's: |a - b| / (|b| + rms(b)) per logit.
"""
import numpy as np

from fixtures import write_tiny_llama
from lsoracle import check, done, tmpdir
from ref_llama import forward
from test_forward import engine_logits, rel_err


def bf16(x, is_key):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16  # round to nearest even
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def q8_0(x, is_key):
    hd = x.shape[-1]
    half = hd // 2
    # blocks are taken in the cache's order: keys in the model file's adjacent pairs
    perm = np.array([j for i in range(half) for j in (i, i + half)]) if is_key else np.arange(hd)
    xg = np.asarray(x, dtype=np.float32)[..., perm].reshape(*x.shape[:-1], hd // 32, 32)
    amax = np.abs(xg).max(axis=-1, keepdims=True)
    idv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint((xg * idv).astype(np.float32))
    d = (amax / np.float32(127)).astype(np.float32).astype(np.float16).astype(np.float64)
    out = np.empty(x.shape)
    out[..., perm] = (q * d).reshape(*x.shape[:-1], hd)
    return out


def per_logit(a, b):
    rms = np.sqrt(np.mean(b * b))
    return np.abs(a - b) / (np.abs(b) + rms)


def run(name, work, model_kw, n, args, rule=None):
    path = work / f"{name.replace(' ', '_')}.gguf"
    model = write_tiny_llama(str(path), **model_kw)
    tokens = np.random.default_rng(7).integers(0, model.hp["vocab"], size=n).tolist()
    ref = forward(model, tokens, rule=rule)
    ours = engine_logits(path, tokens, model.hp["vocab"], work, *args, "--kv-type", "f32")
    e = rel_err(ours, ref)
    check(e < 1e-4, f"{name} f32: logits differ from the reference by {e:.2e} (tolerance 1e-4)")
    line = f"  {name:20s} f32 {e:.1e}"
    for t, rnd in (("bf16", bf16), ("q8_0", q8_0)):
        rref = forward(model, tokens, rule=rule, kv_round=rnd)
        ours = engine_logits(path, tokens, model.hp["vocab"], work, *args, "--kv-type", t)
        per, gap = per_logit(ours, rref), rel_err(rref, ref)
        med, worst = float(np.median(per)), float(per.max())
        check(med < 1e-4 and worst < gap / 4,
              f"{name} {t}: against the reference with a {t} cache, median {med:.1e} (tolerance 1e-4), worst {worst:.1e} "
              f"(tolerance {gap / 4:.1e}, a quarter of what {t} rounding changes)")
        line += f"  {t}: median {med:.1e} worst {worst:.1e} (rounding moves logits {gap:.1e})"
    print(line)


def main():
    work = tmpdir()
    print("relative logit error against the float64 reference with the cache's rounding:")
    for hd in (32, 64):
        run(f"full hd={hd}", work, dict(embd=4 * hd, heads=4, kv_heads=2, head_dim=hd, layers=2, seed=hd), 150,
            ["--ubatch", "37", "--decode-from", "120"])
    rule = {"kind": "sink", "sinks": 4, "window": 70}
    run("sink stream 4+70", work, dict(embd=128, heads=4, kv_heads=2, head_dim=32, layers=2, seed=3), 230,
        ["--ubatch", "29", "--decode-from", "200", "--attn", "sink", "--sinks", "4", "--window", "70", "--stream", "1"],
        rule=rule)
    done("test_kv_types")


if __name__ == "__main__":
    main()
