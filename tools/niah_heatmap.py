#!/usr/bin/env python3
"""niah_heatmap.py TRIALS.jsonl OUT.png — the needle-in-a-haystack grid of `longseq eval niah
--out TRIALS.jsonl` as a heatmap: depth (rows) by length (columns), the share of trials right in
each cell, one panel per RoPE method and attention rule, each with the depths and lengths its
own trials asked for (so files of several runs combine); cells whose trials were refused (past
the context) are grey. matplotlib from the test virtualenv (tests/requirements.txt); its test:
tests/oracle/test_eval.py."""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def grids(trials):
    """[(panel, depths, lengths, grid)]: panel = (rope, attention); grid[depth][length] = share
    right, NaN where every trial of the cell was refused or the panel has no trial there."""
    cells = defaultdict(lambda: [0, 0])  # (panel, depth, length) -> [right, ran]
    for t in trials:
        if not t["error"]:
            c = cells[((t["rope"], t["attention"]), t["depth"], t["length"])]
            c[0] += bool(t["right"])
            c[1] += 1
    out = []
    for panel in sorted({(t["rope"], t["attention"]) for t in trials}):
        mine = [t for t in trials if (t["rope"], t["attention"]) == panel]
        depths, lengths = sorted({t["depth"] for t in mine}), sorted({t["length"] for t in mine})
        grid = np.full((len(depths), len(lengths)), np.nan)
        for i, d in enumerate(depths):
            for j, n in enumerate(lengths):
                right, ran = cells.get((panel, d, n), (0, 0))
                if ran:
                    grid[i, j] = right / ran
        out.append((panel, depths, lengths, grid))
    return out


def title(panel, trials):
    """"RoPE yarn x1.5, full": the factor when the panel's trials share one past 1."""
    factors = {t.get("factor", 1.0) for t in trials if (t["rope"], t["attention"]) == panel}
    f = factors.pop() if len(factors) == 1 else 1.0
    return f"RoPE {panel[0]}{f' x{f:g}' if f > 1 else ''}, {panel[1]}"


def draw(ax, name, depths, lengths, grid):
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
    ax.set_title(name, fontsize=9)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: niah_heatmap.py TRIALS.jsonl OUT.png")
    trials = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if not trials:
        sys.exit(f"niah_heatmap: {sys.argv[1]} has no trials")
    panels = grids(trials)
    widths = [max(2, len(p[2])) for p in panels]
    rows = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 1.1 * sum(widths), 1.5 + 0.45 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (panel, depths, lengths, grid) in zip(axes[0], panels):
        draw(ax, title(panel, trials), depths, lengths, grid)
    fig.suptitle("needle in a haystack: % right", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)


if __name__ == "__main__":
    main()
