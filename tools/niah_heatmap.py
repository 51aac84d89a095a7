#!/usr/bin/env python3
"""niah_heatmap.py TRIALS.jsonl OUT.png — the needle-in-a-haystack grid of `longseq eval niah
--out TRIALS.jsonl` as a heatmap: depth (rows) by length (columns), the share of trials right in
each cell, one panel per RoPE method and attention rule; cells whose trials were refused (past
the context) are grey. matplotlib from the test virtualenv (tests/requirements.txt)."""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: niah_heatmap.py TRIALS.jsonl OUT.png")
    trials = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if not trials:
        sys.exit(f"niah_heatmap: {sys.argv[1]} has no trials")
    cells = defaultdict(lambda: [0, 0])  # (panel, depth, length) -> [right, ran]
    for t in trials:
        key = ((t["rope"], t["attention"]), t["depth"], t["length"])
        if not t["error"]:
            cells[key][0] += bool(t["right"])
            cells[key][1] += 1
        else:
            cells[key]  # a cell that exists but ran nothing: refused
    panels = sorted({(t["rope"], t["attention"]) for t in trials})
    depths = sorted({t["depth"] for t in trials})
    lengths = sorted({t["length"] for t in trials})
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 1.1 * len(lengths) * len(panels), 1.5 + 0.45 * len(depths)),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        grid = np.full((len(depths), len(lengths)), np.nan)
        for i, d in enumerate(depths):
            for j, n in enumerate(lengths):
                right, ran = cells[(panel, d, n)]
                if ran:
                    grid[i, j] = right / ran
        cmap = matplotlib.colormaps["RdYlGn"].copy()
        cmap.set_bad("lightgrey")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for i in range(len(depths)):
            for j in range(len(lengths)):
                ax.text(j, i, "-" if np.isnan(grid[i, j]) else f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" if n % 1024 == 0 else str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths])
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(f"RoPE {panel[0]}, {panel[1]}", fontsize=9)
    fig.suptitle("needle in a haystack: % right", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)


if __name__ == "__main__":
    main()
