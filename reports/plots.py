"""Small report figures as SVG strings.

Every helper returns an ``<svg ...>`` element (no XML declaration, no DOCTYPE, no
metadata). Checks do not call them: they emit chart evidence (``audit.check.chart``)
and the report draws it through ``reports.charts``, so every argument also arrives in
its JSON form (lists for arrays and tuples, nested lists, ``None`` for NaN) and each
helper accepts that. Output is deterministic for the same input: ``svg.hashsalt`` is
fixed, no date is written, and text is never parsed as mathtext.

Text stays text (``svg.fonttype = 'none'``): the SVG is small, the words are
searchable and selectable in the PDF, and WeasyPrint and browsers both render it
with a sans-serif fallback list. Colours are the Okabe-Ito palette, which stays
distinguishable under the common colour-vision deficiencies; series also differ
by marker and line style so they survive grey-scale printing.

matplotlib is driven through ``matplotlib.figure.Figure`` and saved with the SVG
canvas directly: no pyplot, no global figure registry and no GUI backend, so it is
headless-safe (the Agg-only path) without switching the backend of a process that
imports us (a notebook keeps its own).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "PALETTE",
    "bar_chart_svg",
    "confusion_matrix_svg",
    "image_grid_svg",
    "line_chart_svg",
    "reliability_diagram_svg",
    "roc_curve_svg",
]

# Okabe-Ito, ordered for contrast between neighbours.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_LINESTYLES = ["-", "--", "-.", ":"]
_INK = "#1f2937"
_GRID = "#d0d7de"
_THRESHOLD = "#B42318"

FIGSIZE = (4.5, 3.0)

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "audit-report",
    "text.parse_math": False,  # labels are user data: "$50K-$100K" is text, not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans"],
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 8.5,
    "axes.edgecolor": "#57606a",
    "axes.labelcolor": _INK,
    "axes.titlecolor": _INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "xtick.color": "#57606a",
    "ytick.color": "#57606a",
    "xtick.labelcolor": _INK,
    "ytick.labelcolor": _INK,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 4,
    "image.cmap": "viridis",
}

_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_NO_METADATA, facecolor="white")
    svg = buf.getvalue()
    start = svg.find("<svg")
    if start < 0:  # pragma: no cover - matplotlib always writes an svg element
        raise RuntimeError("matplotlib produced no <svg> element")
    return svg[start:].strip() + "\n"


def _render(draw, figsize: tuple[float, float] = FIGSIZE) -> str:
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize)
        draw(fig)
        return _to_svg(fig)


def _ygrid(ax) -> None:
    ax.grid(axis="y", color=_GRID, linewidth=0.6)
    ax.set_axisbelow(True)


def _arr(x: Any) -> np.ndarray:
    """Floats from an array or its JSON form; None (JSON's null for NaN) becomes NaN."""
    return np.asarray(x, dtype=np.float64)


def _label(s: Any, limit: int = 24) -> str:
    s = str(s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


# --------------------------------------------------------------------------- figures


def confusion_matrix_svg(cm: Any, classes: Sequence[Any], *, title: str = "Confusion matrix",
                         normalize: bool = True) -> str:
    """Rows are true classes, columns predicted. Colour is the row-normalised rate
    (recall on the diagonal), the annotation the raw count."""
    counts = np.nan_to_num(_arr(cm))
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    k = counts.shape[0]
    names = [_label(c, 14) for c in classes]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = counts / counts.sum(axis=1, keepdims=True)
    rates = np.nan_to_num(rates)
    shown = rates if normalize else counts
    side = min(5.5, max(2.8, 0.24 * k + 1.6))

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, counts.max()),
                       interpolation="nearest", aspect="equal")
        ax.set_xticks(range(k), names, rotation=45 if max(map(len, names), default=0) > 3 else 0,
                      ha="right" if max(map(len, names), default=0) > 3 else "center")
        ax.set_yticks(range(k), names)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(title)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k <= 15:
            size = 7 if k <= 10 else 5.5
            for i in range(k):
                for j in range(k):
                    c = counts[i, j]
                    txt = f"{int(c)}" if float(c).is_integer() else f"{c:.2g}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=size,
                            color="white" if shown[i, j] > (0.55 if normalize else counts.max() * 0.55) else _INK)
        cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        cb.set_label("row rate (recall)" if normalize else "count")
        cb.outline.set_visible(False)

    return _render(draw, (side + 0.9, side))


