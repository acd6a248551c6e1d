"""results.json (schema ``audit-results/1``) -> the view the report template shows.

Everything is read from the results as they are: a check's section is its ``area``
key, its interval level its ``confidence``, its sanity flags its ``flags``, what a
threshold was judged on the threshold entry's ``value``/``ci``. Nothing is guessed
from check names or the spec; a check with no known area goes to "Other checks".

Every string here is data for an autoescaping template. Figures (chart evidence drawn
by ``reports.charts``, third-party SVG, the training curves) become ``data:`` URIs for
``<img>`` through ``reports.svg.svg_data_uri``: the one door figure SVG has into the page.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from audit.check import DEFAULT_CONFIDENCE
from audit.formatting import (format_ci, format_datetime, format_metric, format_number, format_seconds,
                              format_threshold, format_value, is_number)
from audit.results import AREA_KEYS, AREAS
from reports.charts import render_chart
from reports.standards_view import coverage_legend, signing_view, standards_view
from reports.svg import svg_data_uri

__all__ = ["STATUSES", "anchor_for", "build_view", "headline_metric"]

# The report shows "info" (reported, not judged) besides the runner's statuses.
STATUSES = ["pass", "warn", "fail", "error", "skipped", "info"]
STATUS_LABEL = {"pass": "Pass", "warn": "Warn", "fail": "Fail", "error": "Error", "skipped": "Skipped",
                "info": "Info"}
STATUS_SYMBOL = {"pass": "✓", "warn": "!", "fail": "✗", "error": "⚠", "skipped": "–", "info": "i"}
STATUS_MEANING = {
    "pass": "every threshold is met with the whole confidence interval on the right side",
    "warn": "not a clean pass: a should-level threshold failed, an interval straddles a threshold "
            "(inconclusive), the sample is too small to pass, or a sanity flag was raised; the reason "
            "is named",
    "fail": "a must-level threshold is missed by the point estimate",
    "error": "the check raised an exception; its traceback is shown",
    "skipped": "a requirement (data role, capability) was missing; the reason is shown",
    "info": "the check has no thresholds: its measurements are reported, not judged",
}
VERDICT_LABEL = {"compliant": "Compliant", "non-compliant": "Non-compliant", "error": "Error",
                 "not assessed": "Not assessed"}
# Why a check is not a clean pass, by the runner's reason kinds (results.json `reasons`).
REASON_LABEL = {"must_fail": "Failed (must)", "should_fail": "Failed at should level",
                "inconclusive": "Inconclusive", "small_sample": "Too few samples",
                "holm": "Not significant after Holm", "flag": "Sanity flag"}
# A threshold's badge: its status, with a should-level failure shown apart from a must one.
THRESHOLD_BADGE = {"pass": ("pass", "Pass"), "inconclusive": ("warn", "Inconclusive"),
                   "fail": ("fail", "Fail"), "warn": ("warn", "Warn")}

OTHER_AREA = ("other", "Other checks", "Checks whose results name no area of the specification.")

# Element ids the template uses for itself; a check whose id slugs to one gets a suffix.
_RESERVED_IDS = {"cover", "compliance-matrix", "provenance", "sign-off", "check"} | {
    f"sec-{key}" for key in (*AREA_KEYS, OTHER_AREA[0])}
# Parameters the check header already shows.
_SHOWN_PARAMS = {"data", "confidence"}

_LAYER_PRINT_LIMIT = 25  # longer layer lists print as a summary by type
_CLASS_LIST_LIMIT = 12


def anchor_for(check_id: Any) -> str:
    """The HTML anchor of a check: its id, lower-case, runs of other characters as dots."""
    slug = re.sub(r"[^a-z0-9_-]+", ".", str(check_id).lower()).strip(".")
    return slug or "check"


def _mapping(v: Any) -> Mapping[str, Any]:
    """`v` when it is a mapping, else an empty one: a tampered or older file may hold anything."""
    return v if isinstance(v, Mapping) else {}


def _metric_order(check: Mapping[str, Any]) -> list[str]:
    info = _mapping(check.get("metric_info"))
    metrics = _mapping(check.get("metrics"))
    return [m for m in info if m in metrics] + [m for m in metrics if m not in info]


def headline_metric(check: Mapping[str, Any]) -> str | None:
    """First metric (in metric_info order) that has a threshold, else the first metric."""
    order = _metric_order(check)
    thresholded = {t.get("metric") for t in check.get("thresholds") or [] if isinstance(t, Mapping)}
    for m in order:
        if m in thresholded:
            return m
    return order[0] if order else None


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


# --------------------------------------------------------------------------- figures


def _figure(title: str, caption: Any, draw: Callable[[], str]) -> dict[str, Any]:
    """A figure for the template: `src` a sanitized SVG data URI, or `error` saying why
    not. A figure that cannot be drawn never stops the report."""
    src, error = None, None
    try:
        src = svg_data_uri(draw())
    except Exception as exc:  # noqa: BLE001 - any failure of one figure is shown in its place
        error = str(exc) or type(exc).__name__
    return {"type": "figure", "title": title, "caption": str(caption or ""), "src": src, "error": error}


def _chart(kind: Any, data: Any) -> Callable[[], str]:
    return lambda: render_chart(kind, data)


# --------------------------------------------------------------------------- evidence


def _cell(v: Any) -> dict[str, Any]:
    numeric = is_number(v) or (isinstance(v, Mapping) and "value" in v
                               and (is_number(v.get("value")) or v.get("value") is None))
    return {"text": format_value(v), "num": numeric}


def _table_view(ev: Mapping[str, Any]) -> dict[str, Any]:
    columns = [str(c) for c in ev.get("columns") or []]
    rows = [[_cell(c) for c in row] for row in ev.get("rows") or [] if isinstance(row, (list, tuple))]
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


def _flag_items(flags: Any) -> list[dict[str, str]]:
    return [{"flag": str(f.get("flag", "")), "detail": str(f.get("detail", ""))} if isinstance(f, Mapping)
            else {"flag": str(f), "detail": ""} for f in flags or []]


def _evidence_view(ev: Any) -> dict[str, Any]:
    if not isinstance(ev, Mapping):
        return {"type": "raw", "title": "Evidence", "text": json.dumps(ev, indent=2, default=str)}
    kind = ev.get("type")
    title = str(ev.get("title") or "")
    if kind == "table":
        return {"type": "table", "title": title, **_table_view(ev)}
    if kind == "chart":
        return _figure(title, ev.get("caption"), _chart(ev.get("chart"), ev.get("data")))
    if kind == "figure":
        return _figure(title, ev.get("caption"), lambda: ev.get("svg") or "")
    if kind == "text":
        return {"type": "text", "title": title, "text": str(ev.get("text") or "")}
    if kind == "tokens":
        return _tokens_view(ev, title)
    if kind == "flags":  # results written before flags moved to the check's `flags`
        return {"type": "flags", "title": title, "flags": _flag_items(ev.get("flags"))}
    return {"type": "raw", "title": title or f"Evidence ({kind})",
            "text": json.dumps(ev, indent=2, default=str, ensure_ascii=False)}


_TOKEN_ROWS, _TOKENS_PER_ROW = 40, 400  # drawn at most; the rest is said


def _token_style(score: Any, scale: float) -> str:
    """Background colour from a number only (never from the data's text): warm for a
    positive score, cool for a negative one, opacity by |score| / the row's largest."""
    if not is_number(score) or not scale:
        return ""
    s = max(-1.0, min(1.0, float(score) / scale))
    r, g, b = (213, 94, 0) if s >= 0 else (0, 114, 178)
    return f"background-color: rgba({r}, {g}, {b}, {0.8 * abs(s):.3f})"


def _tokens_view(ev: Mapping[str, Any], title: str) -> dict[str, Any]:
    """Highlighted text: each token an escaped span with an inline colour from its score."""
    rows = []
    raw_rows = [r for r in ev.get("rows") or [] if isinstance(r, Mapping)]
    for r in raw_rows[:_TOKEN_ROWS]:
        toks = [str(t) for t in (r.get("tokens") or [])][:_TOKENS_PER_ROW]
        scores = list(r.get("scores") or [])[: len(toks)]
        scores += [None] * (len(toks) - len(scores))
        focus = r.get("focus") if isinstance(r.get("focus"), int) and not isinstance(r.get("focus"), bool) else None
        finite = [abs(float(v)) for j, v in enumerate(scores) if is_number(v) and j != focus]
        scale = max(finite) if finite else 0.0
        rows.append({"label": str(r.get("label") or ""),
                     "tokens": [{"text": t, "style": _token_style(v, scale), "focus": j == focus,
                                 "score": format_number(v) if is_number(v) else ""}
                                for j, (t, v) in enumerate(zip(toks, scores))],
                     "more": max(0, len(r.get("tokens") or []) - _TOKENS_PER_ROW)})
    return {"type": "tokens", "title": title, "caption": str(ev.get("caption") or ""), "rows": rows,
            "more": max(0, len(raw_rows) - _TOKEN_ROWS)}


# --------------------------------------------------------------------------- checks


def _threshold_view(t: Mapping[str, Any], metric: Any) -> dict[str, Any]:
    """A threshold, and what it was judged on when that differs from the metric shown
    beside it (e.g. an interval widened for a family-wise error rate)."""
    judged = format_metric(t.get("value"), t.get("ci")) if "value" in t else ""
    shown = format_value(metric) if isinstance(metric, Mapping) else ""
    status = str(t.get("status") or "")
    style, label = THRESHOLD_BADGE.get(status, ("error", status or "?"))
    if status == "fail" and t.get("level") == "should":
        style, label = "warn", "Fail (should)"
    reason = _mapping(t.get("reason"))
    return {"text": format_threshold(t), "status": status, "badge": style, "label": label,
            "reason": str(reason.get("text") or "") if reason.get("kind") in ("small_sample", "holm") else "",
            "judged": judged, "judged_differs": bool(judged) and judged != shown}


def _reasons(check: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for r in check.get("reasons") or []:
        if isinstance(r, Mapping) and r.get("kind") != "flag":  # flags have their own box
            kind = str(r.get("kind") or "")
            out.append({"kind": kind, "label": REASON_LABEL.get(kind, kind), "text": str(r.get("text") or "")})
    return out


def _param_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


def _confidence(check: Mapping[str, Any]) -> float:
    c = check.get("confidence")
    return float(c) if is_number(c) and 0 < c < 1 else DEFAULT_CONFIDENCE


def _check_view(check: Mapping[str, Any], anchors: set[str]) -> dict[str, Any]:
    status = str(check.get("status") or "error")
    info = _mapping(check.get("metric_info"))
    metrics = _mapping(check.get("metrics"))
    thresholds = [t for t in check.get("thresholds") or [] if isinstance(t, Mapping)]
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for t in thresholds:
        by_metric.setdefault(str(t.get("metric")), []).append(t)

    rows = []
    for m in _metric_order(check):
        mv = metrics.get(m)
        value = mv.get("value") if isinstance(mv, Mapping) else mv
        mi = _mapping(info.get(m))
        hib, unit = mi.get("higher_is_better"), mi.get("unit") or ""
        rows.append({
            "name": m,
            "value": format_number(value) + (f" {unit}" if unit and value is not None else ""),
            "ci": format_ci(mv.get("ci") if isinstance(mv, Mapping) else None) or "—",
            "n": format_number(mv.get("n")) if isinstance(mv, Mapping) and is_number(mv.get("n")) else "—",
            "direction": "" if hib is None else ("↑ higher is better" if hib else "↓ lower is better"),
            "thresholds": [_threshold_view(t, mv) for t in by_metric.get(m, [])],
            "description": mi.get("description") or "",
        })

    head = headline_metric(check)
    head_thresholds = by_metric.get(head or "", [])
    # The matrix shows what the headline threshold was judged on; without one, the metric.
    if head_thresholds and "value" in head_thresholds[0]:
        head_value = format_metric(head_thresholds[0].get("value"), head_thresholds[0].get("ci"))
    else:
        head_value = format_value(metrics[head]) if head is not None and head in metrics else "—"
    anchor = anchor_for(check.get("id"))
    base, i = anchor, 2
    while anchor in anchors:
        anchor, i = f"{base}-{i}", i + 1
    anchors.add(anchor)
    params = _mapping(check.get("params"))
    return {
        "id": str(check.get("id") or ""),
        "anchor": anchor,
        "check": str(check.get("check") or ""),
        "version": check.get("version"),
        "clause": check.get("clause") or "",
        "status": status if status in STATUS_LABEL else "error",
        "summary": check.get("summary") or "",
        "data": check.get("data") or "",
        "message": check.get("message") or "",
        "traceback": check.get("traceback") or "",
        "duration": format_seconds(check.get("duration_s")),
        "confidence": _confidence(check),
        "params": [(str(k), _param_text(v)) for k, v in params.items() if k not in _SHOWN_PARAMS],
        "flags": _flag_items(check.get("flags")),
        "reasons": _reasons(check),
        "metrics": rows,
        "headline": {"name": head, "value": head_value,
                     "thresholds": [format_threshold(t) for t in head_thresholds]},
        "evidence": [_evidence_view(ev) for ev in check.get("evidence") or []],
    }


def _area_of(check: Mapping[str, Any]) -> str:
    area = check.get("area")
    return area if isinstance(area, str) and area in AREA_KEYS else OTHER_AREA[0]


# --------------------------------------------------------------------------- data, model, training


def _shape(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " × ".join(str(x) for x in v) if v else "—"
    return _join(v)


def _class_counts(ds: Mapping[str, Any]) -> dict[str, Any] | None:
    cc = ds.get("class_counts")
    if isinstance(cc, Mapping):
        return {str(k): v for k, v in cc.items()}
    if isinstance(cc, (list, tuple)):
        classes = ds.get("classes") or list(range(len(cc)))
        return {str(c): n for c, n in zip(classes, cc)}
    return None


def _dataset_notes(ds: Mapping[str, Any]) -> list[str]:
    """Text and token data: the tokenizer, truncation, the tag scheme, example texts."""
    notes = []
    tok = _mapping(ds.get("tokenizer_summary"))
    if tok:
        src = tok.get("source")
        notes.append(f"Tokenized by the model's {'Hugging Face' if tok.get('type') == 'hf' else 'word'} tokenizer"
                     + (f" ({tok.get('class')}, {src})" if src else "")
                     + (f", vocabulary {format_number(tok.get('vocab_size'))}" if is_number(tok.get("vocab_size")) else "")
                     + (f", at most {format_number(tok.get('max_len'))} tokens" if is_number(tok.get("max_len")) else "")
                     + ".")
    tr = _mapping(ds.get("truncation"))
    if tr:
        words = f", {format_number(tr.get('words_lost'))} words (counted as predicted O)" if "words_lost" in tr else ""
        notes.append(f"Truncation: {format_number(tr.get('rows'))} of {format_number(tr.get('of'))} rows longer than "
                     f"{format_number(tr.get('max_len'))} tokens; {format_number(tr.get('tokens_lost'))} sub-tokens "
                     f"lost{words}.")
    elif tok:
        notes.append("Truncation: none (every row fits the model's length).")
    scheme = _mapping(ds.get("tag_scheme"))
    if scheme:
        notes.append(f"Tags: {scheme.get('scheme')} ({'declared' if scheme.get('declared') else 'inferred'}); "
                     f"{format_number(scheme.get('invalid') or 0)} tags break the scheme. A word's prediction is its "
                     f"first sub-token's (the Hugging Face convention).")
    for ex in (ds.get("examples") or [])[:3]:
        if isinstance(ex, Mapping):
            notes.append(f"Example ({ex.get('label')}): “{str(ex.get('text') or '')[:200]}”")
    return notes


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
            "classes": (f"{len(classes)}: " + _join(classes, _CLASS_LIST_LIMIT))
            if isinstance(classes, (list, tuple)) and classes else _join(classes),
            "sensitive": _join(ds.get("sensitive")),
            "source": _join(ds.get("source")),
            "sha256": ds.get("sha256") or "",
            "notes": _dataset_notes(ds),
        })
        cc = _class_counts(ds)
        if cc:
            dist_roles.append(role)
            total = sum(v for v in cc.values() if is_number(v)) or 0
            for cls, n in cc.items():
                cell = format_number(n)
                if total and is_number(n):
                    cell += f" ({100.0 * n / total:.1f}%)"
                dist.setdefault(cls, {})[role] = cell
    distribution = None
    if dist and len(dist) <= 40:
        distribution = {"roles": dist_roles,
                        "rows": [{"cls": c, "cells": [d.get(r, "—") for r in dist_roles]} for c, d in dist.items()]}
    return {"rows": rows, "distribution": distribution}


def _model_view(model: Any, training: Any) -> dict[str, Any] | None:
    if not isinstance(model, Mapping) or not model:
        return None
    layers = [layer for layer in model.get("layers") or [] if isinstance(layer, Mapping)]
    by_type: dict[str, list[int]] = {}
    for layer in layers:
        entry = by_type.setdefault(str(layer.get("type") or "?"), [0, 0])
        entry[0] += 1
        entry[1] += int(layer["params"]) if is_number(layer.get("params")) else 0
    summary = [{"type": t, "count": c, "params": format_number(p)}
               for t, (c, p) in sorted(by_type.items(), key=lambda kv: (-kv[1][1], kv[0]))]

    def count(key: str) -> str:
        return format_number(model.get(key)) if model.get(key) is not None else "—"

    facts = [
        ("Architecture", _join(model.get("architecture"))),
        ("Source", _join(model.get("source"))),
        ("Parameters", count("params")),
        ("Trainable parameters", count("trainable_params")),
        ("Input range", _join(model.get("input_range"))),
        ("Layers", format_number(len(layers)) if layers else "—"),
        ("SHA-256", model.get("sha256") or "—"),
    ]
    recipe = training.get("recipe") if isinstance(training, Mapping) else None
    if isinstance(recipe, Mapping):
        for key, label in (("loss", "Loss"), ("optimizer", "Optimizer"), ("lr", "Learning rate"),
                           ("weight_decay", "Weight decay"), ("scheduler", "Scheduler")):
            if key in recipe:
                facts.append((label, _join(recipe[key])))
    return {
        "facts": facts,
        "layers": [{"name": str(layer.get("name") or ""), "type": str(layer.get("type") or ""),
                    "params": format_number(layer.get("params")) if layer.get("params") is not None else "—"}
                   for layer in layers],
        "layer_summary": summary,
        "long": len(layers) > _LAYER_PRINT_LIMIT,
    }


def _training_charts(epochs: list[Mapping[str, Any]], recipe: Mapping[str, Any], best: Any) -> list[dict[str, Any]]:
    """Loss and validation-metric curves from the per-epoch record, drawn as `line` charts."""
    xs = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]

    def series(key: str) -> list[Any] | None:
        ys = [e.get(key) if is_number(e.get(key)) else None for e in epochs]
        return ys if any(y is not None for y in ys) else None

    loss = {label: [xs, ys] for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss"))
            if (ys := series(key)) is not None}
    metric_name = recipe.get("metric")
    # the validation metric per epoch: `val_metric`, or `val_<recipe.metric>` (val_accuracy)
    metric = next(({f"validation {metric_name or 'metric'}": [xs, ys]}
                   for key in ("val_metric", f"val_{metric_name}") if (ys := series(key)) is not None), {})
    mark = {"mark_x": best, "mark_label": "best epoch"} if is_number(best) else {}
    caption = "From the training record" + (f"; the dotted line marks the best epoch ({best})." if mark else ".")
    charts = []
    for title, ylabel, data in (("Loss per epoch", "loss", loss),
                                ("Validation metric per epoch", str(metric_name or "metric"), metric)):
        if data:
            args = {"series": data, "xlabel": "epoch", "ylabel": ylabel, "title": title, **mark}
            charts.append(_figure(title, caption, _chart("line", args)))
    return charts


