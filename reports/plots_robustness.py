"""Robustness figures that need more than `reports.plots` offers: accuracy-vs-severity
curves for many corruptions at once, with the legend beside the axes so that nine or more
lines stay readable. Same style, palette and SVG conventions as `reports.plots`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from reports.plots import _LINESTYLES, _MARKERS, _THRESHOLD, PALETTE, _arr, _label, _render, _ygrid


def severity_curves_svg(severities: Sequence[int], curves: Mapping[str, Sequence[float]], clean: float | None,
                        *, title: str = "Accuracy vs corruption severity", ylabel: str = "accuracy") -> str:
    """One line per corruption over the severities, the clean accuracy (when known) as a
    dashed line."""
    sev = _arr(list(severities))

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for i, (name, ys) in enumerate(curves.items()):
            ax.plot(sev, _arr(ys), color=PALETTE[i % len(PALETTE)],
                    marker=_MARKERS[i % len(_MARKERS)], ls=_LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)],
                    label=_label(str(name).replace("_", " "), 20))
        if clean is not None and math.isfinite(float(clean)):
            ax.axhline(float(clean), ls="--", color=_THRESHOLD, lw=1.1, label=f"clean {float(clean):.3f}")
        ax.set_xticks(sev, [str(int(s)) for s in sev])
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("severity")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _ygrid(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)

    return _render(draw, (5.8, 3.2))
