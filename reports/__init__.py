"""Compliance report rendering: results dict -> results.json, report.html, report.pdf.

    from reports import write_report
    paths = write_report(results, Path("audit-report"), {"json", "html", "pdf"})

`render_html(results)` gives the self-contained HTML page (a pure function of the
results); `render_pdf(html, path, base_dir)` prints it with WeasyPrint (no network);
`reports.diff` compares two results files.

Modules: `view` (results -> what the page shows), `html` (Jinja environment, render),
`charts` (chart kinds checks may name -> the `plots*` renderers), `svg` (the sanitizer
every figure passes through), `pdf`, `diff`.

This package imports neither torch nor `checks` nor the audit runner: a report is drawn
from `results.json` alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from audit.outputs import atomic_write_bytes
from audit.results import jsonable

__all__ = ["FORMATS", "atomic_write_bytes", "atomic_write_text", "diff_results", "format_diff",
           "render_html", "render_pdf", "results_json", "write_report"]

FORMATS = ("json", "html", "pdf")
FILENAMES = {"json": "results.json", "html": "report.html", "pdf": "report.pdf"}


def render_html(results: Mapping[str, Any]) -> str:
    from reports.html import render_html as _render

    return _render(results)


def render_pdf(html: str, out_path: Path, base_dir: Path) -> Path:
    from reports.pdf import render_pdf as _render

    return _render(html, out_path, base_dir)


def diff_results(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    from reports.diff import diff_results as _diff

    return _diff(old, new)


def format_diff(rows: list[dict[str, Any]], *, old: Mapping[str, Any] | None = None,
                new: Mapping[str, Any] | None = None) -> str:
    from reports.diff import format_diff as _format

    return _format(rows, old=old, new=new)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def results_json(results: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(results: Mapping[str, Any], out_dir: Path, formats: Iterable[str] = FORMATS, *,
                 force: bool = False) -> dict[str, Path]:
    """Write the requested formats ("json", "html", "pdf") as the report folder `out_dir`.

    Everything is rendered in memory first; then the folder is published whole by
    `audit.outputs.publish`: staged beside the target, renamed into place under a lock, so
    the folder is at every instant the old complete report, the new complete report, or
    absent, and two writers never mix. A folder holding another audit is replaced only
    with `force` (an `OutputError`, exit 2, otherwise); see `audit.outputs` for the rules.
    Returns {format: path} for the files written.
    """
    from audit.outputs import check_target, publish

    wanted = {f.strip().lower() for f in formats if f and f.strip()}
    unknown = wanted - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown report format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    text = results_json(results)
    # refuse before the (slow) PDF rendering; `publish` checks again under the lock
    check_target(out_dir, force=force, results_bytes=text.encode("utf-8") if "json" in wanted else None)

    payload: dict[str, bytes] = {}
    if "json" in wanted:
        payload["json"] = text.encode("utf-8")
    if wanted & {"html", "pdf"}:
        # rendered from the JSON as written, so that `audit render results.json` gives the
        # same bytes as the run did
        html = render_html(json.loads(text))
        if "html" in wanted:
            payload["html"] = html.encode("utf-8")
        if "pdf" in wanted:
            from reports.pdf import pdf_bytes

            payload["pdf"] = pdf_bytes(html, out_dir)

    # json first: the machine-readable record is the source of truth
    files = {FILENAMES[fmt]: payload[fmt] for fmt in FORMATS if fmt in payload}
    written = publish(out_dir, files, force=force)
    return {fmt: written[FILENAMES[fmt]] for fmt in FORMATS if fmt in payload}
