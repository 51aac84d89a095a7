#!/usr/bin/env python3
"""bench_sdpa.py — PyTorch's scaled_dot_product_attention on the same shapes as
bench_attention.c (bf16, 32 heads, head dims 64/128, 4K/16K/64K tokens), as the baseline
tests/gpu/run prints next to ours. full: is_causal=True. s2: LongLoRA's own formulation
(the second half of the heads rolled by G/2, the sequence cut into groups of G = n/4, causal
SDPA inside each group). sink: a boolean mask (4 sinks + a 4092-token window), only up to
16K tokens (a dense 64K mask would take 4 GiB). Prints "rule n hd ms" rows (best of 3 after
a warm-up); TFLOP/s are computed by tests/gpu/run from bench_attention's pair counts."""
import sys

import torch
import torch.nn.functional as F

HEADS, SINKS, WINDOW = 32, 4, 4092


def timed(fn):
    best = float("inf")
    for rep in range(4):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if rep:
            best = min(best, start.elapsed_time(end))
    return best


def s2(q, k, v, n):
    g = n // 4
    def shift(x):
        x = torch.cat([x[:, : HEADS // 2], x[:, HEADS // 2 :].roll(-g // 2, dims=2)], dim=1)
        return x.reshape(1, HEADS, n // g, g, -1).transpose(1, 2).reshape(n // g, HEADS, g, -1)
    return F.scaled_dot_product_attention(shift(q), shift(k), shift(v), is_causal=True)


def main():
    max_n = int(sys.argv[1]) if len(sys.argv) > 1 else 65536
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"{'rule':5} {'n':>6} {'hd':>4} {'ms':>10}")
    for hd in (64, 128):
        n = 4096
        while n <= max_n:
            q, k, v = (torch.rand(1, HEADS, n, hd, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(3))
            rows = [("full", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                    ("s2", lambda: s2(q, k, v, n))]
            if n <= 16384:
                i = torch.arange(n, device="cuda")
                mask = (i[None, :] <= i[:, None]) & ((i[None, :] < SINKS) | (i[None, :] >= i[:, None] - WINDOW))
                rows.append(("sink", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
            for rule, fn in rows:
                print(f"{rule:5} {n:6d} {hd:4d} {timed(fn):10.3f}", flush=True)
            del q, k, v
            n *= 4


if __name__ == "__main__":
    main()
