#!/usr/bin/env python3
"""Attention rules end to end on tiny random llama models (fixtures.py):

- StreamingLLM exactness: the engine's logits under the sink rule equal a token-by-token
  numpy reference with an evicting cache whose keys are stored before RoPE and re-rotated to
  their cache slots at every step, as streaming-llm's code does (ref_llama.forward_streaming),
  to 1e-4 — for the parallel prefill, for the bounded streaming cache with evictions between
  micro-batches and during decode, with frequent re-basing of the window keys' angles, with
  no sinks (the window rule, and the sink rule with S = 0, which must equal it), and with
  YaRN's attention factor;
- s2 (LongLoRA groups, odd group sizes, an odd head count) and window rules against numpy
  masks built from their definitions;
- bounded memory: `perplexity --stream` peaks at the same RSS (within 5%) over 40K tokens as
  over 10K, and `generate --attn sink` goes 10x past the trained context in the same memory
  as a short run;
- progress: `perplexity --stream` with standard error a pipe prints a line (position, tokens/s,
  perplexity so far) every --progress seconds, and SIGINT stops it with the estimate so far
  and the number of tokens scored, status 130.
"""
import json
import os
import re
import signal
import subprocess
import time

import numpy as np

from fixtures import write_tiny_llama
from lsoracle import BIN, check, done, tmpdir
from ref_llama import forward, forward_streaming
from test_forward import engine_logits, rel_err


def compare(name, ours, ref):
    e = rel_err(ours, ref)
    check(e < 1e-4, f"{name}: logits differ from the reference by {e:.2e}")
    print(f"  {name:46s} max relative error {e:.1e}")


def streaming_exactness(work):
    model = write_tiny_llama(str(work / "sink.gguf"), embd=64, heads=4, kv_heads=2, ff=128, ctx=64)
    path = work / "sink.gguf"
    V = model.hp["vocab"]
    tokens = np.random.default_rng(3).integers(0, V, size=110).tolist()
    S, W = 4, 20
    ref = forward_streaming(model, tokens, S, W)
    # The parallel float64 reference (test_sp's) takes the same relative positions as the token
    # loop; only the float32 angles (position x frequency, rounded as HF rounds them) of other
    # absolute positions differ, by about 1e-6 here.
    par = forward(model, tokens, rule=dict(kind="sink", sinks=S, window=W))
    compare("numpy: parallel sink rule vs the token loop", par, ref)
    sink = ("--attn", "sink", "--sinks", S, "--window", W)
    compare("sink 4+20, parallel prefill", engine_logits(path, tokens, V, work, *sink), ref)
    compare("sink 4+20, stream, micro-batches of 7", engine_logits(path, tokens, V, work, *sink, "--stream", 1, "--ubatch", 7), ref)
    compare("sink 4+20, stream, prefill 50 then decode",
            engine_logits(path, tokens, V, work, *sink, "--stream", 1, "--ubatch", 5, "--decode-from", 50), ref)
    os.environ["LS_REBASE_AT"] = "30"  # re-rotate the window keys every few steps
    compare("sink 4+20, stream, re-based every ~30 positions",
            engine_logits(path, tokens, V, work, *sink, "--stream", 1, "--ubatch", 6), ref)
    del os.environ["LS_REBASE_AT"]
    ref0 = forward_streaming(model, tokens, 0, 24)
    compare("window 24 (no sinks), stream",
            engine_logits(path, tokens, V, work, "--attn", "window", "--window", 24, "--stream", 1, "--ubatch", 9), ref0)
    # The sink rule with S = 0 is the window rule by definition: every key is scored with the
    # query at its own position (before the fix, range 0 was scored with the slot-rotated query).
    sink0 = ("--attn", "sink", "--sinks", 0, "--window", 24)
    compare("sink 0+24 (= window 24), parallel prefill", engine_logits(path, tokens, V, work, *sink0), ref0)
    compare("sink 0+24 (= window 24), stream, decode",
            engine_logits(path, tokens, V, work, *sink0, "--stream", 1, "--ubatch", 9, "--decode-from", 60), ref0)
    yarn = write_tiny_llama(str(work / "yarn.gguf"), embd=64, heads=4, kv_heads=2, ff=128, ctx=64,
                            rope_scaling="yarn", rope_factor=4.0, rope_orig_ctx=16)
    refy = forward_streaming(yarn, tokens, S, W, rope=dict(method="yarn", factor=4.0, orig_ctx=16))
    compare("sink 4+20 with YaRN x4, stream",
            engine_logits(work / "yarn.gguf", tokens, V, work, *sink, "--stream", 1, "--ubatch", 8), refy)


