"""results.json ``standards`` (audit.standards.coverage per profile) and ``signing`` ->
what the report's standards matrices and the cover's signature note show.

Read as stored: the coverage was computed when the audit ran; nothing is recomputed
here, and anything malformed (an older or tampered file) is shown as missing, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from audit.formatting import format_metric, format_threshold, is_number

__all__ = ["COVERAGE_LABEL", "signing_view", "standards_view"]

COVERAGE_LABEL = {"evidenced": "Evidenced", "partial": "Partially evidenced", "not_evidenced": "Not evidenced",
                  "attestation": "Attestation"}
COVERAGE_MEANING = {
    "evidenced": "every check and record mapped to the clause is in this audit and measured what the profile names",
    "partial": "some of the mapped evidence is in this audit, some is not",
    "not_evidenced": "nothing this audit measured bears on the clause",
    "attestation": "a process or governance duty no automated test can show: the reviewer attests it below",
}
_STATE_LABEL = {"evidenced": "", "not_measured": "ran, but did not measure", "absent": "not in this audit"}
_THRESHOLD_WORD = {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}


def _m(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _slug(name: Any) -> str:
    return "std-" + (re.sub(r"[^a-z0-9_-]+", "-", str(name or "profile").lower()).strip("-") or "profile")


def _figure_text(f: Mapping[str, Any]) -> str:
    unit = f" {f['unit']}" if f.get("unit") else ""
    text = f"{_text(f.get('metric'))} {format_metric(f.get('value'), f.get('ci'))}{unit}"
    judged = [f"{format_threshold(t)} {_THRESHOLD_WORD.get(str(t.get('status')), _text(t.get('status')))}"
              for t in f.get("thresholds") or [] if isinstance(t, Mapping)]
    return text + (f" — {'; '.join(judged)}" if judged else "")


def _evidence_item(item: Mapping[str, Any], anchors: Mapping[str, str]) -> dict[str, Any]:
    state = str(item.get("state") or "absent")
    if item.get("record"):
        return {"kind": "record", "label": _text(item.get("label") or item.get("record")), "state": state,
                "state_label": "recorded" if state == "evidenced" else "not recorded in this audit", "results": []}
    metrics = [str(m) for m in item.get("metrics") or []]
    results = []
    for r in item.get("results") or []:
        if not isinstance(r, Mapping):
            continue
        rid = _text(r.get("id"))
        missing = [str(m) for m in r.get("missing_metrics") or []]
        status = _text(r.get("status")) or "error"
        results.append({
            "id": rid, "anchor": anchors.get(rid, ""),
            "status": status,
            "figures": [_figure_text(f) for f in r.get("figures") or [] if isinstance(f, Mapping)],
            "missing": f"did not measure {', '.join(missing)}" if missing else "",
            "message": _text(r.get("message")),
        })
    return {"kind": "check", "label": _text(item.get("check")), "metrics": ", ".join(metrics),
            "state": state, "state_label": _STATE_LABEL.get(state, state), "results": results}


def _count_text(summary: Mapping[str, Any]) -> str:
    def n(key: str) -> int:
        v = summary.get(key)
        return int(v) if is_number(v) else 0

    parts = [f"{n('evidenced')} evidenced" + (f" ({n('failing')} by a failing check)" if n("failing") else ""),
             f"{n('partial')} partially evidenced", f"{n('not_evidenced')} not evidenced",
             f"{n('attestation')} for attestation"]
    return ", ".join(parts)


def standards_view(results: Mapping[str, Any], anchors: Mapping[str, str], used: set[str]) -> list[dict[str, Any]]:
    """One entry per profile in ``results["standards"]``. `anchors` maps check ids to their
    report anchors; `used` holds the page's element ids (profile anchors are added)."""
    out = []
    for prof in results.get("standards") or []:
        if not isinstance(prof, Mapping):
            continue
        anchor, base, i = _slug(prof.get("name")), _slug(prof.get("name")), 2
        while anchor in used:
            anchor, i = f"{base}-{i}", i + 1
        used.add(anchor)
        rows = []
        lists: dict[str, list[str]] = {k: [] for k in COVERAGE_LABEL}
        for c in prof.get("clauses") or []:
            if not isinstance(c, Mapping):
                continue
            cov = str(c.get("coverage") or "not_evidenced")
            cov = cov if cov in COVERAGE_LABEL else "not_evidenced"
            status = _text(c.get("status"))
            lists[cov].append(_text(c.get("id")))
            rows.append({
                "id": _text(c.get("id")), "title": _text(c.get("title")), "note": _text(c.get("note")),
                "coverage": cov, "coverage_label": COVERAGE_LABEL[cov],
                "failing": cov in ("evidenced", "partial") and status == "fail",
                "status": status,
                "evidence": [_evidence_item(e, anchors) for e in c.get("evidence") or [] if isinstance(e, Mapping)],
            })
        out.append({
            "anchor": anchor, "name": _text(prof.get("name")), "title": _text(prof.get("title") or prof.get("name")),
            "source": _text(prof.get("source")), "version": _text(prof.get("version")),
            "note": _text(prof.get("note")), "file": _text(prof.get("file")), "sha256": _text(prof.get("sha256")),
            "counts": _count_text(_m(prof.get("summary"))),
            "rows": rows,
            "lists": [{"key": k, "label": COVERAGE_LABEL[k], "ids": ids} for k, ids in lists.items()],
            "attestations": [r for r in rows if r["coverage"] == "attestation"],
        })
    return out


def signing_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cover's note for a report issued signed (``results["signing"]``, written by
    `audit run --sign` before the report is rendered)."""
    s = results.get("signing")
    if not isinstance(s, Mapping) or not s:
        return None
    return {"signer": _text(s.get("signer")), "throwaway": bool(s.get("throwaway")),
            "files": [str(f) for f in s.get("files") or []]}


def coverage_legend() -> list[dict[str, str]]:
    return [{"key": k, "label": COVERAGE_LABEL[k], "meaning": COVERAGE_MEANING[k]} for k in COVERAGE_LABEL]
