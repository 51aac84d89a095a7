#!/usr/bin/env python3
"""plot_loss.py OUTDIR — per-position loss plots of the attention experiments
(attention-experiments writes OUTDIR/*.nll as "position nll" lines):
  OUTDIR/streaming-loss.png   dense (chunks of 8K), dense past 8K, window only, 4 sinks + 1020
and prints the markdown tables of all runs (OUTDIR/*.json). Needs matplotlib
(bench/experiments/requirements.txt).
"""
import json
import sys
from pathlib import Path

import numpy as np


def load(path):
    a = np.loadtxt(path)
    return a[:, 0], a[:, 1]


def smooth(y, k=256):
    c = np.cumsum(np.insert(y, 0, 0.0))
    return (c[k:] - c[:-k]) / k


def main():
    out = Path(sys.argv[1])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, label in (("dense-8k", "dense, chunks of 8,192 (trained context)"),
                        ("dense-24k", "dense, one 24,576-token sequence"),
                        ("window-1024", "window only, 0 + 1,024"),
                        ("sink-4-1020", "StreamingLLM, 4 sinks + 1,020")):
        p = out / f"{name}.nll"
        if p.exists():
            x, y = load(p)
            ax.plot(x[255:], smooth(y), label=label, linewidth=1)
    ax.set_xlabel("token position in the KJV text")
    ax.set_ylabel("loss (nats), mean over 256 tokens")
    ax.set_yscale("log")
    ax.axvline(8192, color="grey", linestyle=":", linewidth=0.8)
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M-Instruct Q4_1 on the KJV text: per-position loss")
    fig.tight_layout()
    fig.savefig(out / "streaming-loss.png", dpi=120)
    print("| run | ppl | +/- | scored tokens | seconds |\n|---|---:|---:|---:|---:|")
    for p in sorted(out.glob("*.json")):
        r = json.loads(p.read_text())
        print(f"| {p.stem} | {r['ppl']:.4f} | {r['ppl_stderr']:.4f} | {r['tokens']} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