def reliability_diagram_svg(bin_conf: Any, bin_acc: Any, bin_count: Any, *,
                            title: str = "Reliability diagram", bin_edges: Any = None) -> str:
    """Reliability diagram: one bar per confidence bin (height = accuracy), the gap to the
    bin's mean confidence shaded, the diagonal of perfect calibration, and the share of
    samples per bin underneath. Bins are equal-width on [0, 1] unless `bin_edges`
    (n + 1 values) says otherwise. Empty bins are left out."""
    conf, acc, cnt = _arr(bin_conf), _arr(bin_acc), np.nan_to_num(_arr(bin_count))
    if not (conf.shape == acc.shape == cnt.shape):
        raise ValueError("bin_conf, bin_acc and bin_count must have the same length")
    n_bins = max(len(cnt), 1)
    edges = np.linspace(0.0, 1.0, n_bins + 1) if bin_edges is None else _arr(bin_edges)
    if len(edges) != n_bins + 1:
        raise ValueError(f"{len(edges)} bin edges for {n_bins} bins")
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    keep = (cnt > 0) & np.isfinite(conf) & np.isfinite(acc)
    share = cnt / cnt.sum() if cnt.sum() > 0 else cnt

    def draw(fig: Figure) -> None:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.bar(centers[keep], acc[keep], width=widths[keep], color=PALETTE[0], alpha=0.9,
                edgecolor="white", linewidth=0.6, label="accuracy")
        gap_lo, gap_hi = np.minimum(acc, conf), np.maximum(acc, conf)
        top.bar(centers[keep], (gap_hi - gap_lo)[keep], bottom=gap_lo[keep], width=widths[keep],
                facecolor="none", edgecolor=PALETTE[3], linewidth=0.8, hatch="////",
                label="gap to mean confidence")
        top.plot([0, 1], [0, 1], ls="--", color="#57606a", lw=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_ylabel("Accuracy")
        top.set_title(title)
        top.legend(loc="upper left", frameon=True, facecolor="white", edgecolor=_GRID, framealpha=0.92)
        _ygrid(top)
        bottom.bar(centers[keep], share[keep], width=widths[keep], color=PALETTE[5], edgecolor="white",
                   linewidth=0.6)
        bottom.set_ylabel("Share")
        bottom.set_xlabel("Confidence")
        _ygrid(bottom)

    return _render(draw, (FIGSIZE[0], 3.4))


def bar_chart_svg(labels: Sequence[Any], values: Sequence[Any], ci_lo: Sequence[Any] | None = None,
                  ci_hi: Sequence[Any] | None = None, title: str = "", ylabel: str = "",
                  threshold: float | None = None, *, threshold_label: str | None = None,
                  ylim: tuple[float, float] | None = None, highlight: Sequence[bool] | None = None) -> str:
    """Vertical bars with optional confidence-interval whiskers and a dashed threshold line.
    `highlight` (one bool per bar) draws those bars in the warning colour."""
    names = [_label(x) for x in labels]
    vals = _arr(values)
    if len(names) != len(vals):
        raise ValueError(f"{len(names)} labels for {len(vals)} values")
    yerr = None
    if ci_lo is not None and ci_hi is not None:
        lo, hi = _arr(ci_lo), _arr(ci_hi)
        yerr = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        yerr = np.nan_to_num(yerr)
    colours = [PALETTE[3] if (highlight is not None and highlight[i]) else PALETTE[0] for i in range(len(vals))]
    longest = max((len(n) for n in names), default=0)
    rotate = longest > 10 or len(names) * max(longest, 2) > 44
    width = min(7.0, max(FIGSIZE[0], 0.28 * len(names) + 1.5))

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        x = np.arange(len(vals))
        ax.bar(x, np.nan_to_num(vals), color=colours, width=0.7,
               yerr=yerr, capsize=2.5 if len(vals) <= 30 else 0,
               error_kw={"ecolor": _INK, "elinewidth": 0.9})
        ax.set_xticks(x, names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
        if threshold is not None and math.isfinite(float(threshold)):
            ax.axhline(float(threshold), ls="--", color=_THRESHOLD, lw=1.1,
                       label=threshold_label or f"threshold {float(threshold):g}")
            ax.legend(loc="best")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        _ygrid(ax)

    return _render(draw, (width, FIGSIZE[1]))


def line_chart_svg(series: Mapping[str, Sequence[Any]], xlabel: str = "", ylabel: str = "",
                   title: str = "", *, threshold: float | None = None, xlog: bool = False,
                   ylim: tuple[float, float] | None = None, mark_x: float | None = None,
                   mark_label: str | None = None) -> str:
    """One line per series: ``{name: (x, y)}`` or ``{name: (x, y, lo, hi)}``; the optional
    ``lo``/``hi`` draw a shaded confidence band. `mark_x` draws a vertical marker
    (e.g. the best epoch)."""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for i, (name, data) in enumerate(series.items()):
            if len(data) not in (2, 4):
                raise ValueError(f"series {name!r} must be (x, y) or (x, y, lo, hi)")
            x, y = _arr(data[0]), _arr(data[1])
            colour = PALETTE[i % len(PALETTE)]
            ax.plot(x, y, color=colour, marker=_MARKERS[i % len(_MARKERS)] if len(x) <= 40 else None,
                    ls=_LINESTYLES[i % len(_LINESTYLES)], label=_label(name, 32))
            if len(data) == 4 and data[2] is not None and data[3] is not None:
                lo, hi = _arr(data[2]), _arr(data[3])
                ax.fill_between(x, lo, hi, color=colour, alpha=0.18, linewidth=0)
        if threshold is not None and math.isfinite(float(threshold)):
            ax.axhline(float(threshold), ls="--", color=_THRESHOLD, lw=1.1, label=f"threshold {float(threshold):g}")
        if mark_x is not None:
            ax.axvline(float(mark_x), ls=":", color="#57606a", lw=1, label=mark_label)
        if xlog:
            ax.set_xscale("log")
        elif all(np.allclose(_arr(d[0]), np.round(_arr(d[0]))) for d in series.values()):
            # integer x (epochs, severities): no fractional ticks such as "epoch 1.5"
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _ygrid(ax)
        if len(series) > 1 or threshold is not None or mark_label:
            ax.legend(loc="best")

    return _render(draw)


def roc_curve_svg(fpr: Any, tpr: Any, title: str = "ROC curve", *, label: str | None = None) -> str:
    """ROC curve with the chance diagonal; the legend gives the trapezoidal AUC."""
    x, y = _arr(fpr), _arr(tpr)
    if x.shape != y.shape:
        raise ValueError("fpr and tpr must have the same length")
    order = np.argsort(x, kind="stable")
    auc = float(np.trapezoid(y[order], x[order])) if hasattr(np, "trapezoid") else float(np.trapz(y[order], x[order]))

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", color="#57606a", lw=1, label="chance")
        ax.plot(x, y, color=PALETTE[0], lw=1.8, label=f"{label + ' ' if label else ''}AUC = {auc:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
        ax.set_title(title)
        ax.set_aspect("equal")
        _ygrid(ax)
        ax.legend(loc="lower right")

    return _render(draw, (3.6, 3.2))


def _as_image(img: Any) -> tuple[np.ndarray, bool]:
    a = _arr(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"image must be HxW, HxWxC or CxHxW, got shape {np.shape(img)}")
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0.0 or hi > 1.0:  # outside the display box: stretch per image
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.clip(np.nan_to_num(a), 0.0, 1.0), a.ndim == 2


def image_grid_svg(images: Sequence[Any], titles: Sequence[Any] | None = None,
                   overlays: Sequence[Any] | None = None, *, ncols: int | None = None,
                   title: str = "", overlay_cmap: str = "inferno", overlay_alpha: float = 0.55,
                   overlay_label: str = "attribution (|value|, scaled per image)") -> str:
    """A grid of images (HxW, HxWx3 or 3xHxW), optionally with a heat map drawn over each
    (``overlays``: one HxW array per image, absolute value scaled to [0, 1] per image)."""
    imgs = [_as_image(im) for im in images]
    n = len(imgs)
    if n == 0:
        raise ValueError("image_grid_svg needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    if overlays is not None and len(overlays) != n:
        raise ValueError(f"{len(overlays)} overlays for {n} images")
    cols = ncols or min(n, 6)
    rows = math.ceil(n / cols)
    cell = min(1.1, 6.5 / cols)
    extra = 0.35 if title else 0.0

    def draw(fig: Figure) -> None:
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        mappable = None
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i >= n:
                continue
            img, gray = imgs[i]
            ax.imshow(img, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
            if overlays is not None and overlays[i] is not None:
                ov = np.abs(np.nan_to_num(_arr(overlays[i])))
                if ov.ndim == 3:
                    ov = ov.sum(axis=0) if ov.shape[0] in (1, 3) and ov.shape[-1] not in (1, 3) else ov.sum(axis=-1)
                top = float(np.nanmax(ov)) if ov.size else 0.0
                ov = ov / top if top > 0 else ov
                mappable = ax.imshow(ov, cmap=overlay_cmap, alpha=overlay_alpha, vmin=0, vmax=1,
                                     interpolation="nearest",
                                     extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
            if titles is not None:
                ax.set_title(_label(titles[i], 18), fontsize=7, fontweight="normal")
        if title:
            fig.suptitle(title, fontsize=9.5, fontweight="bold", color=_INK)
        if mappable is not None:
            cb = fig.colorbar(mappable, ax=axes.tolist(), shrink=0.7, pad=0.02)
            cb.set_label(overlay_label, fontsize=7)
            cb.outline.set_visible(False)

    return _render(draw, (cols * cell + (0.9 if overlays is not None else 0.2), rows * (cell + 0.2) + extra))
