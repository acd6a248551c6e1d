"""What changed between two audits (two ``audit-results/1`` documents).

``diff_results(old, new)`` returns JSON-ready rows, one per difference, in a
stable order (audit-level first, then checks in the new audit's order, then
removed checks). Row kinds:

=============  =====================================================================
``verdict``    old/new verdict
``hash``       ``field`` (spec_sha256, model_sha256, data_sha256.ROLE,
               training.model_sha256): the inputs differ
``setting``    ``field`` (seed, device, standard, name)
``version``    ``field`` (python, torch, audit, ...)
``added``      check ``id`` only in new (``new`` = its status)
``removed``    check ``id`` only in old (``old`` = its status)
``changed``    check ``id`` whose ``field`` (check, version, clause, data) differs
``status``     check ``id`` whose status differs; ``direction`` better / worse / None
``threshold``  check ``id``, ``metric``: the threshold text differs (or appeared)
``metric``     check ``id``, ``metric``: value or CI differs; ``delta`` (new - old),
               ``direction`` (better / worse / higher / lower / appeared / gone) and
               ``ci_overlap`` (whether the two intervals overlap, None if unknown):
               a difference whose intervals overlap is within noise
``crossed``    check ``id``, ``metric``: the value moved across its threshold
               (``op``, ``limit``, ``level``); ``direction`` worse (from the right side
               to the wrong side) or better
=============  =====================================================================

``regressions(rows)`` is what makes ``audit diff`` exit 1: the verdict or a check's
status got worse (pass < warn < fail; anything that becomes ``error`` is worse), or a
judged metric crossed its threshold to the wrong side. ``format_diff(rows, old=, new=)``
renders them as plain text for a terminal, both verdicts first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from audit.formatting import format_number, format_threshold, format_value

__all__ = ["diff_results", "format_diff", "regressions"]

_CHECK_FIELDS = ("check", "version", "clause", "data")
# For "better"/"worse" on status changes; skipped and info are neither.
_STATUS_RANK = {"pass": 0, "warn": 1, "fail": 2, "error": 2}
_VERDICT_RANK = {"compliant": 0, "not assessed": 1, "non-compliant": 2, "error": 2}


def _direction(ranks: Mapping[str, int], old: Any, new: Any) -> str | None:
    """worse / better / None. Becoming `error` is always worse: something that ran broke."""
    if old == new:
        return None
    if new == "error":
        return "worse"
    ro, rn = ranks.get(old), ranks.get(new)
    if ro is None or rn is None or ro == rn:
        return "better" if old == "error" and rn is not None else None
    return "worse" if rn > ro else "better"


def _right_side(value: float, op: str, limit: float) -> bool:
    return value >= limit if op == "min" else value <= limit


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _same(a: Any, b: Any) -> bool:
    fa, fb = _num(a), _num(b)
    if fa is not None and fb is not None:
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _metric(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    if isinstance(m, Mapping):
        ci = m.get("ci")
        return {"value": m.get("value"), "ci": list(ci) if isinstance(ci, (list, tuple)) else None}
    return {"value": m, "ci": None}


def _same_metric(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    if not _same(a["value"], b["value"]):
        return False
    ca, cb = a["ci"], b["ci"]
    if ca is None or cb is None:
        return ca is None and cb is None
    return len(ca) == len(cb) and all(_same(x, y) for x, y in zip(ca, cb))


def _hib(old: Mapping[str, Any], new: Mapping[str, Any], metric: str) -> bool | None:
    for c in (new, old):
        info = (c.get("metric_info") or {}).get(metric) or {}
        if isinstance(info.get("higher_is_better"), bool):
            return info["higher_is_better"]
    return None


def _thresholds(check: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for t in check.get("thresholds") or []:
        if isinstance(t, Mapping):
            out.setdefault(str(t.get("metric")), []).append(format_threshold(t))
    return {m: "; ".join(sorted(v)) for m, v in out.items()}


def _metric_rows(cid: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    om, nm = old.get("metrics") or {}, new.get("metrics") or {}
    order = list(nm) + [m for m in om if m not in nm]
    for metric in order:
        a, b = _metric(om.get(metric)), _metric(nm.get(metric))
        if _same_metric(a, b):
            continue
        row: dict[str, Any] = {"kind": "metric", "id": cid, "check": name, "metric": metric, "old": a, "new": b,
                               "delta": None, "direction": None, "ci_overlap": None}
        va, vb = (_num(a["value"]) if a else None), (_num(b["value"]) if b else None)
        if a is None:
            row["direction"] = "appeared"
        elif b is None:
            row["direction"] = "gone"
        elif va is not None and vb is not None:
            delta = vb - va
            row["delta"] = delta
            hib = _hib(old, new, metric)
            if _same(va, vb):
                row["direction"] = "ci"
            elif hib is None:
                row["direction"] = "higher" if delta > 0 else "lower"
            else:
                row["direction"] = "better" if (delta > 0) == hib else "worse"
            if a["ci"] and b["ci"] and None not in a["ci"] and None not in b["ci"]:
                row["ci_overlap"] = bool(a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1])
        rows.append(row)
    ot, nt = _thresholds(old), _thresholds(new)
    for metric in list(nt) + [m for m in ot if m not in nt]:
        if ot.get(metric) != nt.get(metric):
            rows.append({"kind": "threshold", "id": cid, "check": name, "metric": metric,
                         "old": ot.get(metric), "new": nt.get(metric)})
    rows.extend(_crossings(cid, name, old, new))
    return rows


def _judged_value(check: Mapping[str, Any], t: Mapping[str, Any]) -> float | None:
    """The value a threshold was judged on: the threshold entry's own, else the metric's."""
    v = _num(t.get("value"))
    if v is None:
        m = _metric((check.get("metrics") or {}).get(t.get("metric")))
        v = _num(m["value"]) if m else None
    return v


def _crossings(cid: str, name: Any, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A `crossed` row per threshold of the new audit whose metric moved across it. The old
    value is judged against the old audit's matching threshold (same metric, op, level),
    or the new one when the old audit had none."""
    rows: list[dict[str, Any]] = []
    old_ts = [t for t in old.get("thresholds") or [] if isinstance(t, Mapping)]
    for t in new.get("thresholds") or []:
        if not isinstance(t, Mapping) or t.get("op") not in ("min", "max") or _num(t.get("limit")) is None:
            continue
        match = next((o for o in old_ts if (o.get("metric"), o.get("op"), o.get("level"))
                      == (t.get("metric"), t.get("op"), t.get("level")) and _num(o.get("limit")) is not None), None)
        # no matching old threshold: the old audit's metric, judged against the new limit
        vo = _judged_value(old, match if match is not None else {"metric": t.get("metric")})
        vn = _judged_value(new, t)
        match = match if match is not None else t
        if vo is None or vn is None:
            continue
        was = _right_side(vo, str(match.get("op")), float(match["limit"]))
        now = _right_side(vn, str(t["op"]), float(t["limit"]))
        if was != now:
            rows.append({"kind": "crossed", "id": cid, "check": name, "metric": t.get("metric"),
                         "op": t["op"], "limit": t["limit"], "level": t.get("level") or "must",
                         "old": vo, "new": vn, "direction": "worse" if was else "better"})
    return rows


