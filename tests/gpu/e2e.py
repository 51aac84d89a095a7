#!/usr/bin/env python3
"""e2e.py — the model end to end on the GPU against the CPU engine (run by tests/gpu/run):
perplexity within 0.5% (512-token chunks; one 4096-token chunk under full, s2 and sink; a
sink stream long enough to evict and re-rotate its cache), and greedy generation giving the
same 32 tokens; the same through worker groups of GPU ranks (--np 1: NCCL; --np 2 on one
GPU: MPI with host staging); a Hugging Face checkpoint with and without a LoRA adapter. Usage: e2e.py LONGSEQ_BINARY TEXT_FILE (the model: $LONGSEQ_MODEL or the
default). Prints one row per check and exits 1 if any fails."""
import json
import os
import subprocess
import sys
import time

LONGSEQ, TEXT = sys.argv[1], sys.argv[2]
ENV = dict(os.environ, LS_REBASE_AT="1000")  # streams re-rotate their keys often
failed = False


def run(*args):
    t0 = time.time()
    p = subprocess.run([LONGSEQ, *args], capture_output=True, text=True, env=ENV)
    if p.returncode:
        raise RuntimeError(f"longseq {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout), time.time() - t0


def row(name, cpu, gpu, ok, t_cpu, t_gpu):
    global failed
    failed |= not ok
    print(f"{name:34} cpu {cpu:>12} cuda {gpu:>12} {'pass' if ok else 'FAIL':4}  ({t_cpu:.1f} s / {t_gpu:.1f} s)", flush=True)


def ppl(name, *args, limit=0.005, gpu_args=()):
    """The CPU engine (one process) against the GPU run with gpu_args added (e.g. --np 2)."""
    try:
        (c, tc), (g, tg) = (run("perplexity", "--device", d, "--json", *args, *(gpu_args if d == "cuda" else ()), TEXT)
                            for d in ("cpu", "cuda"))
    except RuntimeError as e:
        print(f"{name:34} ERROR {e}", flush=True)
        global failed
        failed = True
        return
    rel = abs(g["ppl"] - c["ppl"]) / c["ppl"]
    row(f"{name} ({rel * 100:.3f}% <= {limit * 100:g}%)", f"{c['ppl']:.4f}", f"{g['ppl']:.4f}", rel <= limit, tc, tg)


# The check: the default model, full attention, 0.5%.
ppl("ppl 512 x 20 full", "--ctx", "512", "--chunks", "20")
# The rules at 4096 tokens, 8x the model's 512-token sweet spot: s2 (not fine-tuned for) reaches
# perplexity 16, where bf16 rounding moves it more (0.55% measured on an H100, 2026-11-26), so
# these allow 1%; a wrong range would move it by far more (docs/results.md).
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

# A Hugging Face checkpoint (BF16 safetensors, tokenizer.json; tests/gpu/hf_fixture.py, written
# next to the binary by tests/gpu/prebuild) with and without a PEFT adapter merged at load.
HF = os.path.join(os.path.dirname(os.path.abspath(LONGSEQ)), "hf-tiny")
if os.path.isdir(HF):
    ppl("ppl 512 x 4, HF bf16 checkpoint", "--model", HF, "--ctx", "512", "--chunks", "4")
    ppl("ppl 512 x 4, HF + PEFT LoRA", "--model", HF, "--lora", HF + "-lora", "--ctx", "512", "--chunks", "4")
else:
    print(f"{'HF checkpoint':34} skipped: no {HF} (tests/gpu/prebuild writes it)", flush=True)

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
        print(f"{name:34} ERROR {e}")
        failed = True
sys.exit(1 if failed else 0)
