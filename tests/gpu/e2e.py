#!/usr/bin/env python3
"""e2e.py — the model end to end on the GPU against the CPU engine (run by tests/gpu/run).

- Per-position log-likelihoods (`perplexity --nll-out`, one 1024-token chunk, every token
  scored) under rules with a short range, where an off-by-one in a rule moves each position's
  loss far more than bf16 rounding does: the mean |delta nll| between GPU and CPU at the same
  rule must stay within a bound, and the CPU at each off-by-one variant of the rule (window
  W+-1, sinks S+-1, group G+-1) must exceed that bound. The second half runs on the CPU alone,
  first, so every run proves the bound sharp before using it (`--cpu-only` runs just that).
- Perplexity within 0.5% (512-token chunks), 1% for one 4096-token chunk under full, s2 and
  sink and for a sink stream that evicts and re-rotates its cache; greedy generation giving
  the same 32 tokens; the same through worker groups of GPU ranks (--np 1: NCCL; --np 2 on one
  GPU: MPI with host staging); a Hugging Face checkpoint with and without a LoRA adapter
  (tests/gpu/prebuild or tests/gpu/run writes it next to the binary; without it those rows
  are SKIP rows, counted as skipped).

Usage: e2e.py [--cpu-only] LONGSEQ_BINARY TEXT_FILE (the model: $LONGSEQ_MODEL or the default).
Prints one row per check and a last line "e2e: P passed, F failed, S skipped". Exits 1 if a
check failed; 77 (skipped) when no GPU is visible, after the CPU-side checks; else 0.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

args = [a for a in sys.argv[1:] if a != "--cpu-only"]
CPU_ONLY = "--cpu-only" in sys.argv[1:]
if len(args) != 2:
    sys.exit("usage: e2e.py [--cpu-only] LONGSEQ_BINARY TEXT_FILE")
LONGSEQ, TEXT = args
ENV = dict(os.environ, LS_REBASE_AT="1000")  # streams re-rotate their keys often
WORK = tempfile.mkdtemp(prefix="longseq-e2e-")
counts = {"passed": 0, "failed": 0, "skipped": 0}


def has_gpu():
    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def run(*args):
    t0 = time.time()
    p = subprocess.run([LONGSEQ, *args], capture_output=True, text=True, env=ENV)
    if p.returncode:
        raise RuntimeError(f"longseq {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout), time.time() - t0


def count(ok):
    counts["passed" if ok else "failed"] += 1


def row(name, cpu, gpu, ok, t_cpu, t_gpu):
    count(ok)
    print(f"{name:44} cpu {cpu:>12} cuda {gpu:>12} {'pass' if ok else 'FAIL':4}  ({t_cpu:.1f} s / {t_gpu:.1f} s)", flush=True)


def error(name, e):
    count(False)
    print(f"{name:44} ERROR {e}", flush=True)


def skip(name, why):
    counts["skipped"] += 1
    print(f"{name:44} SKIP  {why}", flush=True)


# --- per-position log-likelihoods ----------------------------------------------------------------

NLL_CHUNK = ("--ctx", "1024", "--chunks", "1", "--score", "all")


def nll(device, flags):
    """{position: nll} of the first 1024-token chunk of TEXT, every token after the first scored."""
    fd, path = tempfile.mkstemp(dir=WORK, suffix=".nll")
    os.close(fd)
    _, t = run("perplexity", "--device", device, "--json", *NLL_CHUNK, *flags, "--nll-out", path, TEXT)
    with open(path) as f:
        return {int(p): float(v) for p, v in (line.split() for line in f)}, t


def distance(a, b):
    """Mean |nll_a - nll_b| over the positions; the positions must be the same."""
    if a.keys() != b.keys():
        raise RuntimeError(f"scored positions differ: {len(a)} vs {len(b)}")
    return sum(abs(a[p] - b[p]) for p in a) / len(a)


def sink(s, w):
    return ("--attn", "sink", "--sinks", str(s), "--window", str(w))


def s2(g):
    return ("--attn", "s2", "--group", str(g))


# (name, flags, bound on the mean |delta nll| per position, off-by-one variants). Measured on
# the CPU (KJV, default model, 2026-12-03): sink 4+8 against W+1 / W-1 / S+1 / S-1: 0.287 /
# 0.290 / 0.241 / 0.562; s2 G=256 against G+1 / G-1: 1.121 / 0.944. Numerical noise of a
# coarser kind than bf16, the CPU's own llama.cpp-style 8-bit activations
# (--act-precision llamacpp) against its f32 ones: 0.087 (sink 4+8), 0.145 (s2), 0.062 (full).
# The bounds sit between the two; bf16 GEMM inputs and cache (relative rounding 2^-9) should
# move positions less than 8-bit blocks do.
SHARP = [
    ("sink 4+8", sink(4, 8), 0.15, [("window 9", sink(4, 9)), ("window 7", sink(4, 7)),
                                    ("sinks 5", sink(5, 8)), ("sinks 3", sink(3, 8))]),
    ("s2 G=256", s2(256), 0.5, [("group 257", s2(257)), ("group 255", s2(255))]),
]


def per_position(gpu):
    for name, flags, bound, variants in SHARP:
        try:
            ref, t_ref = nll("cpu", flags)
            for vname, vflags in variants:  # the bound must see each off-by-one, on the CPU alone
                other, t = nll("cpu", vflags)
                d = distance(ref, other)
                row(f"nll {name}: cpu {vname} {d:.3f} > {bound}", f"{d:.4f}", "-", d > bound, t_ref + t, 0)
            if not gpu:
                skip(f"nll {name}: cuda within {bound}", "--cpu-only" if CPU_ONLY else "no GPU")
                continue
            got, t_gpu = nll("cuda", flags)
            d = distance(ref, got)
            row(f"nll {name}: cuda {d:.3f} <= {bound}", "-", f"{d:.4f}", d <= bound, t_ref, t_gpu)
        except RuntimeError as e:
            error(f"nll {name}", e)


# --- perplexity and generation ------------------------------------------------------------------

def ppl(name, *args, limit=0.005, gpu_args=()):
    """The CPU engine (one process) against the GPU run with gpu_args added (e.g. --np 2)."""
    try:
        (c, tc), (g, tg) = (run("perplexity", "--device", d, "--json", *args, *(gpu_args if d == "cuda" else ()), TEXT)
                            for d in ("cpu", "cuda"))
    except RuntimeError as e:
        error(name, e)
        return
    rel = abs(g["ppl"] - c["ppl"]) / c["ppl"]
    row(f"{name} ({rel * 100:.3f}% <= {limit * 100:g}%)", f"{c['ppl']:.4f}", f"{g['ppl']:.4f}", rel <= limit, tc, tg)


def gpu_checks():
    # The check: the default model, full attention, 0.5%.
    ppl("ppl 512 x 20 full", "--ctx", "512", "--chunks", "20")
    # The rules at 4096 tokens, 8x the model's 512-token sweet spot: s2 (not fine-tuned for)
    # reaches perplexity 16, where bf16 rounding moves it more (0.55% measured on an H100,
    # 2026-11-26), so these allow 1%. An off-by-one in a rule moves these by less than that
    # (sink 4+1020 against 4+1021: 0.18%); the per-position rows above are the ones that see it.
    for rule in ("full", "s2", "sink"):
        ppl(f"ppl 4096 x 1 {rule}", "--ctx", "4096", "--chunks", "1", "--attn", rule,
            *(["--window", "1020"] if rule == "sink" else []), limit=0.01)
    ppl("ppl stream sink 3000", "--stream", "--attn", "sink", "--window", "500", "--max-tokens", "3000", limit=0.01)

    # Worker groups of GPU ranks: one rank (an NCCL group of one), and two ranks sharing the one
    # GPU (NCCL refuses two ranks on one device, so that group exchanges over MPI through host
    # memory): the ring (full), the boundary exchange (s2) and the decode all-gather (generate).
    ppl("ppl 4096 x 1 full, --np 1 (NCCL)", "--ctx", "4096", "--chunks", "1", limit=0.01, gpu_args=("--np", "1"))
    ppl("ppl 4096 x 1 full, --np 2", "--ctx", "4096", "--chunks", "1", limit=0.01, gpu_args=("--np", "2"))
    ppl("ppl 4096 x 1 s2, --np 2", "--ctx", "4096", "--chunks", "1", "--attn", "s2", limit=0.01, gpu_args=("--np", "2"))

    # A Hugging Face checkpoint (BF16 safetensors, tokenizer.json; tests/gpu/hf_fixture.py,
    # written next to the binary by tests/gpu/prebuild or tests/gpu/run) with and without a
    # PEFT adapter merged at load.
    hf = os.path.join(os.path.dirname(os.path.abspath(LONGSEQ)), "hf-tiny")
    if os.path.isdir(hf):
        ppl("ppl 512 x 4, HF bf16 checkpoint", "--model", hf, "--ctx", "512", "--chunks", "4")
        ppl("ppl 512 x 4, HF + PEFT LoRA", "--model", hf, "--lora", hf + "-lora", "--ctx", "512", "--chunks", "4")
    else:
        for name in ("ppl 512 x 4, HF bf16 checkpoint", "ppl 512 x 4, HF + PEFT LoRA"):
            skip(name, f"no {hf} (tests/gpu/hf_fixture.py writes it; it needs the test virtualenv)")

    prompt = open(TEXT, encoding="utf-8").read()[:2000]
    for name, extra in (("greedy 32 tokens", ()), ("greedy 32 tokens, --np 2", ("--np", "2"))):
        try:
            (c, tc), (g, tg) = (run("generate", "--device", d, "--json", "--temp", "0", "-n", "32", "--ignore-eos",
                                    "--prompt", prompt, *(extra if d == "cuda" else ())) for d in ("cpu", "cuda"))
            same = c["ids"] == g["ids"]
            row(name, f"{len(c['ids'])} ids", f"{len(g['ids'])} ids", same, tc, tg)
            if not same:
                print(f"  cpu:  {c['text']!r}\n  cuda: {g['text']!r}")
        except RuntimeError as e:
            error(name, e)


def main():
    gpu = not CPU_ONLY and has_gpu()
    per_position(gpu)
    if gpu:
        gpu_checks()
    elif not CPU_ONLY:
        skip("GPU vs CPU perplexity and generation", "no GPU visible (nvidia-smi -L)")
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"e2e: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    if counts["failed"]:
        sys.exit(1)
    sys.exit(77 if not gpu and not CPU_ONLY else 0)


if __name__ == "__main__":
    main()