def diff_results(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Differences between two results documents, as JSON-ready rows (see module doc)."""
    rows: list[dict[str, Any]] = []
    if old.get("verdict") != new.get("verdict"):
        rows.append({"kind": "verdict", "old": old.get("verdict"), "new": new.get("verdict"),
                     "direction": _direction(_VERDICT_RANK, old.get("verdict"), new.get("verdict"))})
    for key in ("name", "standard"):
        if (old.get(key) or "") != (new.get(key) or ""):
            rows.append({"kind": "setting", "field": key, "old": old.get(key), "new": new.get(key)})

    po, pn = old.get("provenance") or {}, new.get("provenance") or {}
    for key in ("spec_sha256", "model_sha256"):
        if po.get(key) != pn.get(key):
            rows.append({"kind": "hash", "field": key, "old": po.get(key), "new": pn.get(key)})
    do, dn = po.get("data_sha256") or {}, pn.get("data_sha256") or {}
    for role in list(dn) + [r for r in do if r not in dn]:
        if do.get(role) != dn.get(role):
            rows.append({"kind": "hash", "field": f"data_sha256.{role}", "old": do.get(role), "new": dn.get(role)})
    to, tn = (old.get("training") or {}), (new.get("training") or {})
    if (to.get("model_sha256") if isinstance(to, Mapping) else None) != (tn.get("model_sha256") if isinstance(tn, Mapping) else None):
        rows.append({"kind": "hash", "field": "training.model_sha256",
                     "old": to.get("model_sha256") if isinstance(to, Mapping) else None,
                     "new": tn.get("model_sha256") if isinstance(tn, Mapping) else None})
    for key in ("seed", "device"):
        if po.get(key) != pn.get(key):
            rows.append({"kind": "setting", "field": key, "old": po.get(key), "new": pn.get(key)})
    vo, vn = po.get("versions") or {}, pn.get("versions") or {}
    for key in list(vn) + [k for k in vo if k not in vn]:
        if vo.get(key) != vn.get(key):
            rows.append({"kind": "version", "field": key, "old": vo.get(key), "new": vn.get(key)})

    co = {c.get("id"): c for c in old.get("checks") or [] if isinstance(c, Mapping)}
    cn = {c.get("id"): c for c in new.get("checks") or [] if isinstance(c, Mapping)}
    for cid, c in cn.items():
        name = c.get("check")
        if cid not in co:
            rows.append({"kind": "added", "id": cid, "check": name, "old": None, "new": c.get("status")})
            continue
        o = co[cid]
        for key in _CHECK_FIELDS:
            if o.get(key) != c.get(key):
                rows.append({"kind": "changed", "id": cid, "check": name, "field": key,
                             "old": o.get(key), "new": c.get(key)})
        if o.get("status") != c.get("status"):
            direction = _direction(_STATUS_RANK, o.get("status"), c.get("status"))
            rows.append({"kind": "status", "id": cid, "check": name, "old": o.get("status"),
                         "new": c.get("status"), "direction": direction})
        rows.extend(_metric_rows(cid, name, o, c))
    for cid, o in co.items():
        if cid not in cn:
            rows.append({"kind": "removed", "id": cid, "check": o.get("check"), "old": o.get("status"), "new": None})
    return rows


def regressions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that make `audit diff` exit 1: a verdict or status that got worse, or a
    judged metric that crossed its threshold to the wrong side."""
    return [r for r in rows if r["kind"] in ("verdict", "status", "crossed") and r.get("direction") == "worse"]


# --------------------------------------------------------------------------- text


def _short(v: Any) -> str:
    return str(v)[:12] if v else "(none)"


def _metric_text(m: dict[str, Any] | None) -> str:
    return "(none)" if m is None else format_value(m)


def _metric_line(r: dict[str, Any]) -> str:
    line = f"{r['metric']}: {_metric_text(r['old'])} -> {_metric_text(r['new'])}"
    notes = []
    if r.get("delta") is not None and r["direction"] != "ci":
        sign = "+" if r["delta"] > 0 else "-" if r["delta"] < 0 else "+/-"
        notes.append(f"{sign}{format_number(abs(r['delta']))}")
    if r.get("direction") in ("better", "worse", "appeared", "gone"):
        notes.append(r["direction"])
    elif r.get("direction") == "ci":
        notes.append("interval only")
    if r.get("ci_overlap") is True and r.get("direction") not in ("ci", "appeared", "gone"):
        notes.append("within noise: the intervals overlap")
    elif r.get("ci_overlap") is False:
        notes.append("intervals do not overlap")
    return line + (f"  ({', '.join(notes)})" if notes else "")


def _crossed_line(r: dict[str, Any]) -> str:
    side = "below" if (r["op"] == "min") == (r["direction"] == "worse") else "above"
    what = "REGRESSION" if r["direction"] == "worse" else "recovered"
    limit = format_threshold({"op": r["op"], "limit": r["limit"], "level": r["level"]})
    return (f"{r['metric']} crossed its threshold {limit}: {format_number(r['old'])} -> "
            f"{format_number(r['new'])}, now {side} it ({what})")


def _verdict_line(label: str, results: Mapping[str, Any] | None) -> str:
    if results is None:
        return ""
    prov = results.get("provenance") if isinstance(results.get("provenance"), Mapping) else {}
    started = prov.get("started_at") if isinstance(prov, Mapping) else None
    return (f"{label} verdict: {results.get('verdict')}  ({results.get('name')}"
            + (f", started {started}" if started else "") + ")")


def format_diff(rows: list[dict[str, Any]], *, old: Mapping[str, Any] | None = None,
                new: Mapping[str, Any] | None = None) -> str:
    """Plain-text rendering for a terminal (ASCII arrows, two-space indents): both
    verdicts first (when the documents are given), the differences, then the outcome."""
    out: list[str] = [line for line in (_verdict_line("old", old), _verdict_line("new", new)) if line]
    bad = regressions(rows)
    if not rows:
        out.append("No differences.")
        return "\n".join(out)
    audit = [r for r in rows if r["kind"] in ("verdict", "setting")]
    inputs = [r for r in rows if r["kind"] == "hash"]
    versions = [r for r in rows if r["kind"] == "version"]
    checks = [r for r in rows if "id" in r]

    if audit:
        out.append("Audit")
        for r in audit:
            label = "verdict" if r["kind"] == "verdict" else r["field"]
            worse = " (worse)" if r.get("direction") == "worse" else " (better)" if r.get("direction") == "better" else ""
            out.append(f"  {label}: {r['old']} -> {r['new']}{worse}")
    if inputs:
        out.append("Inputs (SHA-256)")
        for r in inputs:
            out.append(f"  {r['field']}: {_short(r['old'])} -> {_short(r['new'])}")
    if versions:
        out.append("Versions")
        for r in versions:
            out.append(f"  {r['field']}: {r['old'] or '(none)'} -> {r['new'] or '(none)'}")
    if checks:
        out.append("Checks")
        seen: list[Any] = []
        for r in checks:
            if r["id"] not in seen:
                seen.append(r["id"])
        for cid in seen:
            group = [r for r in checks if r["id"] == cid]
            head = group[0]
            name = f" ({head['check']})" if head.get("check") else ""
            if head["kind"] == "added":
                out.append(f"  + {cid}{name}: added, {head['new']}")
                continue
            if head["kind"] == "removed":
                out.append(f"  - {cid}{name}: removed (was {head['old']})")
                continue
            status = next((r for r in group if r["kind"] == "status"), None)
            change = ""
            if status:
                change = f": {status['old']} -> {status['new']}"
                if status.get("direction"):
                    change += f" ({status['direction']})"
            out.append(f"  ~ {cid}{name}{change}")
            for r in group:
                if r["kind"] == "changed":
                    out.append(f"      {r['field']}: {r['old']} -> {r['new']}")
                elif r["kind"] == "metric":
                    out.append(f"      {_metric_line(r)}")
                elif r["kind"] == "threshold":
                    out.append(f"      threshold {r['metric']}: {r['old'] or '(none)'} -> {r['new'] or '(none)'}")
                elif r["kind"] == "crossed":
                    out.append(f"      {_crossed_line(r)}")
    if bad:
        what = sorted({f"{r['id']}" if "id" in r else "verdict" for r in bad})
        out.append(f"REGRESSION: {len(bad)} change(s) for the worse ({', '.join(what)})")
    else:
        out.append("No regression.")
    return "\n".join(out)
