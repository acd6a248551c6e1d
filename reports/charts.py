"""Chart kinds: the names checks use in ``{"type": "chart", "chart": KIND, "data": {...}}``.

A check computes; the report draws. Each KIND names one plotting function of
``reports.plots*`` and ``data`` holds that function's keyword arguments as JSON
(lists for arrays and tuples, ``null`` for NaN). The registry is the whole contract
between the two sides: adding a kind here is how a new chart becomes available to
checks, and a kind is never renamed (old ``results.json`` files must still render).

matplotlib is imported on the first render only, so building a report view for a
results file without charts stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CHARTS", "KINDS", "ChartError", "UnknownChart", "render_chart", "renderer"]

# KIND -> "module:function". One-to-one with the plotting functions.
CHARTS: dict[str, str] = {
    "confusion_matrix": "reports.plots:confusion_matrix_svg",
    "reliability_diagram": "reports.plots:reliability_diagram_svg",
    "bar": "reports.plots:bar_chart_svg",
    "line": "reports.plots:line_chart_svg",
    "roc": "reports.plots:roc_curve_svg",
    "image_grid": "reports.plots:image_grid_svg",
    "class_shares": "reports.plots_data:class_shares_svg",
    "importance_bars": "reports.plots_explain:importance_bars_svg",
    "beeswarm": "reports.plots_explain:beeswarm_svg",
    "group_rates": "reports.plots_fairness:group_rates_svg",
    "severity_curves": "reports.plots_robustness:severity_curves_svg",
}
KINDS: tuple[str, ...] = tuple(CHARTS)


class ChartError(ValueError):
    """Chart evidence the report cannot draw: an unknown kind or arguments its renderer
    does not take. The report shows the message in place of the figure."""


class UnknownChart(ChartError):
    pass


def renderer(kind: str) -> Callable[..., str]:
    """The plotting function for `kind`; :class:`UnknownChart` names the known kinds."""
    target = CHARTS.get(kind) if isinstance(kind, str) else None
    if target is None:
        raise UnknownChart(f"unknown chart kind {kind!r}; known kinds: {', '.join(KINDS)}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def render_chart(kind: str, data: Mapping[str, Any]) -> str:
    """Draw chart `kind` from its JSON keyword arguments; returns the SVG (not yet
    sanitized: embed it with :func:`reports.svg.svg_data_uri`).

    Raises :class:`ChartError` for an unknown kind or arguments the renderer does not
    accept; a renderer may raise ValueError for data it cannot draw (ragged arrays, ...).
    """
    fn = renderer(kind)
    if not isinstance(data, Mapping):
        raise ChartError(f"chart {kind!r}: data must be an object of keyword arguments, "
                         f"not {type(data).__name__}")
    try:
        inspect.signature(fn).bind(**{str(k): v for k, v in data.items()})
    except TypeError as exc:  # unexpected or missing argument: say which, for this kind
        raise ChartError(f"chart {kind!r}: {exc}") from None
    return fn(**data)
