#!/usr/bin/env python3
"""The engine's logits equal an independent numpy reference (ref_llama.py, float64) to 1e-4
relative, on tiny random llama models written by fixtures.py:

- shapes: head dims 16/32/64/128, GQA ratios 1/3/4/8, tied and separate output heads;
- every weight type: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K;
- every RoPE method: none, linear (PI), NTK, dynamic NTK, YaRN, Llama 3 (from the rope_freqs
  tensor and from the formula), LongRoPE (long and short factors), changed base (ABF), from
  the model file's metadata or from the CLI-style overrides;
- prefill in odd-sized micro-batches, then token-by-token decode over the KV cache;
- many sequences in one batched forward (ls_engine_forward_batch): mixed lengths, rules (full,
  s2, sink, window, streaming or not), start positions and per-sequence RoPE frequencies
  (dynamic NTK fixed from each capacity), a ragged prefill batch then decode batches, each row
  against the reference of that sequence run alone; a batch carrying a bad item is refused
  naming it and leaves the others untouched;
- the like-for-like mode (activations rounded as llama.cpp does) against the same rounding in
  numpy: the median logit agrees to 1e-5 and the worst is far below the f32-vs-8-bit gap
  (an activation within an ulp of a rounding boundary may round either way).

The error measure is |a - b| / (|b| + rms(b)) per logit, worst case over all positions.
"""
import subprocess

import numpy as np

from fixtures import write_tiny_llama
from lsoracle import BUILD, check, done, tmpdir
from ref_llama import forward

N_TOKENS = 40


def engine_logits(path, tokens, n_vocab, work, *args):
    ids = work / "ids.txt"
    ids.write_text(" ".join(map(str, tokens)))
    out = work / "logits.f32"
    p = subprocess.run([str(BUILD / "tests" / "logits_dump"), str(path), str(ids), str(out), *map(str, args)],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"logits_dump failed: {p.stderr}")
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), n_vocab)


def rel_err(a, b):
    rms = np.sqrt(np.mean(b * b)) + 1e-30
    return float(np.max(np.abs(a - b) / (np.abs(b) + rms)))


def case(name, work, model_kw, rope=None, args=(), act_llamacpp=False, seed=0):
    path = work / f"{name}.gguf"
    model = write_tiny_llama(str(path), **model_kw)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, model.hp["vocab"], size=N_TOKENS).tolist()
    ref = forward(model, tokens, rope, act_llamacpp=act_llamacpp)
    ours = engine_logits(path, tokens, model.hp["vocab"], work, *args)
    e = rel_err(ours, ref)
    if not act_llamacpp:
        check(e < 1e-4, f"{name}: logits differ from the numpy reference by {e:.2e} (tolerance 1e-4)")
        print(f"  {name:34s} max relative error {e:.1e}")
        return
    # 8-bit activations: both sides round the same way, but an activation that lands within an
    # f32 ulp of a rounding boundary may round differently, and random tiny models amplify it.
    # A flip changes every later logit of that position, so: the median logit agrees closely,
    # and the worst is far below the gap between f32 and 8-bit activations.
    rms = np.sqrt(np.mean(ref * ref))
    per = np.abs(ours - ref) / (np.abs(ref) + rms)
    gap = rel_err(forward(model, tokens, rope), ref)
    # f16 rounding is 2^-11 coarse: an f32-level difference flips it far more often.
    med_tol = 1e-3 if model.hp["qtype"] == "F16" else 1e-5
    check(np.median(per) < med_tol and e < gap / 4,
          f"{name}: median {np.median(per):.1e}, max {e:.1e} vs f32 gap {gap:.1e}")
    print(f"  {name:34s} median {np.median(per):.1e}, max {e:.1e} (the f32 vs 8-bit gap is {gap:.1e})")


def batch_case(name, work, model_kw, seqs, rope=None, args=(), seed=0):
    """seqs: (rule dict or None, stream, n, start, split, lf) per sequence; see batch_dump.c."""
    path = work / f"{name}.gguf"
    model = write_tiny_llama(str(path), **model_kw)
    V = model.hp["vocab"]
    rng = np.random.default_rng(seed)
    lines, toks = [], []
    for rule, stream, n, start, split, lf in seqs:
        t = rng.integers(0, V, size=n).tolist()
        r = rule or dict(kind="full")
        lines.append(f"{r['kind']} {r.get('group', 0)} {r.get('sinks', 0)} {r.get('window', 0)} {int(stream)} "
                     f"{start} {split} {lf} " + " ".join(map(str, t)))
        toks.append(t)
    spec, out = work / "batch.spec", work / "batch.f32"
    spec.write_text("\n".join(lines) + "\n")
    p = subprocess.run([str(BUILD / "tests" / "batch_dump"), str(path), str(spec), str(out), "--bad", "1",
                        *map(str, args)], capture_output=True, text=True)
    check(p.returncode == 0, f"batch_dump failed: {p.stderr}")
    check("refused as expected: batch item" in p.stderr, f"{name}: no refusal of the bad item: {p.stderr}")
    got = np.fromfile(out, dtype=np.float32)
    at, worst = 0, 0.0
    for (rule, stream, n, start, split, lf), t in zip(seqs, toks):
        rows = got[at:at + (n - start) * V].reshape(n - start, V)
        at += (n - start) * V
        ref = forward(model, t, rope, rule=rule)[start:]
        asked = ~np.isnan(rows).any(axis=1)
        want = np.ones(n - start, dtype=bool)
        want[:lf] = False  # the prefill item asked for logits from its token lf on
        check(np.array_equal(asked, want), f"{name}: rows with logits {asked.nonzero()[0]} (wanted {want.nonzero()[0]})")
        e = rel_err(rows[asked], ref[asked])
        check(e < 1e-4, f"{name}: {rule} n={n} start={start}: batched logits differ from the reference by {e:.2e}")
        worst = max(worst, e)
    check(at == got.size, f"{name}: {got.size} logits written, {at} expected")
    print(f"  {name:34s} {len(seqs)} sequences, max relative error {worst:.1e}")


