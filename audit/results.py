"""Audit results: frozen, JSON-ready, schema `audit-results/1`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from audit.errors import env_limit

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
    # coverage of each selected standard profile (audit.standards.coverage)
    standards: tuple[dict[str, Any], ...] = ()

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
            "provenance": self.provenance, "standards": [jsonable(s) for s in self.standards],
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


# ---- reading results.json back ---------------------------------------------------------------
# `load_results` checks the structure a results.json must have before the report or
# `audit diff` reads it, so that a tampered, truncated or hand-edited file is one message
# naming the field (exit 2), never a traceback from deep inside the renderer. The schema
# is what this module writes; fields not listed are kept and not checked.
Validator = Callable[[Any, str], None]
MAX_RESULTS_BYTES = int(env_limit("AUDIT_MAX_RESULTS_BYTES", 256 * 1024 * 1024))


class ResultsSchemaError(ValueError):
    def __init__(self, where: str, message: str) -> None:
        self.where, self.message = where, message
        super().__init__(f"{where}: {message}" if where else message)


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _at(where: str, key: Any) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))


def _type(check: Callable[[Any], bool], what: str) -> Validator:
    def v(value: Any, where: str) -> None:
        if not check(value):
            raise ResultsSchemaError(where, f"expected {what}, got {_kind(value)}")
    return v


_str = _type(lambda v: isinstance(v, str), "a string")
_num = _type(_is_num, "a number")
_int = _type(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
_bool = _type(lambda v: isinstance(v, bool), "true or false")
_mapping = _type(lambda v: isinstance(v, dict), "a mapping")
_any: Validator = lambda value, where: None  # noqa: E731


def _opt(inner: Validator) -> Validator:
    return lambda value, where: None if value is None else inner(value, where)


def _one_of(*choices: str) -> Validator:
    def v(value: Any, where: str) -> None:
        if value not in choices:
            raise ResultsSchemaError(where, f"expected one of {', '.join(choices)}, got {value!r:.40}")
    return v


def _list_of(item: Validator, length: int | None = None) -> Validator:
    def v(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ResultsSchemaError(where, f"expected a list, got {_kind(value)}")
        if length is not None and len(value) != length:
            raise ResultsSchemaError(where, f"expected {length} items, got {len(value)}")
        for i, x in enumerate(value):
            item(x, _at(where, i))
    return v


def _map_of(item: Validator) -> Validator:
    def v(value: Any, where: str) -> None:
        _mapping(value, where)
        for k, x in value.items():
            item(x, _at(where, k))
    return v


def _fields(required: dict[str, Validator], optional: dict[str, Validator] | None = None) -> Validator:
    optional = optional or {}

    def v(value: Any, where: str) -> None:
        _mapping(value, where)
        for k, check in required.items():
            if k not in value:
                raise ResultsSchemaError(_at(where, k), "missing")
            check(value[k], _at(where, k))
        for k, check in optional.items():
            if k in value:
                check(value[k], _at(where, k))
    return v


def _metric_value(value: Any, where: str) -> None:
    if value is None or _is_num(value):
        return
    _fields({}, {"value": _opt(_num), "ci": _opt(_list_of(_opt(_num), 2))})(value, where)


def _evidence(value: Any, where: str) -> None:
    _fields({"type": _str}, {"title": _opt(_str), "caption": _opt(_str), "note": _opt(_str)})(value, where)
    by_type: dict[str, Validator] = {
        "table": _fields({}, {"columns": _opt(_list_of(_any)), "rows": _opt(_list_of(_list_of(_any)))}),
        "chart": _fields({}, {"chart": _str, "data": _opt(_mapping)}),
        "figure": _fields({}, {"svg": _opt(_str)}),
        "text": _fields({}, {"text": _opt(_str)}),
        "flags": _fields({}, {"flags": _opt(_list_of(_any))}),
    }
    by_type.get(value["type"], _any)(value, where)


_THRESHOLD = _fields(
    {"metric": _str, "op": _one_of("min", "max"), "limit": _num},
    {"level": _opt(_one_of("must", "should")), "status": _opt(_str), "value": _opt(_num),
     "ci": _opt(_list_of(_opt(_num), 2)), "reason": _opt(_mapping), "p_value": _opt(_num), "p_holm": _opt(_num)})

_CHECK = _fields(
    {"id": _str, "check": _str, "status": _one_of(*STATUSES)},
    {"version": _opt(_type(lambda v: isinstance(v, (int, str)) and not isinstance(v, bool), "an integer")),
     "clause": _opt(_str), "data": _opt(_str), "area": _opt(_str), "summary": _opt(_str),
     "confidence": _opt(_num), "params": _opt(_mapping), "metrics": _opt(_map_of(_metric_value)),
     "metric_info": _opt(_map_of(_fields({}, {"higher_is_better": _opt(_bool), "unit": _opt(_str),
                                              "description": _opt(_str)}))),
     "thresholds": _opt(_list_of(_THRESHOLD)), "message": _opt(_str),
     "reasons": _opt(_list_of(_fields({}, {"kind": _opt(_str), "text": _opt(_str)}))),
     "flags": _opt(_list_of(_fields({}, {"flag": _opt(_str), "detail": _opt(_str)}))),
     "evidence": _opt(_list_of(_evidence)), "duration_s": _opt(_num), "traceback": _opt(_str)})

_PROVENANCE = _fields({}, {
    "spec_sha256": _opt(_str), "spec_source": _opt(_str), "model_sha256": _opt(_str),
    "data_sha256": _opt(_map_of(_opt(_str))), "seed": _opt(_int), "device": _opt(_str),
    "versions": _opt(_map_of(_opt(_type(lambda v: isinstance(v, (str, int, float)), "a version string")))),
    "platform": _opt(_str), "started_at": _opt(_str), "duration_s": _opt(_num),
    "compute": _opt(_map_of(_opt(_num))), "timings": _opt(_map_of(_opt(_num))), "execution": _opt(_mapping)})

_RESULTS = _fields(
    {"schema": _str, "verdict": _one_of(*VERDICTS), "checks": _list_of(_CHECK)},
    {"name": _opt(_str), "standard": _opt(_str), "summary": _opt(_map_of(_int)),
     "datasets": _opt(_map_of(_opt(_mapping))), "model": _opt(_mapping), "training": _opt(_mapping),
     "provenance": _opt(_PROVENANCE)})


def validate_results(data: Any) -> None:
    """Raise ResultsSchemaError naming the first field that does not fit the schema."""
    if not isinstance(data, dict):
        raise ResultsSchemaError("", f"the top level must be a mapping, got {_kind(data)}")
    if data.get("schema") != SCHEMA:
        raise ResultsSchemaError("schema", f"not an audit results file (schema is not {SCHEMA})")
    _RESULTS(data, "")
    ids = [c["id"] for c in data["checks"]]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise ResultsSchemaError("checks", f"duplicate check id {dup!r}")


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json; every problem is one AuditInputError naming the
    file and the field."""
    from audit.errors import AuditInputError

    path = Path(path)
    try:
        if path.is_dir():
            raise AuditInputError(f"{path} is a folder: give its results.json")
        size = path.stat().st_size
        if size > MAX_RESULTS_BYTES:
            raise AuditInputError(f"the file is {size:,} bytes, over the limit of {MAX_RESULTS_BYTES:,} "
                                  f"(AUDIT_MAX_RESULTS_BYTES)", where=str(path))
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AuditInputError(f"results file not found: {path}") from None
    except OSError as exc:
        raise AuditInputError(f"cannot read the results file: {exc.strerror or exc}", where=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuditInputError(f"not UTF-8 text (byte {exc.start}): not a results.json", where=str(path)) from None
    try:
        # NaN/Infinity are not JSON (results_json never writes them): refuse, do not render them
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"not valid JSON: {exc}", where=str(path)) from None
    except (ValueError, RecursionError) as exc:
        raise AuditInputError(f"not valid JSON: {exc}", where=str(path)) from None
    try:
        validate_results(data)
    except ResultsSchemaError as exc:
        raise AuditInputError(f"{exc.message} (not a valid {SCHEMA} file)",
                              where=f"{path}: {exc.where}" if exc.where else str(path)) from None
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
