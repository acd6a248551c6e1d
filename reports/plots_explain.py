"""Explainability figures: global importance bars and a beeswarm-style attribution summary.

Shares the house style of `reports.plots` (palette, fonts, deterministic SVG). Image
heat-map grids and line charts (deletion curves, randomization cascade) use
`reports.plots.image_grid_svg` / `line_chart_svg`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from reports.plots import _INK, _GRID, FIGSIZE, PALETTE, _arr, _label, _render


def importance_bars_svg(names: Sequence[Any], values: Sequence[float], lo: Sequence[float] | None = None,
                        hi: Sequence[float] | None = None, *, title: str = "Global importance",
                        xlabel: str = "mean |attribution|") -> str:
    """Horizontal bars, most important at the top, with CI whiskers."""
    v = _arr(values)
    labels = [_label(n, 28) for n in names]
    xerr = None
    if lo is not None and hi is not None:
        xerr = np.nan_to_num(np.vstack([np.clip(v - _arr(lo), 0, None), np.clip(_arr(hi) - v, 0, None)]))
    height = max(FIGSIZE[1] * 0.8, 0.2 * len(v) + 0.9)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        y = np.arange(len(v))[::-1]
        ax.barh(y, np.nan_to_num(v), color=PALETTE[0], height=0.7, xerr=xerr,
                capsize=2 if len(v) <= 30 else 0, error_kw={"ecolor": _INK, "elinewidth": 0.8})
        ax.set_yticks(y, labels)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(axis="x", color=_GRID, linewidth=0.6)
        ax.set_axisbelow(True)

    return _render(draw, (FIGSIZE[0] + 0.8, height))


def beeswarm_svg(names: Sequence[Any], attributions: Any, values: Any = None, *,
                 title: str = "Attribution summary", seed: int = 0) -> str:
    """One row per feature (top first), one dot per sample at its attribution, jittered
    vertically by local density; coloured by the feature's value (rank within the feature)
    where `values` is finite, grey elsewhere. `attributions` and `values` are samples x
    features; samples whose attribution is not finite are left out of that feature's row."""
    a = _arr(attributions)
    labels = [_label(n, 28) for n in names]
    if a.ndim != 2 or a.shape[1] != len(labels):
        raise ValueError(f"attributions must be samples x {len(labels)} features, got shape {a.shape}")
    vals = None if values is None else _arr(values)
    if vals is not None and vals.shape != a.shape:
        raise ValueError(f"values have shape {vals.shape}, attributions {a.shape}")
    height = max(FIGSIZE[1] * 0.8, 0.28 * len(labels) + 1.0)
    rng = np.random.default_rng(seed)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        mappable = None
        for j in range(a.shape[1]):
            row = len(labels) - 1 - j
            keep = np.isfinite(a[:, j])
            col = a[keep, j]
            if col.size == 0:
                continue
            # jitter scaled by how crowded the dot's neighbourhood is (a cheap beeswarm)
            span = np.ptp(col) or 1.0
            hist, edges = np.histogram(col, bins=30, range=(col.min() - 1e-12, col.min() + span + 1e-12))
            dens = hist[np.clip(np.digitize(col, edges) - 1, 0, len(hist) - 1)] / max(hist.max(), 1)
            yy = row + rng.uniform(-0.38, 0.38, len(col)) * dens
            v = None if vals is None else vals[keep, j]
            if v is not None and np.isfinite(v).all() and np.ptp(v) > 0:
                c = (np.argsort(np.argsort(v)) / max(len(v) - 1, 1))
                mappable = ax.scatter(col, yy, c=c, cmap="coolwarm", vmin=0, vmax=1, s=7, linewidths=0)
            else:
                ax.scatter(col, yy, color="#8c959f", s=7, linewidths=0)
        ax.axvline(0.0, color="#57606a", lw=0.8)
        ax.set_yticks(np.arange(len(labels))[::-1], labels)
        ax.set_xlabel("attribution towards the explained class")
        ax.set_title(title)
        if mappable is not None:
            cb = fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.02, ticks=[0, 1])
            cb.ax.set_yticklabels(["low", "high"])
            cb.set_label("feature value", fontsize=7)
            cb.outline.set_visible(False)

    return _render(draw, (FIGSIZE[0] + 1.2, height))
