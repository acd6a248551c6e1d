"""Data-specification figures. Shares the house style of `reports.plots`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from reports.plots import _INK, FIGSIZE, PALETTE, _arr, _label, _render, _ygrid

_HATCHES = ["", "//", "..", "xx"]


def class_shares_svg(classes: Sequence[Any], splits: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                     *, title: str = "Class shares per split", ylabel: str = "share of rows") -> str:
    """Grouped bars: one cluster per class, one bar per split `{split: (shares, lo, hi)}`
    with interval whiskers; the y axis is scaled to the data (shares of many classes are small)."""
    names = [_label(c, 18) for c in classes]
    k, m = len(names), max(1, len(splits))
    width = 0.8 / m
    rotate = k > 12 or max((len(n) for n in names), default=0) > 6
    fig_w = min(9.0, max(FIGSIZE[0], 0.18 * k * m + 2.4))
    his = [_arr(hi) for _, _, hi in splits.values()]
    finite = np.concatenate([h[np.isfinite(h)] for h in his]) if his else np.zeros(0)
    top = float(finite.max()) if finite.size else 1.0

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        x = np.arange(k)
        for j, (split, (vals, lo, hi)) in enumerate(splits.items()):
            v, lo_, hi_ = (_arr(a) for a in (vals, lo, hi))
            yerr = np.nan_to_num(np.vstack([np.clip(v - lo_, 0, None), np.clip(hi_ - v, 0, None)]))
            ax.bar(x + (j - (m - 1) / 2) * width, np.nan_to_num(v), width=width * 0.95, color=PALETTE[j % len(PALETTE)],
                   hatch=_HATCHES[j % len(_HATCHES)], edgecolor="white", linewidth=0.3, label=split,
                   yerr=yerr, capsize=2 if k * m <= 40 else 0, error_kw={"ecolor": _INK, "elinewidth": 0.8})
        ax.set_xticks(x, names, rotation=40 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylim(0, min(1.0, top * 1.15) if top > 0 else 1.0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _ygrid(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return _render(draw, (fig_w, FIGSIZE[1] + (0.5 if rotate else 0.0)))
