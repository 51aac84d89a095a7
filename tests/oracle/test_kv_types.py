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

The same holds for a sequence sharded over a worker group (`mpirun -np 2..3 longseq worker
--task logits --kv-type T`: each rank's own keys in its paged cache of that type, widened to f32
for the exchange), for full attention (the ring) and the sink rule (borrowed sinks and window).

The error measure is test_forward.py's: |a - b| / (|b| + rms(b)) per logit.
"""
import shutil
import subprocess

import numpy as np

from fixtures import write_tiny_llama
from lsoracle import BIN, check, done, tmpdir
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


MPI_ENV = dict(__import__("os").environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")


def sharded_logits(path, tokens, n_vocab, work, np_, args):
    """Logits of the sequence sharded over np_ ranks (the ids file engine_logits wrote)."""
    out = work / "sp.f32"
    p = subprocess.run(["mpirun", "-np", str(np_), str(BIN), "worker", "--task", "logits", "--model", str(path),
                        "--ids", str(work / "ids.txt"), "--out", str(out), *map(str, args)],
                       capture_output=True, text=True, timeout=300, env=MPI_ENV)
    check(p.returncode == 0, f"the worker group failed:\n{p.stderr}")
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), n_vocab)


def per_logit(a, b):
    rms = np.sqrt(np.mean(b * b))
    return np.abs(a - b) / (np.abs(b) + rms)


def run(name, work, model_kw, n, args, rule=None, sharded=None):
    """sharded: the worker group's arguments, to run the same under mpirun -np 2 and 3."""
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
        for np_ in (2, 3) if sharded is not None else ():
            per = per_logit(sharded_logits(path, tokens, model.hp["vocab"], work, np_, [*sharded, "--kv-type", t]), rref)
            med, worst = float(np.median(per)), float(per.max())
            check(med < 1e-4 and worst < gap / 4,
                  f"{name} {t} np={np_}: against the reference with a {t} cache, median {med:.1e} (tolerance 1e-4), "
                  f"worst {worst:.1e} (tolerance {gap / 4:.1e})")
            line += f" np={np_}: {med:.1e}/{worst:.1e}"
    print(line)


def main():
    work = tmpdir()
    print("relative logit error against the float64 reference with the cache's rounding:")
    mpi = shutil.which("mpirun") is not None
    check(mpi, "mpirun not found (deploy/setup.sh installs openmpi-bin)")
    for hd in (32, 64):
        run(f"full hd={hd}", work, dict(embd=4 * hd, heads=4, kv_heads=2, head_dim=hd, layers=2, seed=hd), 150,
            ["--ubatch", "37", "--decode-from", "120"], sharded=["--decode-from", "120"] if hd == 64 else None)
    rule = {"kind": "sink", "sinks": 4, "window": 20}
    run("sink 4+20 (one seq)", work, dict(embd=256, heads=4, kv_heads=2, head_dim=64, layers=2, seed=5), 150,
        ["--ubatch", "37", "--decode-from", "120", "--attn", "sink", "--sinks", "4", "--window", "20"], rule=rule,
        sharded=["--decode-from", "120", "--attn", "sink", "--sinks", "4", "--window", "20"])
    rule = {"kind": "sink", "sinks": 4, "window": 70}
    run("sink stream 4+70", work, dict(embd=128, heads=4, kv_heads=2, head_dim=32, layers=2, seed=3), 230,
        ["--ubatch", "29", "--decode-from", "200", "--attn", "sink", "--sinks", "4", "--window", "70", "--stream", "1"],
        rule=rule)
    done("test_kv_types")


if __name__ == "__main__":
    main()
