"""Audit results: frozen, JSON-ready, schema `audit-results/1`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "audit-results/1"
STATUSES = ("pass", "warn", "fail", "error", "skipped")

# Report sections (DESIGN.md's areas) by check family; a check may override with `area`.
AREAS = (
    "Data specification", "Algorithm specification", "Training specification",
    "Evaluation and validation", "Robustness", "Explainability", "Fairness", "Privacy", "Deployment",
)
_AREA_BY_PREFIX = {
    "data.": "Data specification", "training.": "Training specification",
    "performance.": "Evaluation and validation", "shift.domain": "Evaluation and validation",
    "shift.": "Robustness", "robustness.": "Robustness", "explain.": "Explainability",
    "fairness.": "Fairness", "privacy.": "Privacy", "efficiency.": "Deployment",
}


def area_of(check_name: str) -> str:
    for prefix, area in _AREA_BY_PREFIX.items():
        if check_name.startswith(prefix):
            return area
    return "Evaluation and validation"


@dataclass(frozen=True)
class ThresholdResult:
    metric: str
    op: str
    limit: float
    level: str
    status: str
    value: float | None
    ci: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "limit": self.limit, "level": self.level,
                "status": self.status}


@dataclass(frozen=True)
class CheckResult:
    id: str
    check: str
    version: int
    clause: str | None
    status: str
    data: str
    area: str
    summary: str
    metrics: dict[str, dict[str, Any]]
    metric_info: dict[str, dict[str, Any]]
    thresholds: tuple[ThresholdResult, ...]
    message: str
    evidence: tuple[dict[str, Any], ...] = ()
    duration_s: float = 0.0
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "check": self.check, "version": self.version, "clause": self.clause,
            "status": self.status, "data": self.data, "area": self.area, "summary": self.summary,
            "metrics": self.metrics, "metric_info": self.metric_info,
            "thresholds": [t.to_json() for t in self.thresholds], "message": self.message,
            "evidence": list(self.evidence), "duration_s": round(self.duration_s, 4),
            "traceback": self.traceback,
        }


@dataclass(frozen=True)
class Results:
    name: str
    standard: str | None
    checks: tuple[CheckResult, ...]
    provenance: dict[str, Any]
    datasets: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    training: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for c in self.checks:
            counts[c.status] += 1
        return counts

    @property
    def verdict(self) -> str:
        s = self.summary
        if s["error"]:
            return "error"
        return "non-compliant" if s["fail"] else "compliant"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "name": self.name, "standard": self.standard,
            "verdict": self.verdict, "summary": self.summary,
            "checks": [c.to_json() for c in self.checks],
            "datasets": self.datasets, "model": self.model, "training": self.training,
            "provenance": self.provenance,
        }


def exit_code(results: dict[str, Any], *, strict: bool = False) -> int:
    """0 compliant (warnings allowed unless strict), 1 non-compliant, 3 a check errored."""
    summary = results["summary"]
    if summary.get("error"):
        return 3
    if summary.get("fail") or (strict and summary.get("warn")):
        return 1
    return 0


def load_results(path: str | Path) -> dict[str, Any]:
    from audit.errors import AuditInputError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AuditInputError(f"results file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"not valid JSON: {exc}", where=str(path)) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise AuditInputError(f"not an audit results file (schema is not {SCHEMA})", where=str(path))
    return data
