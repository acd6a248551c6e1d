"""Fairness figures: per-group rates side by side, with confidence-interval whiskers.

Shares the house style of `reports.plots` (palette, fonts, deterministic SVG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from reports.plots import _INK, FIGSIZE, PALETTE, _arr, _label, _render, _ygrid

_HATCHES = ["", "//", "..", "xx", "\\\\"]


def group_rates_svg(groups: Sequence[Any], series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                    *, insufficient: Sequence[bool] | None = None, title: str = "Per-group rates",
                    ylabel: str = "rate") -> str:
    """Grouped bars: one cluster per group, one bar per series `{name: (values, lo, hi)}`
    with CI whiskers. Groups flagged `insufficient` are drawn faded and their label
    gets an asterisk (kept out of the gaps)."""
    names = [_label(g, 28) + (" *" if insufficient is not None and insufficient[i] else "")
             for i, g in enumerate(groups)]
    n_groups, n_series = len(names), max(1, len(series))
    width = 0.8 / n_series
    fig_w = min(9.0, max(FIGSIZE[0], 0.22 * n_groups * n_series + 2.6))  # + legend on the right
    rotate = n_groups > 4 or max((len(n) for n in names), default=0) > 10

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        x = np.arange(n_groups)
        for j, (name, (vals, lo, hi)) in enumerate(series.items()):
            v, lo_, hi_ = _arr(vals), _arr(lo), _arr(hi)
            yerr = np.nan_to_num(np.vstack([np.clip(v - lo_, 0, None), np.clip(hi_ - v, 0, None)]))
            alpha = [0.35 if insufficient is not None and insufficient[i] else 1.0 for i in range(n_groups)]
            bars = ax.bar(x + (j - (n_series - 1) / 2) * width, np.nan_to_num(v), width=width * 0.95,
                          color=PALETTE[j % len(PALETTE)], hatch=_HATCHES[j % len(_HATCHES)],
                          edgecolor="white", linewidth=0.3, label=name, yerr=yerr,
                          capsize=2 if n_groups * n_series <= 40 else 0,
                          error_kw={"ecolor": _INK, "elinewidth": 0.8})
            for bar, a in zip(bars, alpha):
                bar.set_alpha(a)
        ax.set_xticks(x, names, rotation=40 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _ygrid(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return _render(draw, (fig_w, FIGSIZE[1] + (0.5 if rotate else 0.0)))