def _training_view(training: Any) -> dict[str, Any] | None:
    if not isinstance(training, Mapping) or not training:
        return None
    recipe = _mapping(training.get("recipe"))
    epochs = [e for e in training.get("epochs") or [] if isinstance(e, Mapping)]
    keys: list[str] = []
    for e in epochs:
        keys += [k for k in e if k not in keys]
    best = training.get("best_epoch")
    return {
        "recipe": [(str(k), _join(v)) for k, v in recipe.items()],
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
        "charts": _training_charts(epochs, recipe, best) if epochs else [],
    }


# --------------------------------------------------------------------------- provenance


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
    except Exception:  # noqa: BLE001 - a spec YAML cannot dump is still shown, as JSON
        return json.dumps(spec, indent=2, ensure_ascii=False, default=str)


def _execution_rows(ex: Any) -> list[tuple[str, str]]:
    """How the audit ran: the engine, its workers, and each streamed dataset's pass."""
    if not isinstance(ex, Mapping) or not ex.get("engine"):
        return []
    engine = str(ex["engine"])
    bits = []
    if engine == "ray":
        bits.append(_plural(int(ex.get("workers") or 0), "worker"))
        if ex.get("address"):
            bits.append(f"address {ex['address']}")
        if ex.get("ray_version"):
            bits.append(f"Ray {ex['ray_version']}")
        if ex.get("num_gpus_per_worker"):
            bits.append(f"{format_value(ex['num_gpus_per_worker'])} GPU per worker")
    if ex.get("engine_setting") == "auto":
        bits.append("chosen by size (engine: auto)")
    rows = [("Engine", engine + (f" ({', '.join(bits)})" if bits else ""))]
    for name, d in (ex.get("datasets") or {}).items():
        if not isinstance(d, Mapping):
            continue
        parts = [f"{int(d.get('rows') or 0):,} rows", _plural(int(d.get("shards") or 1), "input file")]
        if d.get("engine") == "ray":
            parts.append(f"{_plural(int(d.get('tasks') or 0), 'Ray shard')} on {_plural(int(d.get('workers') or 0), 'worker')}")
        parts.append(_plural(int(d.get("blocks") or 0), "block") + f" of {int(d.get('block_rows') or 0):,} rows")
        parts.append("model pass" if d.get("model_pass") else "read only")
        if is_number(d.get("seconds")):
            parts.append(format_seconds(d["seconds"]))
        rows.append((f"Pass over “{name}”", f"streamed ({d.get('engine')}): " + ", ".join(parts)))
    for name, why in (ex.get("failed") or {}).items():
        rows.append((f"Pass over “{name}”", f"failed: {why}"))
    return rows


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
    ] + ([("Task", f"{prov.get('task')} ({prov.get('task_source')})" if prov.get("task_source")
           else str(prov.get("task")))] if prov.get("task") else []) + _execution_rows(prov.get("execution")) + [
        (k.replace("_", " ").capitalize(), format_value(v)) for k, v in compute.items()]
    timings: list[tuple[str, Any]] = []
    _flatten("", prov.get("timings") or {}, timings)
    return {
        "run": run,
        "hashes": hashes,
        "versions": [(str(k), _join(v)) for k, v in (prov.get("versions") or {}).items()],
        "timings": [(k, format_seconds(v) if is_number(v) else format_value(v)) for k, v in timings],
        "durations": [{"id": c["id"], "anchor": c["anchor"], "check": c["check"], "version": c["version"],
                       "status": c["status"], "duration": c["duration"]} for c in checks],
        "spec": _spec_text(prov.get("spec")),
    }


