"""results.json (schema ``audit-results/1``) -> one self-contained HTML page.

The same page is the source of the PDF (print CSS via ``@page``). Everything the
template shows is prepared here as a plain "view" (formatted strings, grouped
checks), so the template stays declarative and every user-supplied string reaches
it unescaped-as-data: Jinja's autoescape is on, and the only markup that passes
through untouched is our own CSS and figure SVG that went through
:func:`sanitize_svg`.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["AREAS", "render_html", "sanitize_svg", "anchor_for", "format_number", "format_value",
           "format_threshold", "headline_metric", "build_view"]

# --------------------------------------------------------------------------- constants

# The specification's areas, in report order (DESIGN.md, "report section" table).
AREAS: list[tuple[str, str, str]] = [
    ("data", "Data specification",
     "The datasets the audit used: sizes, classes, hashes and splits, and checks on their "
     "quality and on leakage between them."),
    ("algorithm", "Algorithm specification",
     "The model under audit: architecture, parameter count and layers; the loss and "
     "optimizer when the audit trained it."),
    ("training", "Training specification",
     "How the model was trained: hyper-parameters, learning curves, seed, device and the "
     "hash of the saved model."),
    ("evaluation", "Evaluation and validation",
     "Held-out performance with confidence intervals, per class, calibration and "
     "cross-domain validation."),
    ("robustness", "Robustness",
     "Behaviour under adversarial attacks and under corruptions of increasing severity."),
    ("explainability", "Explainability",
     "Feature attributions, whether they are faithful to the model, and sanity tests."),
    ("fairness", "Fairness",
     "Rates per group and the gaps between groups, with confidence intervals, "
     "including intersectional groups."),
    ("privacy", "Privacy",
     "Risk that an attacker can tell whether a record was in the training data."),
    ("deployment", "Deployment",
     "Latency, throughput, model size and the impact of quantization."),
]
_AREA_KEY = {title.lower(): key for key, title, _ in AREAS}

# Where a check goes when its results entry carries no `area` (longest prefix wins).
_PREFIX_AREA = {
    "data.": "data",
    "training.": "training",
    "performance.": "evaluation",
    "shift.": "robustness",
    "shift.domain": "evaluation",
    "robustness.": "robustness",
    "explain.": "explainability",
    "fairness.": "fairness",
    "privacy.": "privacy",
    "efficiency.": "deployment",
}

STATUSES = ["pass", "warn", "fail", "error", "skipped"]
STATUS_LABEL = {"pass": "Pass", "warn": "Warn", "fail": "Fail", "error": "Error", "skipped": "Skipped"}
STATUS_SYMBOL = {"pass": "✓", "warn": "!", "fail": "✗", "error": "⚠", "skipped": "–"}
STATUS_MEANING = {
    "pass": "every threshold is met with the whole confidence interval on the right side",
    "warn": "inconclusive: the interval straddles a threshold, or a should-level threshold failed",
    "fail": "a must-level threshold is missed by the point estimate",
    "error": "the check raised an exception; its traceback is shown",
    "skipped": "a requirement (data role, capability) was missing; the reason is shown",
}
VERDICT_LABEL = {"compliant": "Compliant", "non-compliant": "Non-compliant", "error": "Error"}

# Element ids the template uses for itself; a check whose id slugs to one gets a suffix.
_RESERVED_IDS = {"cover", "compliance-matrix", "provenance", "sign-off", "check"} | {
    f"sec-{key}" for key, _, _ in AREAS} | {"sec-other"}

_LAYER_PRINT_LIMIT = 25  # longer layer lists print as a summary by type
_CLASS_LIST_LIMIT = 12

# --------------------------------------------------------------------------- formatting


def _is_num(v: Any) -> bool:
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
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"[{format_number(ci[0])}, {format_number(ci[1])}]"


def format_value(v: Any) -> str:
    """A metric or table cell: ``{"value", "ci"}`` -> "0.953 [0.921, 0.978]"."""
    if isinstance(v, Mapping) and "value" in v:
        ci = format_ci(v.get("ci"))
        return format_number(v.get("value")) + (f" {ci}" if ci else "")
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items())
    if _is_num(v) or isinstance(v, bool) or v is None:
        return format_number(v) if v is not None else "—"
    return str(v)


def format_threshold(t: Mapping[str, Any]) -> str:
    """{"op": "min", "limit": 0.95, "level": "must"} -> "≥ 0.95 (must)"."""
    op = {"min": "≥", "max": "≤"}.get(str(t.get("op")), str(t.get("op", "")))
    limit = t.get("limit")
    lim = f"{limit:g}" if _is_num(limit) else format_value(limit)
    return f"{op} {lim} ({t.get('level') or 'must'})"


def short_hash(h: Any, n: int = 12) -> str:
    return str(h)[:n] if h else "—"


def format_seconds(s: Any) -> str:
    if not _is_num(s) or not math.isfinite(float(s)):
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
    if not s:
        return "—"
    try:
        dt = datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return str(s)
    if dt.tzinfo is not None:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return dt.strftime("%Y-%m-%d %H:%M")


def anchor_for(check_id: Any) -> str:
    """The HTML anchor of a check: its id, lower-case, runs of other characters as dots."""
    slug = re.sub(r"[^a-z0-9_-]+", ".", str(check_id).lower()).strip(".")
    return slug or "check"


# --------------------------------------------------------------------------- SVG safety

_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

_SVG_ELEMENTS = {
    "svg", "g", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "text", "tspan",
    "defs", "clipPath", "mask", "use", "image", "title", "desc", "linearGradient", "radialGradient",
    "stop", "pattern", "marker", "symbol",
}
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*$")
_URL_REF = re.compile(r"url\(\s*['\"]?([^)'\"]*)['\"]?\s*\)")
_HEADER = re.compile(r"^\s*(<\?xml[^>]*\?>)?\s*(<!--.*?-->\s*)*(<!DOCTYPE\s+svg[^>\[]*>)?", re.S)


# CSS properties that SVG also accepts as attributes. Moving them out of `style`
# keeps WeasyPrint's HTML cascade from parsing (and warning about) every one.
_PRESENTATION = {
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-linecap", "stroke-linejoin",
    "stroke-miterlimit", "stroke-dasharray", "stroke-dashoffset", "stroke-opacity", "opacity",
    "font-family", "font-size", "font-style", "font-weight", "font-variant", "text-anchor",
    "dominant-baseline", "alignment-baseline", "baseline-shift", "clip-rule", "color", "visibility",
    "letter-spacing", "word-spacing", "text-decoration", "stop-color", "stop-opacity", "image-rendering",
}


def _style_to_attributes(el: ET.Element) -> None:
    style = el.attrib.pop("style", None)
    if not style:
        return
    rest = []
    for decl in style.split(";"):
        name, sep, value = decl.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            continue
        if name in _PRESENTATION and "!important" not in value:
            el.set(name, value)
        else:
            rest.append(f"{name}: {value}")
    if rest:
        el.set("style", "; ".join(rest))


class UnsafeSVG(ValueError):
    pass


def sanitize_svg(svg: str, prefix: str = "fig") -> Markup:
    """Make a check's SVG safe to inline in the report.

    Keeps drawing elements only (no script, foreignObject, animation, external
    references, event handlers or style sheets), allows ``href`` only to fragments
    and to embedded raster images (``data:image/png;base64,...``), and prefixes
    every ``id`` (and the references to it) with `prefix` so that several figures
    on one page never share an id. Raises :class:`UnsafeSVG` when it is not
    well-formed SVG.
    """
    if not isinstance(svg, str) or "<svg" not in svg:
        raise UnsafeSVG("figure has no <svg> element")
    body = _HEADER.sub("", svg, count=1)
    if "<!DOCTYPE" in body or "<!ENTITY" in body:
        raise UnsafeSVG("figure SVG declares a document type or entities")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise UnsafeSVG(f"figure SVG is not well-formed: {exc}") from exc
    if _local(root.tag) != "svg":
        raise UnsafeSVG("figure root element is not <svg>")

    def ref(value: str) -> str | None:
        value = value.strip()
        return f"#{prefix}-{value[1:]}" if value.startswith("#") and len(value) > 1 else None

    def clean(el: ET.Element) -> None:
        # Plain names (the HTML parser puts <svg> content in the SVG namespace itself);
        # references use SVG 2's plain `href`, understood by browsers and WeasyPrint.
        el.tag = _local(el.tag)
        for name in list(el.attrib):
            value = el.attrib.pop(name)
            ns, local = _split(name)
            if local.lower().startswith("on") or "javascript:" in value.lower():
                continue
            if local == "href" and ns in ("", _XLINK_NS):
                new = ref(value) if value.strip().startswith("#") else (
                    value if _DATA_IMAGE.match(value.strip()) else None)
                if new is not None:
                    el.set("href", new)
                continue
            if ns == _XML_NS:
                el.set(f"xml:{local}", value)
                continue
            if ns:
                continue
            if local == "id":
                el.set(name, f"{prefix}-{value}")
                continue
            if "url(" in value:
                targets = _URL_REF.findall(value)
                if any(not t.startswith("#") for t in targets):
                    continue
                value = _URL_REF.sub(lambda m: f"url(#{prefix}-{m.group(1)[1:]})", value)
            el.set(name, value)
        _style_to_attributes(el)
        for child in list(el):
            if not isinstance(child.tag, str) or _local(child.tag) not in _SVG_ELEMENTS:
                el.remove(child)
            else:
                clean(child)

    clean(root)
    # matplotlib's only style sheet is `*{stroke-linejoin: round; stroke-linecap: butt}`;
    # style sheets are dropped (they would apply to the whole page), so inherit it instead.
    root.attrib.setdefault("stroke-linejoin", "round")
    root.attrib.setdefault("stroke-linecap", "butt")
    root.set("class", "chart")
    root.set("role", "img")
    root.set("xmlns", _SVG_NS)
    return Markup(ET.tostring(root, encoding="unicode", short_empty_elements=True))


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


def _local(tag: Any) -> str:
    return _split(str(tag))[1]


# --------------------------------------------------------------------------- view model


def _area_key(check: Mapping[str, Any]) -> str:
    area = str(check.get("area") or "").strip().lower()
    if area in _AREA_KEY:
        return _AREA_KEY[area]
    if area in {k for k, _, _ in AREAS}:
        return area
    name = str(check.get("check") or "")
    best = ""
    for prefix in _PREFIX_AREA:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return _PREFIX_AREA[best] if best else "other"


def _metric_order(check: Mapping[str, Any]) -> list[str]:
    info = check.get("metric_info") or {}
    metrics = check.get("metrics") or {}
    order = [m for m in info if m in metrics] + [m for m in metrics if m not in info]
    return order


def headline_metric(check: Mapping[str, Any]) -> str | None:
    """First metric (in metric_info order) that has a threshold, else the first metric."""
    order = _metric_order(check)
    thresholded = {t.get("metric") for t in check.get("thresholds") or []}
    for m in order:
        if m in thresholded:
            return m
    return order[0] if order else None


def _confidence(check: Mapping[str, Any], spec: Mapping[str, Any] | None) -> float | None:
    if _is_num(check.get("confidence")):
        return float(check["confidence"])
    for entry in (spec or {}).get("checks") or []:
        if isinstance(entry, Mapping) and entry.get("id") == check.get("id"):
            c = entry.get("confidence")
            return float(c) if _is_num(c) else 0.95
    return 0.95 if spec is not None else None


class _Figures:
    """Numbers figures in document order so inlined SVG ids are unique and stable."""

    def __init__(self) -> None:
        self.n = 0

    def inline(self, svg: str) -> tuple[Markup | None, str | None]:
        self.n += 1
        try:
            # Upper case: check anchors are lower case, so the two can never collide.
            return sanitize_svg(svg, prefix=f"F{self.n}"), None
        except UnsafeSVG as exc:
            return None, str(exc)


def _cell(v: Any) -> dict[str, Any]:
    numeric = _is_num(v) or (isinstance(v, Mapping) and "value" in v and (_is_num(v.get("value")) or v.get("value") is None))
    return {"text": format_value(v), "num": numeric}


def _table_view(ev: Mapping[str, Any]) -> dict[str, Any]:
    columns = [str(c) for c in ev.get("columns") or []]
    rows = [[_cell(c) for c in row] for row in ev.get("rows") or []]
    width = max([len(columns)] + [len(r) for r in rows]) if (columns or rows) else 0
    numeric_cols = []
    for j in range(width):
        cells = [r[j] for r in rows if j < len(r) and r[j]["text"] not in ("—", "n/a")]
        numeric_cols.append(bool(cells) and all(c["num"] for c in cells))
    for r in rows:  # align by column: a missing value in a numeric column sits with the numbers
        for j, c in enumerate(r):
            c["num"] = c["num"] or numeric_cols[j]
    return {"columns": columns, "rows": rows, "numeric": numeric_cols, "note": ev.get("note"),
            "wide": width > 6}


def _evidence_view(ev: Any, figs: _Figures) -> dict[str, Any]:
    if not isinstance(ev, Mapping):
        return {"type": "raw", "title": "Evidence", "text": json.dumps(ev, indent=2, default=str)}
    kind = ev.get("type")
    title = ev.get("title") or ""
    if kind == "table":
        return {"type": "table", "title": title, **_table_view(ev)}
    if kind == "figure":
        svg, err = figs.inline(ev.get("svg") or "")
        return {"type": "figure", "title": title, "svg": svg, "error": err, "caption": ev.get("caption")}
    if kind == "text":
        return {"type": "text", "title": title, "text": str(ev.get("text") or "")}
    if kind == "flags":
        items = [{"flag": str(f.get("flag", "")) if isinstance(f, Mapping) else str(f),
                  "detail": str(f.get("detail", "")) if isinstance(f, Mapping) else ""}
                 for f in ev.get("flags") or []]
        return {"type": "flags", "title": title, "flags": items}
    return {"type": "raw", "title": title or f"Evidence ({kind})",
            "text": json.dumps(ev, indent=2, default=str, ensure_ascii=False)}


def _check_view(check: Mapping[str, Any], spec: Mapping[str, Any] | None, figs: _Figures,
                anchors: set[str]) -> dict[str, Any]:
    status = str(check.get("status") or "error")
    info = check.get("metric_info") or {}
    metrics = check.get("metrics") or {}
    thresholds = [t for t in check.get("thresholds") or [] if isinstance(t, Mapping)]
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for t in thresholds:
        by_metric.setdefault(str(t.get("metric")), []).append(t)

    rows = []
    for m in _metric_order(check):
        mv = metrics.get(m) or {}
        value = mv.get("value") if isinstance(mv, Mapping) else mv
        ci = mv.get("ci") if isinstance(mv, Mapping) else None
        mi = info.get(m) or {}
        hib = mi.get("higher_is_better")
        rows.append({
            "name": m,
            "value": format_number(value),
            "ci": format_ci(ci) or "—",
            "direction": "" if hib is None else ("↑ higher is better" if hib else "↓ lower is better"),
            "thresholds": [{"text": format_threshold(t), "status": str(t.get("status") or "")}
                           for t in by_metric.get(m, [])],
            "description": mi.get("description") or "",
        })

    head = headline_metric(check)
    head_metric = metrics.get(head) if head else None
    anchor = anchor_for(check.get("id"))
    base, i = anchor, 2
    while anchor in anchors:
        anchor, i = f"{base}-{i}", i + 1
    anchors.add(anchor)
    return {
        "id": str(check.get("id") or ""),
        "anchor": anchor,
        "check": str(check.get("check") or ""),
        "version": check.get("version"),
        "clause": check.get("clause") or "",
        "status": status if status in STATUSES else "error",
        "summary": check.get("summary") or "",
        "data": check.get("data") or "",
        "message": check.get("message") or "",
        "traceback": check.get("traceback") or "",
        "duration": format_seconds(check.get("duration_s")),
        "confidence": _confidence(check, spec),
        "metrics": rows,
        "headline": {
            "name": head,
            "value": format_value(head_metric) if head_metric is not None else "—",
            "thresholds": [format_threshold(t) for t in by_metric.get(head or "", [])],
        },
        "evidence": [_evidence_view(ev, figs) for ev in check.get("evidence") or []],
    }


def _join(v: Any, limit: int | None = None) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, (list, tuple)):
        items = [str(x) for x in v]
        if limit is not None and len(items) > limit:
            return ", ".join(items[:limit]) + f", … (+{len(items) - limit} more)"
        return ", ".join(items) if items else "—"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items()) or "—"
    return format_value(v)


def _shape(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " × ".join(str(x) for x in v) if v else "—"
    return _join(v)


def _class_counts(ds: Mapping[str, Any]) -> dict[str, int] | None:
    cc = ds.get("class_counts")
    if isinstance(cc, Mapping):
        return {str(k): v for k, v in cc.items()}
    if isinstance(cc, (list, tuple)):
        classes = ds.get("classes") or list(range(len(cc)))
        return {str(c): n for c, n in zip(classes, cc)}
    return None


def _datasets_view(datasets: Mapping[str, Any]) -> dict[str, Any]:
    rows = []
    dist_roles: list[str] = []
    dist: dict[str, dict[str, Any]] = {}
    for role, ds in datasets.items():
        if not isinstance(ds, Mapping):
            continue
        classes = ds.get("classes")
        rows.append({
            "role": role, "name": ds.get("name") or "—", "kind": ds.get("kind") or "—",
            "n": format_number(ds.get("n")) if ds.get("n") is not None else "—",
            "shape": _shape(ds.get("shape")),
            "classes": (f"{len(classes)}: " + _join(classes, _CLASS_LIST_LIMIT)) if isinstance(classes, (list, tuple)) and classes else _join(classes),
            "sensitive": _join(ds.get("sensitive")),
            "source": _join(ds.get("source")),
            "sha256": ds.get("sha256") or "",
        })
        cc = _class_counts(ds)
        if cc:
            dist_roles.append(role)
            total = sum(v for v in cc.values() if _is_num(v)) or 0
            for cls, n in cc.items():
                cell = format_number(n)
                if total and _is_num(n):
                    cell += f" ({100.0 * n / total:.1f}%)"
                dist.setdefault(cls, {})[role] = cell
    distribution = None
    if dist and len(dist) <= 40:
        distribution = {"roles": dist_roles,
                        "rows": [{"cls": c, "cells": [d.get(r, "—") for r in dist_roles]} for c, d in dist.items()]}
    return {"rows": rows, "distribution": distribution}


def _model_view(model: Mapping[str, Any] | None, training: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not model:
        return None
    layers = [l for l in model.get("layers") or [] if isinstance(l, Mapping)]
    by_type: dict[str, list[int]] = {}
    for layer in layers:
        t = str(layer.get("type") or "?")
        entry = by_type.setdefault(t, [0, 0])
        entry[0] += 1
        entry[1] += int(layer.get("params") or 0)
    summary = sorted(({"type": t, "count": c, "params": format_number(p), "_p": p} for t, (c, p) in by_type.items()),
                     key=lambda r: (-r["_p"], r["type"]))
    facts = [
        ("Architecture", _join(model.get("architecture"))),
        ("Source", _join(model.get("source"))),
        ("Parameters", format_number(model.get("params")) if model.get("params") is not None else "—"),
        ("Trainable parameters", format_number(model.get("trainable_params")) if model.get("trainable_params") is not None else "—"),
        ("Input range", _join(model.get("input_range"))),
        ("Layers", format_number(len(layers)) if layers else "—"),
        ("SHA-256", model.get("sha256") or "—"),
    ]
    recipe = (training or {}).get("recipe") if isinstance(training, Mapping) else None
    if isinstance(recipe, Mapping):
        for key, label in (("loss", "Loss"), ("optimizer", "Optimizer"), ("lr", "Learning rate"),
                           ("weight_decay", "Weight decay"), ("scheduler", "Scheduler")):
            if key in recipe:
                facts.append((label, _join(recipe[key])))
    return {
        "facts": facts,
        "layers": [{"name": str(l.get("name") or ""), "type": str(l.get("type") or ""),
                    "params": format_number(l.get("params")) if l.get("params") is not None else "—"} for l in layers],
        "layer_summary": summary,
        "long": len(layers) > _LAYER_PRINT_LIMIT,
    }


def _training_view(training: Mapping[str, Any] | None, figs: _Figures) -> dict[str, Any] | None:
    if not isinstance(training, Mapping) or not training:
        return None
    recipe = training.get("recipe") or {}
    epochs = [e for e in training.get("epochs") or [] if isinstance(e, Mapping)]
    keys: list[str] = []
    for e in epochs:
        for k in e:
            if k not in keys:
                keys.append(k)
    best = training.get("best_epoch")
    charts: list[dict[str, Any]] = []
    chart_errors: list[str] = []
    if epochs:
        try:
            from reports import plots

            xs = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]
            loss_series = {label: (xs, [e.get(k) for e in epochs])
                           for k, label in (("train_loss", "training loss"), ("val_loss", "validation loss"))
                           if any(_is_num(e.get(k)) for e in epochs)}
            metric_name = recipe.get("metric") if isinstance(recipe, Mapping) else None
            # the validation metric per epoch: `val_metric`, or `val_<recipe.metric>` (val_accuracy)
            metric_key = next((k for k in ("val_metric", f"val_{metric_name}")
                               if any(_is_num(e.get(k)) for e in epochs)), "val_metric")
            metric_series = {f"validation {metric_name or 'metric'}": (xs, [e.get(metric_key) for e in epochs])} \
                if any(_is_num(e.get(metric_key)) for e in epochs) else {}
            mark = float(best) if _is_num(best) else None
            for title, ylabel, series in (("Loss per epoch", "loss", loss_series),
                                          ("Validation metric per epoch", str(metric_name or "metric"), metric_series)):
                if series:
                    svg = plots.line_chart_svg(series, "epoch", ylabel, title, mark_x=mark,
                                               mark_label="best epoch" if mark is not None else None)
                    inl, err = figs.inline(svg)
                    charts.append({"title": title, "svg": inl, "error": err})
        except Exception as exc:  # a report must not fail because a curve could not be drawn
            chart_errors.append(f"learning curves could not be drawn: {type(exc).__name__}: {exc}")
    return {
        "recipe": [(str(k), _join(v)) for k, v in (recipe.items() if isinstance(recipe, Mapping) else [])],
        "facts": [
            ("Best epoch", _join(best)),
            ("Epochs run", format_number(len(epochs)) if epochs else "—"),
            ("Wall time", format_seconds(training.get("wall_s"))),
            ("Device", _join(training.get("device"))),
            ("Seed", _join(training.get("seed"))),
            ("Saved model SHA-256", training.get("model_sha256") or "—"),
        ],
        "epoch_columns": keys,
        "epochs": [{"best": best is not None and e.get("epoch") == best,
                    "cells": [_cell(e.get(k)) for k in keys]} for e in epochs],
        "charts": charts,
        "chart_errors": chart_errors,
    }


def _flatten(prefix: str, v: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(v, Mapping):
        for k, x in v.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), x, out)
    else:
        out.append((prefix, v))


def _spec_text(spec: Any) -> str:
    if not spec:
        return ""
    try:
        import yaml

        return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    except Exception:
        return json.dumps(spec, indent=2, ensure_ascii=False, default=str)


def _provenance_view(results: Mapping[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    prov = results.get("provenance") or {}
    model = results.get("model") or {}
    training = results.get("training") or {}
    hashes: list[tuple[str, str]] = [("Audit spec", prov.get("spec_sha256") or "—"),
                                     ("Model", prov.get("model_sha256") or model.get("sha256") or "—")]
    data_hashes = dict(prov.get("data_sha256") or {})
    for role, ds in (results.get("datasets") or {}).items():
        if isinstance(ds, Mapping) and ds.get("sha256") and role not in data_hashes:
            data_hashes[role] = ds["sha256"]
    hashes += [(f"Dataset “{role}”", h or "—") for role, h in data_hashes.items()]
    if isinstance(training, Mapping) and training.get("model_sha256"):
        hashes.append(("Trained model (saved)", training["model_sha256"]))
    compute = prov.get("compute") or {}
    run = [
        ("Started", format_datetime(prov.get("started_at"))),
        ("Duration", format_seconds(prov.get("duration_s"))),
        ("Seed", _join(prov.get("seed"))),
        ("Device", _join(prov.get("device"))),
    ] + [(k.replace("_", " ").capitalize(), format_value(v)) for k, v in compute.items()]
    timings: list[tuple[str, Any]] = []
    _flatten("", prov.get("timings") or {}, timings)
    return {
        "run": run,
        "hashes": hashes,
        "versions": [(str(k), _join(v)) for k, v in (prov.get("versions") or {}).items()],
        "timings": [(k, format_seconds(v) if _is_num(v) else format_value(v)) for k, v in timings],
        "durations": [{"id": c["id"], "anchor": c["anchor"], "check": c["check"], "version": c["version"],
                       "status": c["status"], "duration": c["duration"]} for c in checks],
        "spec": _spec_text(prov.get("spec")),
    }


def build_view(results: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template needs, formatted. Missing optional keys are tolerated."""
    figs = _Figures()
    prov = results.get("provenance") or {}
    spec = prov.get("spec") if isinstance(prov.get("spec"), Mapping) else None
    anchors: set[str] = set(_RESERVED_IDS)
    raw_checks = [c for c in results.get("checks") or [] if isinstance(c, Mapping)]
    # Build the per-area data/model/training content first so figure numbering follows the page.
    datasets = _datasets_view(results.get("datasets") or {})
    model = _model_view(results.get("model"), results.get("training"))
    training_raw = results.get("training")
    area_of = [_area_key(c) for c in raw_checks]

    checks_by_area: dict[str, list[dict[str, Any]]] = {}
    views: list[dict[str, Any] | None] = [None] * len(raw_checks)
    training = None
    for key, _title, _scope in AREAS + [("other", "Other checks", "")]:
        if key == "training":
            training = _training_view(training_raw, figs)
        for i, c in enumerate(raw_checks):
            if area_of[i] == key:
                v = _check_view(c, spec, figs, anchors)
                views[i] = v
                checks_by_area.setdefault(key, []).append(v)
    checks = [v for v in views if v is not None]

    summary = {s: 0 for s in STATUSES}
    given = results.get("summary")
    if isinstance(given, Mapping):
        for s in STATUSES:
            summary[s] = int(given.get(s) or 0)
    else:
        for c in checks:
            summary[c["status"]] += 1

    areas = []
    for n, (key, title, scope) in enumerate(AREAS, start=1):
        cs = checks_by_area.get(key, [])
        has_content = bool(cs) or key in ("data", "algorithm") or (key == "training" and training is not None)
        areas.append({"key": key, "num": n, "title": title, "scope": scope, "checks": cs,
                      "major": has_content, "statuses": Counter(c["status"] for c in cs)})
    if checks_by_area.get("other"):
        cs = checks_by_area["other"]
        areas.append({"key": "other", "num": len(AREAS) + 1, "title": "Other checks",
                      "scope": "Checks whose area is not one of the specification's areas.",
                      "checks": cs, "major": True, "statuses": Counter(c["status"] for c in cs)})
    area_anchor = {c["anchor"]: a["key"] for a in areas for c in a["checks"]}

    verdict = str(results.get("verdict") or "error")
    verdict_note = _verdict_note(verdict, summary)
    model_raw = results.get("model") or {}
    versions = prov.get("versions") or {}
    return {
        "name": results.get("name") or "Model audit",
        "standard": results.get("standard") or "",
        "schema": results.get("schema") or "",
        "verdict": verdict if verdict in VERDICT_LABEL else "error",
        "verdict_label": VERDICT_LABEL.get(verdict, verdict.capitalize()),
        "verdict_note": verdict_note,
        "summary": summary,
        "n_checks": len(checks),
        "date": format_datetime(prov.get("started_at")),
        "model_name": _join(model_raw.get("architecture")) if model_raw.get("architecture") else "",
        "model_hash": prov.get("model_sha256") or model_raw.get("sha256") or "",
        "spec_hash": prov.get("spec_sha256") or "",
        "seed": _join(prov.get("seed")),
        "device": _join(prov.get("device")),
        "audit_version": versions.get("audit") or "",
        "duration": format_seconds(prov.get("duration_s")),
        "checks": checks,
        "area_of_anchor": area_anchor,
        "areas": areas,
        "datasets": datasets,
        "model": model,
        "training": training,
        "trained": training is not None,
        "provenance": _provenance_view(results, checks),
        "statuses": [{"key": s, "label": STATUS_LABEL[s], "symbol": STATUS_SYMBOL[s], "meaning": STATUS_MEANING[s]}
                     for s in STATUSES],
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _verdict_note(verdict: str, s: Mapping[str, int]) -> str:
    rest = []
    if s.get("pass"):
        rest.append(f"{s['pass']} passed")
    if s.get("warn"):
        rest.append(f"{s['warn']} inconclusive (warn)")
    if s.get("skipped"):
        rest.append(f"{s['skipped']} skipped")
    tail = (" " + ", ".join(rest) + ".") if rest else ""
    if verdict == "compliant":
        return "No check failed or raised an error." + tail
    if verdict == "non-compliant":
        head = f"{_plural(s.get('fail', 0), 'check')} failed a must-level threshold."
        if s.get("error"):
            head += f" {_plural(s['error'], 'check')} raised an error."
        return head + tail
    head = f"{_plural(s.get('error', 0), 'check')} raised an error, so the audit is incomplete."
    if s.get("fail"):
        head += f" {_plural(s['fail'], 'check')} failed a must-level threshold."
    return head + tail


# --------------------------------------------------------------------------- rendering


def _load_template(name: str) -> str:
    return resources.files("templates").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (_load_template(name), None, lambda: False)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["short"] = short_hash
    env.tests["sha"] = lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{32,}", v) is not None
    env.globals["status_label"] = STATUS_LABEL
    env.globals["status_symbol"] = STATUS_SYMBOL
    return env


@lru_cache(maxsize=1)
def _css() -> Markup:
    css = _load_template("report.css")
    if "</" in css:  # never let the style sheet close its own <style> element
        raise ValueError("report.css must not contain '</'")
    return Markup(css)


def render_html(results: Mapping[str, Any]) -> str:
    """Render the compliance report as one self-contained HTML document."""
    view = build_view(results)
    return environment().get_template("report.html.j2").render(r=view, css=_css())

