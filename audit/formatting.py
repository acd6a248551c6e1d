"""How numbers, intervals and thresholds are written for people: one place for the
report, the CLI and the runner's messages, so the same value reads the same everywhere.

Pure Python on purpose (no numpy, no torch): the report, the CLI and `audit diff`
import it without pulling in the numeric stack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TypeGuard

__all__ = ["format_ci", "format_datetime", "format_metric", "format_number", "format_seconds",
           "format_threshold", "format_value", "is_number", "short_hash"]


def is_number(v: Any) -> TypeGuard[int | float]:
    """int or float, but not bool (a bool is a yes/no, not a quantity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def format_number(v: Any) -> str:
    """Compact, print-friendly number: 0.953, 12.3, 1,234, 3.2e-05; None/NaN -> n/a."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "n/a" if f != f else ("∞" if f > 0 else "−∞")
    a = abs(f)
    if f == 0:
        return "0.000"
    if a >= 1000:
        return f"{f:,.0f}"
    if a >= 100:
        return f"{f:.1f}"
    if a >= 0.001:
        return f"{f:.3f}"
    return f"{f:.1e}"


def format_ci(ci: Any) -> str:
    """[lo, hi] -> "[0.921, 0.978]"; no interval (None, wrong shape, a missing end) -> ""."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"[{format_number(ci[0])}, {format_number(ci[1])}]"


def format_metric(value: Any, ci: Any = None) -> str:
    """A value with its interval when it has one: "0.953 [0.921, 0.978]"."""
    text = format_ci(ci)
    return format_number(value) + (f" {text}" if text else "")


def format_value(v: Any) -> str:
    """A metric or table cell: ``{"value", "ci"}`` -> "0.953 [0.921, 0.978]"; lists and
    mappings item by item; None -> "—"."""
    if isinstance(v, Mapping) and "value" in v:
        return format_metric(v.get("value"), v.get("ci"))
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items())
    if v is None:
        return "—"
    if is_number(v) or isinstance(v, bool):
        return format_number(v)
    return str(v)


def format_threshold(t: Mapping[str, Any]) -> str:
    """{"op": "min", "limit": 0.95, "level": "must"} -> "≥ 0.95 (must)"."""
    op = {"min": "≥", "max": "≤"}.get(str(t.get("op")), str(t.get("op", "")))
    limit = t.get("limit")
    lim = f"{limit:g}" if is_number(limit) else format_value(limit)
    return f"{op} {lim} ({t.get('level') or 'must'})"


def short_hash(h: Any, n: int = 12) -> str:
    return str(h)[:n] if h else "—"


def format_seconds(s: Any) -> str:
    """0.25 -> "250 ms", 12.5 -> "12.5 s", 125 -> "2 min 05 s"; not a number -> "—"."""
    if not is_number(s) or not math.isfinite(float(s)):
        return "—"
    s = float(s)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round((s % 3600) / 60)):02d} min"


def format_datetime(s: Any) -> str:
    """An ISO 8601 time stamp to the minute, in UTC when it carries a time zone."""
    if not s:
        return "—"
    try:
        dt = datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return str(s)
    if dt.tzinfo is not None:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return dt.strftime("%Y-%m-%d %H:%M")