def main():
    work = tmpdir()
    chunked = ("--ubatch", 7, "--decode-from", 23)  # prefill 23 tokens in micro-batches of 7, decode 17
    print("shapes (F32):")
    case("mha-hd16", work, dict(embd=128, heads=8, kv_heads=8, ff=96), args=chunked)
    case("gqa3-hd32-untied", work, dict(embd=96, heads=3, kv_heads=1, ff=160, tied=False), args=chunked)
    case("gqa4-hd64", work, dict(embd=256, heads=4, kv_heads=1, ff=128, layers=3), args=chunked)
    case("gqa8-hd32", work, dict(embd=256, heads=8, kv_heads=1, ff=64), args=chunked)
    case("mha-hd128", work, dict(embd=256, heads=2, kv_heads=2, ff=64), args=chunked)
    print("weight types (embedding 256, heads 4/2, ffn 512, untied):")
    for q in ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"):
        case(f"type-{q}", work, dict(embd=256, heads=4, kv_heads=2, ff=512, qtype=q, tied=False), args=chunked)
    print("RoPE methods (embedding 64, heads 4/2, original context 16 where it matters):")
    small = dict(embd=64, heads=4, kv_heads=2, ff=128, ctx=64)
    half = 8  # head_dim / 2
    case("rope-none", work, small, args=chunked)
    case("rope-linear-4 (file)", work, dict(small, rope_scaling="linear", rope_factor=4.0),
         rope=dict(method="linear", factor=4.0), args=chunked)
    case("rope-yarn-4 (file)", work, dict(small, rope_scaling="yarn", rope_factor=4.0, rope_orig_ctx=16),
         rope=dict(method="yarn", factor=4.0, orig_ctx=16), args=chunked)
    case("rope-ntk-4 (override)", work, small, rope=dict(method="ntk", factor=4.0),
         args=chunked + ("--rope-scaling", "ntk", "--rope-scale", 4))
    case("rope-dynamic-4 (override)", work, small, rope=dict(method="dynamic", factor=4.0, orig_ctx=16),
         args=chunked + ("--rope-scaling", "dynamic", "--rope-scale", 4, "--yarn-orig-ctx", 16))
    divisors = np.linspace(1.0, 8.0, half)
    case("rope-llama3 (rope_freqs)", work, dict(small, rope_freqs=divisors),
         rope=dict(method="llama3", divisors=divisors), args=chunked)
    case("rope-llama3-8 (override)", work, small, rope=dict(method="llama3", factor=8.0, orig_ctx=16),
         args=chunked + ("--rope-scaling", "llama3", "--rope-scale", 8, "--yarn-orig-ctx", 16))
    long, short = np.linspace(1.0, 6.0, half), np.linspace(1.0, 1.5, half)
    lr = dict(small, rope_scaling="longrope", rope_factor=4.0, rope_orig_ctx=16, rope_factors=(long, short))
    case("rope-longrope (long)", work, lr, rope=dict(method="longrope", factor=4.0, orig_ctx=16, long=long, short=short),
         args=chunked)
    lr_short = dict(lr, rope_orig_ctx=64)
    case("rope-longrope (short)", work, lr_short,
         rope=dict(method="longrope", factor=4.0, orig_ctx=64, long=long, short=short), args=chunked)
    case("rope-abf-1e6 (override)", work, small, rope=dict(base=1e6), args=chunked + ("--rope-freq-base", 1e6))
    print("many sequences in one batch (micro-batches of 7, sequences split across them):")
    sink, win = dict(kind="sink", sinks=3, window=9), dict(kind="window", window=6)
    mixed = [(None, False, 30, 0, 21, 0), (dict(kind="s2", group=4), False, 27, 5, 17, 3), (sink, False, 33, 11, 12, 0),
             (win, False, 19, 2, 19, 16), (sink, True, 40, 9, 31, 0), (win, True, 26, 0, 5, 2), (None, False, 9, 8, 8, 0)]
    batch_case("batch-rules", work, dict(embd=64, heads=4, kv_heads=2, ff=128), mixed, args=("--ubatch", 7))
    dyn = [(None, False, n, s, sp, 0) for n, s, sp in ((40, 3, 30), (24, 0, 17), (13, 5, 9), (33, 20, 33))]
    batch_case("batch-dynamic-rope", work, dict(embd=64, heads=4, kv_heads=2, ff=128, ctx=64), dyn,
               rope=dict(method="dynamic", factor=4.0, orig_ctx=16),
               args=("--ubatch", 16, "--rope-scaling", "dynamic", "--rope-scale", 4, "--yarn-orig-ctx", 16))
    print("like-for-like activation rounding (llama.cpp):")
    for q in ("Q4_1", "Q8_0", "Q4_K", "F16"):
        case(f"act-llamacpp-{q}", work, dict(embd=256, heads=4, kv_heads=2, ff=512, qtype=q),
             args=chunked + ("--act", "llamacpp"), act_llamacpp=True)
    done("test_forward")


if __name__ == "__main__":
    main()