# --------------------------------------------------------------------------- the page


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _verdict_note(verdict: str, s: Mapping[str, int]) -> str:
    rest = []
    if s.get("pass"):
        rest.append(f"{s['pass']} passed")
    if s.get("warn"):
        rest.append(f"{s['warn']} with a warning (named below)")
    if s.get("info"):
        rest.append(f"{s['info']} reported without thresholds")
    if s.get("skipped"):
        rest.append(f"{s['skipped']} skipped")
    tail = (" " + ", ".join(rest) + ".") if rest else ""
    if verdict == "compliant":
        return "No check failed or raised an error." + tail
    if verdict == "not assessed":
        return "No check was judged against a threshold." + tail
    if verdict == "non-compliant":
        head = f"{_plural(s.get('fail', 0), 'check')} failed a must-level threshold."
        if s.get("error"):
            head += f" {_plural(s['error'], 'check')} raised an error."
        return head + tail
    head = f"{_plural(s.get('error', 0), 'check')} raised an error, so the audit is incomplete."
    if s.get("fail"):
        head += f" {_plural(s['fail'], 'check')} failed a must-level threshold."
    return head + tail


def _findings(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What keeps each check from a clean pass, for the cover: failures first, then
    should-level failures, inconclusive results and sanity flags, each named."""
    order = list(REASON_LABEL)
    rows = []
    for c in checks:
        for r in c["reasons"]:
            rows.append({"id": c["id"], "anchor": c["anchor"], **r})
        for f in c["flags"]:
            rows.append({"id": c["id"], "anchor": c["anchor"], "kind": "flag", "label": REASON_LABEL["flag"],
                         "text": f"{f['flag']}" + (f": {f['detail']}" if f.get("detail") else "")})
    return sorted(rows, key=lambda r: order.index(r["kind"]) if r["kind"] in order else len(order))


def build_view(results: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template needs, formatted. Missing optional keys are tolerated."""
    prov = results.get("provenance") or {}
    anchors: set[str] = set(_RESERVED_IDS)
    raw_checks = [c for c in results.get("checks") or [] if isinstance(c, Mapping)]
    checks = [_check_view(c, anchors) for c in raw_checks]
    standards = standards_view(results, {c["id"]: c["anchor"] for c in checks}, anchors)
    by_area: dict[str, list[dict[str, Any]]] = {}
    for raw, view in zip(raw_checks, checks):
        by_area.setdefault(_area_of(raw), []).append(view)
    training = _training_view(results.get("training"))

    summary = dict.fromkeys(STATUSES, 0)
    given = results.get("summary")
    if isinstance(given, Mapping):
        for s in STATUSES:
            v = given.get(s)
            summary[s] = int(v) if is_number(v) else 0
    else:
        for c in checks:
            summary[c["status"]] += 1

    areas = []
    for n, (key, title, scope) in enumerate(AREAS, start=1):
        cs = by_area.get(key, [])
        has_content = bool(cs) or key in ("data", "algorithm") or (key == "training" and training is not None)
        areas.append({"key": key, "num": n, "title": title, "scope": scope, "checks": cs,
                      "major": has_content, "statuses": Counter(c["status"] for c in cs)})
    if by_area.get(OTHER_AREA[0]):
        key, title, scope = OTHER_AREA
        cs = by_area[key]
        areas.append({"key": key, "num": len(AREAS) + 1, "title": title, "scope": scope,
                      "checks": cs, "major": True, "statuses": Counter(c["status"] for c in cs)})

    verdict = str(results.get("verdict") or "error")
    if verdict not in VERDICT_LABEL:
        verdict = "error"
    model_raw = _mapping(results.get("model"))
    versions = prov.get("versions") or {}
    return {
        "name": results.get("name") or "Model audit",
        "standard": results.get("standard") or "",
        "schema": results.get("schema") or "",
        "verdict": verdict,
        "verdict_class": verdict.replace(" ", "-"),
        "verdict_label": VERDICT_LABEL[verdict],
        "verdict_note": _verdict_note(verdict, summary),
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
        "findings": _findings(checks),
        "areas": areas,
        "datasets": _datasets_view(results.get("datasets") or {}),
        "model": _model_view(results.get("model"), results.get("training")),
        "training": training,
        "provenance": _provenance_view(results, checks),
        "statuses": [{"key": s, "label": STATUS_LABEL[s], "symbol": STATUS_SYMBOL[s], "meaning": STATUS_MEANING[s]}
                     for s in STATUSES],
        "standards": standards,
        "coverage_legend": coverage_legend() if standards else [],
        "signing": signing_view(results),
    }