def masked_rules(work):
    for name, kw, rule in (
            ("s2 G=8, 3 heads (split at 1)", dict(embd=96, heads=3, kv_heads=1, ff=64), dict(kind="s2", group=8)),
            ("s2 G=7 (odd), 4 heads / 2 kv", dict(embd=64, heads=4, kv_heads=2, ff=64), dict(kind="s2", group=7)),
            ("s2 G=64 (longer than the text)", dict(embd=64, heads=4, kv_heads=2, ff=64), dict(kind="s2", group=64)),
            ("window 10", dict(embd=64, heads=4, kv_heads=2, ff=64), dict(kind="window", window=10))):
        path = work / "rule.gguf"
        model = write_tiny_llama(str(path), **kw)
        tokens = np.random.default_rng(5).integers(0, model.hp["vocab"], size=45).tolist()
        args = ["--attn", rule["kind"]] + (["--group", rule["group"]] if "group" in rule else []) + \
               (["--window", rule["window"]] if "window" in rule else []) + ["--ubatch", 11, "--decode-from", 30]
        compare(name, engine_logits(path, tokens, model.hp["vocab"], work, *args), forward(model, tokens, rule=rule))


def rss_of(args):
    """Peak RSS (KiB) of one longseq run and its stdout."""
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.execv(str(BIN), [str(BIN), *map(str, args)])
    _, status, usage = os.wait4(pid, 0)
    check(os.waitstatus_to_exitcode(status) == 0, f"longseq {' '.join(map(str, args))} failed")
    return usage.ru_maxrss


def bounded_memory(work):
    path = work / "mem.gguf"
    write_tiny_llama(str(path), embd=64, heads=4, kv_heads=2, ff=128, ctx=64)
    rng = np.random.default_rng(9)
    words = ["".join(chr(c) for c in rng.integers(97, 123, size=rng.integers(2, 8))) for _ in range(2000)]
    text = " ".join(rng.choice(words, size=16000)).replace(" q", "\nq")
    (work / "long.txt").write_text(text)
    common = ["perplexity", "--model", path, "--stream", "--attn", "sink", "--sinks", 4, "--window", 60, "--json"]
    small, large = rss_of(common + ["--max-tokens", 10000, work / "long.txt"]), rss_of(common + ["--max-tokens", 40000, work / "long.txt"])
    print(f"  perplexity --stream: peak RSS {small} KiB at 10K tokens, {large} KiB at 40K")
    check(large <= small * 1.05, f"streaming memory grows: {small} KiB at 10K tokens, {large} KiB at 40K")
    gen = ["generate", "--model", path, "--prompt", "hello", "--temp", "0", "--ignore-eos", "--attn", "sink",
           "--sinks", 4, "--window", 28, "--json"]
    short, far = rss_of(gen + ["-n", 64]), rss_of(gen + ["-n", 640])
    print(f"  generate --attn sink: peak RSS {short} KiB for 64 tokens, {far} KiB for 640 (trained context 64)")
    check(far <= short * 1.05, f"sink generation memory grows: {short} KiB -> {far} KiB")
    out = subprocess.run([str(BIN), *map(str, gen + ["-n", 640])], capture_output=True, check=True).stdout
    check(json.loads(out)["tokens"] == 640, "generation past the trained context completes")


def stream_progress(work):
    path = work / "progress.gguf"
    write_tiny_llama(str(path), embd=64, heads=4, kv_heads=2, ff=128, ctx=64)
    rng = np.random.default_rng(11)
    words = ["".join(chr(c) for c in rng.integers(97, 123, size=rng.integers(2, 8))) for _ in range(2000)]
    (work / "endless.txt").write_text(" ".join(rng.choice(words, size=400000)))
    line = re.compile(r"^\[longseq\] position (\d+), (\d+) tok/s, perplexity so far ([\d.]+) \((\d+) tokens scored\)$")
    p = subprocess.Popen([str(BIN), "perplexity", "--model", str(path), "--stream", "--attn", "sink", "--window", "60",
                          "--progress", "0.3", "--threads", "1", str(work / "endless.txt")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, t0 = [], time.time()
    while len(seen) < 3 and time.time() - t0 < 120:  # lines about 0.3 s apart, positions growing
        m = line.match(p.stderr.readline().rstrip("\n"))
        if m:
            seen.append((time.time(), int(m.group(1)), int(m.group(4))))
    check(len(seen) == 3 and seen[0][1] < seen[1][1] < seen[2][1] and seen[2][0] - seen[0][0] >= 0.4,
          f"progress lines off a terminal, at the --progress interval: {seen}")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    m = re.search(r"Interrupted at position (\d+): estimate so far PPL = ([\d.]+) \+/- ([\d.]+) over (\d+) scored tokens",
                  out)
    check(p.returncode == 130 and m and int(m.group(4)) >= seen[-1][2] and int(m.group(1)) == int(m.group(4)) + 1,
          f"SIGINT: the estimate so far, status 130 ({p.returncode}): {out[-300:]!r} {err[-300:]!r}")
    print(f"  perplexity --stream: {len(seen)} progress lines 0.3 s apart; interrupted after {m.group(4)} tokens scored, "
          f"PPL so far {m.group(2)}, status 130")


def main():
    work = tmpdir()
    print("StreamingLLM exactness (S+W = 24 < 110 tokens):")
    streaming_exactness(work)
    print("masked rules:")
    masked_rules(work)
    print("bounded memory:")
    bounded_memory(work)
    print("progress:")
    stream_progress(work)
    done("test_streaming")


if __name__ == "__main__":
    main()
