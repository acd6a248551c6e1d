"""Audit results: frozen, JSON-ready, schema `audit-results/1`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

SCHEMA = "audit-results/1"
STATUSES = ("pass", "warn", "fail", "error", "skipped", "info")
VERDICTS = ("compliant", "non-compliant", "error", "not assessed")

# The report's sections: the specification's areas, in report order (key, title, scope).
# A check declares its area by key (`Check.area`); results carry the key.
AREAS: tuple[tuple[str, str, str], ...] = (
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
     "Latency, throughput, model size and the impact of quantization and pruning; whether the "
     "exported model that will be served (ONNX Runtime) answers like the audited one; and "
     "monitoring: whether current, unlabelled data has drifted from the reference."),
)
AREA_KEYS = tuple(key for key, _, _ in AREAS)


def jsonable(v: Any, *, default: Callable[[Any], Any] | None = None) -> Any:
    """Plain JSON values: non-finite floats become null, numpy scalars and arrays plain
    Python, tuples lists, paths strings. Anything else goes to `default` (e.g. `str` for
    the dates YAML can hold), or is an error rather than a silent str()."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): jsonable(x, default=default) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, default=default) for x in v]
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if hasattr(v, "tolist"):  # numpy scalar or array
        return jsonable(v.tolist(), default=default)
    if isinstance(v, PurePath):
        return str(v)
    if default is not None:
        return default(v)
    raise TypeError(f"not JSON-ready: {type(v).__name__}")


@dataclass(frozen=True)
class ThresholdResult:
    metric: str
    op: str
    limit: float
    level: str
    status: str                              # pass | fail | inconclusive
    value: float | None
    ci: tuple[float, float] | None
    reason: dict[str, str] | None = None     # {"kind", "text"} when not a plain pass
    p_value: float | None = None             # one-sided, the test the interval inverts
    p_holm: float | None = None              # Holm-adjusted, with `familywise: holm`

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "limit": self.limit, "level": self.level,
                "status": self.status, "value": jsonable(self.value),
                "ci": None if self.ci is None else jsonable(list(self.ci)), "reason": self.reason,
                "p_value": jsonable(self.p_value), "p_holm": jsonable(self.p_holm)}


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
    confidence: float
    params: dict[str, Any] = field(default_factory=dict)
    # why the check is not a plain pass: [{"kind": must_fail | should_fail | inconclusive |
    # small_sample | holm | flag, "text": ...}]
    reasons: tuple[dict[str, str], ...] = ()
    flags: tuple[dict[str, str], ...] = ()
    evidence: tuple[dict[str, Any], ...] = ()
    duration_s: float = 0.0
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "check": self.check, "version": self.version, "clause": self.clause,
            "status": self.status, "data": self.data, "area": self.area, "summary": self.summary,
            "confidence": self.confidence, "params": jsonable(self.params),
            "metrics": self.metrics, "metric_info": self.metric_info,
            "thresholds": [t.to_json() for t in self.thresholds], "message": self.message,
            "reasons": [dict(r) for r in self.reasons],
            "flags": [dict(f) for f in self.flags],
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
        """error > non-compliant > not assessed (nothing was judged) > compliant."""
        s = self.summary
        if s["error"]:
            return "error"
        if s["fail"]:
            return "non-compliant"
        if not any(c.thresholds for c in self.checks):
            return "not assessed"
        return "compliant"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "name": self.name, "standard": self.standard,
            "verdict": self.verdict, "summary": self.summary,
            "checks": [c.to_json() for c in self.checks],
            "datasets": self.datasets, "model": self.model, "training": self.training,
            "provenance": self.provenance,
        }


EXIT_COMPLIANT, EXIT_NON_COMPLIANT, EXIT_INPUT, EXIT_ERROR, EXIT_NOT_ASSESSED = 0, 1, 2, 3, 4


def exit_code(results: dict[str, Any], *, strict: bool = False) -> int:
    """0 compliant (warnings allowed unless strict), 1 non-compliant, 3 a check errored,
    4 not assessed: no threshold was judged, so a CI gate has nothing to pass on."""
    verdict = results.get("verdict")
    summary = results.get("summary", {})
    if verdict == "error" or summary.get("error"):
        return EXIT_ERROR
    if verdict == "non-compliant" or summary.get("fail"):
        return EXIT_NON_COMPLIANT
    if verdict == "not assessed":
        return EXIT_NOT_ASSESSED
    if strict and summary.get("warn"):
        return EXIT_NON_COMPLIANT
    return EXIT_COMPLIANT


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
