"""The backtest's picture: load, capacity per run, overloaded nodes, and the scaler's decisions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt  # after use(): the backend is chosen before pyplot loads

from bbbsim.backtest import BacktestResult
from bbbsim.demand import Steps

COLORS = {"seed": "tab:red", "default": "tab:blue", "forecast": "tab:purple", "oracle": "black"}
MARKERS = {
    "scale_out": ("^", "tab:green"),
    "undrain": ("o", "tab:cyan"),
    "drain": ("v", "tab:orange"),
    "terminate": ("x", "tab:red"),
}


def _xy(steps: Steps, end: float) -> tuple[list[float], list[int]]:
    """Hours and values of a step function, held to ``end``."""
    xs = [t / 3600 for t, _ in steps]
    ys = [v for _, v in steps]
    if steps:
        xs.append(end / 3600)
        ys.append(ys[-1])
    return xs, ys


def plot(result: BacktestResult, out: Path) -> Path:
    """Draw ``result`` to the PNG ``out``."""
    end = result.hours * 3600
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(12, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 1.2]}
    )
    xs, ys = _xy(result.need, end)
    top.fill_between(xs, ys, step="post", color="0.85", label="fluid need (nodes at 80 %)")
    for scored in (*result.policies, result.oracle):
        run = scored.run
        color = COLORS.get(run.name)
        style = "--" if run.name == "oracle" else "-"
        xs, ys = _xy(run.instances, end)
        top.step(xs, ys, where="post", ls=style, lw=1.1, color=color, label=f"{run.name} instances")
        xs, ys = _xy(run.overloaded, end)
        bottom.step(xs, ys, where="post", lw=1.0, color=color, label=run.name)
    top.set_ylabel("nodes")
    top.set_title(f"backtest of {result.trace}: {result.meetings:,} meetings")
    top.legend(loc="upper right", fontsize=8)
    names = [s.run.name for s in result.policies]
    for row, scored in enumerate(result.policies):
        for action, (marker, color) in MARKERS.items():
            hours = [t / 3600 for t, a in scored.run.decisions if a == action]
            if hours:
                label = action if row == 0 else None
                middle.scatter(hours, [row] * len(hours), marker=marker, s=14, color=color,
                               label=label, linewidths=0.8)  # fmt: skip
    middle.set_yticks(range(len(names)), names)
    middle.set_ylim(-0.7, len(names) - 0.3)
    middle.set_ylabel("decisions")
    middle.legend(loc="upper right", fontsize=7, ncol=4)
    bottom.set_ylabel("nodes > 80 %")
    bottom.set_xlabel("hours from the trace's start")
    bottom.legend(loc="upper right", fontsize=8)
    step = 24 if result.hours > 48 else 1 if result.hours <= 12 else 6
    bottom.set_xticks([h for h in range(0, int(result.hours) + step, step)])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
