"""Standard profiles and the coverage of their clauses by an audit's results.

A profile is a YAML file (schema ``audit-profile/1``): a regulation's or standard's
clauses by number, each with a short title in our own words, and for each clause either
the evidence that can bear on it or ``attestation: true`` (process and governance duties
no automated test can evidence; the reviewer attests them in the report)::

    name: my-standard                 # [a-z0-9._-]; how a spec selects it
    title: My standard, section 4     # shown as the matrix's heading
    source: "Doc 123, section 4"      # what the clause numbers cite
    clauses:
      - id: "4.1"
        title: Accuracy measured on held-out data
        evidence:
          - {check: performance.classification, metrics: [accuracy]}
          - {record: datasets}        # a record every report carries: model,
                                      # training, datasets or provenance
      - id: "4.2"
        title: Release approved by a named person
        attestation: true

Profiles ship with the suite (``audit/profiles/*.yaml``; see :func:`builtin_names`), and a
user can write their own. A spec selects them with ``standards: [name-or-path, ...]``, or
with a known profile name in ``standard:`` (any other ``standard:`` string stays the
report's subtitle). Relative paths resolve against the spec's folder.

Profiles are validated like the spec: safe YAML with duplicate keys (and aliases)
refused, unknown keys, check names and metric names named with a did-you-mean, and
duplicate clause ids rejected; errors name the file and the YAML path.

:func:`coverage` is pure (a results dict and a profile in, coverage rows out): the runner
stores its output in ``results.json`` under ``standards`` and the report draws the
per-profile matrix from there alone.

This module imports neither :mod:`audit.spec` (which calls it) nor the checks: check names
come from the registry's lazy listing, metric names from the check's source when its
class is not imported yet.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from audit.errors import SpecError, did_you_mean
from audit.yamlio import load_yaml, yaml_path

__all__ = ["COVERAGE", "PROFILE_SCHEMA", "RECORDS", "Clause", "EvidenceItem", "Profile", "attach_standards",
           "builtin_names", "coverage", "load_profile", "parse_profile", "select_profiles"]

PROFILE_SCHEMA = "audit-profile/1"
# Records every report carries, which a clause may cite as evidence (results.json keys).
RECORDS = ("model", "training", "datasets", "provenance")
RECORD_LABEL = {"model": "model card", "training": "training record", "datasets": "dataset records",
                "provenance": "provenance record"}
# Coverage of a clause, in the order the report counts them.
COVERAGE = ("evidenced", "partial", "not_evidenced", "attestation")
# Several shipped profiles under one name.
ALIASES: dict[str, tuple[str, ...]] = {
    "eu-ai-act": ("eu-ai-act-art10", "eu-ai-act-art15", "eu-ai-act-annex-iv"),
}
MAX_PROFILE_BYTES = 1 << 20
MAX_PROFILE_NODES = 100_000  # a profile lists a few dozen clauses
MAX_TITLE = 120  # "a short title in our own words": long enough for a summary, too short for a quote
_PROFILE_DIR = "profiles"
# Check statuses that are evidence (a skipped or errored check measured nothing).
_MEASURED = ("pass", "warn", "fail", "info")


# --------------------------------------------------------------------------- the model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EvidenceItem(_Strict):
    """A check (and the metrics of it that bear on the clause), or a record of the report."""

    check: str | None = None
    metrics: list[str] = Field(default_factory=list)
    record: Literal["model", "training", "datasets", "provenance"] | None = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_kind(self) -> EvidenceItem:
        if (self.check is None) == (self.record is None):
            raise ValueError("give exactly one of 'check' or 'record'")
        if self.record is not None and self.metrics:
            raise ValueError("'metrics' belong to a 'check', not to a 'record'")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics are repeated: {self.metrics}")
        return self


class Clause(_Strict):
    id: str = Field(min_length=1, max_length=40)
    title: str = Field(min_length=1, max_length=MAX_TITLE)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    attestation: bool = False
    note: str | None = Field(None, max_length=400)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> Any:
        # `id: 2.1` in YAML is a float; the clause number is what was written
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _evidence_or_attestation(self) -> Clause:
        if self.attestation and self.evidence:
            raise ValueError("a clause has 'evidence' or 'attestation: true', not both")
        if not self.attestation and not self.evidence:
            raise ValueError("give the clause 'evidence' (checks or records) or 'attestation: true'")
        return self


class Profile(_Strict):
    schema_: Literal["audit-profile/1"] = Field(PROFILE_SCHEMA, alias="schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._\-]*$", max_length=60)
    title: str = Field(min_length=1, max_length=MAX_TITLE)
    source: str | None = Field(None, max_length=300)
    version: str | None = Field(None, max_length=60)
    note: str | None = Field(None, max_length=1000)
    clauses: list[Clause] = Field(min_length=1)
    # where it came from: "builtin:<name>" or a file path; SHA-256 of the file's bytes
    _file: str = PrivateAttr(default="<memory>")
    _sha256: str = PrivateAttr(default="")

    @property
    def file(self) -> str:
        return self._file

    @property
    def sha256(self) -> str:
        return self._sha256


# --------------------------------------------------------------------------- YAML


# --------------------------------------------------------------------------- loading


def _profiles_dir() -> Any:
    return resources.files("audit").joinpath(_PROFILE_DIR)


def builtin_names() -> list[str]:
    """Names of the profiles shipped with the suite (file stems of audit/profiles/*.yaml)."""
    return sorted(p.name[: -len(".yaml")] for p in _profiles_dir().iterdir() if p.name.endswith(".yaml"))


def _is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref


def load_profile(ref: str | Path, *, base_dir: Path | None = None, check_registry: bool = True,
                 selected_at: str | None = None) -> Profile:
    """A shipped profile by name, or a profile file (relative to `base_dir`).
    `selected_at` ("spec.yaml: standards[1]") is added to errors raised for the file."""
    ref_s = str(ref)
    if not isinstance(ref, Path) and not _is_path(ref_s):
        if ref_s not in builtin_names():
            known = builtin_names() + list(ALIASES)
            raise SpecError(f"unknown standard profile '{ref_s}'.{did_you_mean(ref_s, known)} "
                            "A profile is a shipped name or the path of a YAML file (ending in .yaml).",
                            where=selected_at)
        data = _profiles_dir().joinpath(f"{ref_s}.yaml").read_bytes()
        return _parse_bytes(data, f"builtin:{ref_s}", check_registry, selected_at)
    path = Path(ref_s).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise SpecError(f"profile file not found: {path}", where=selected_at)
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise SpecError(f"profile file is larger than {MAX_PROFILE_BYTES >> 20} MiB", where=str(path))
    return _parse_bytes(path.read_bytes(), str(path), check_registry, selected_at)


def _parse_bytes(data: bytes, source: str, check_registry: bool, selected_at: str | None) -> Profile:
    tail = f" (profile selected at {selected_at})" if selected_at else ""
    try:
        raw = load_yaml(data.decode("utf-8"), source, max_nodes=MAX_PROFILE_NODES, what="a profile", aliases=False)
    except UnicodeDecodeError as exc:
        raise SpecError(f"the profile is not UTF-8 text ({exc.reason})" + tail, where=source) from None
    except SpecError as exc:
        if not tail:
            raise
        raise SpecError(str(exc.args[0]).removeprefix(f"{exc.where}: ") + tail, where=exc.where) from None
    try:
        profile = parse_profile(raw, source=source, check_registry=check_registry)
    except SpecError as exc:
        if not tail:
            raise
        raise SpecError(str(exc.args[0]).removeprefix(f"{exc.where}: ") + tail, where=exc.where) from None
    profile._sha256 = hashlib.sha256(data).hexdigest()
    return profile


def parse_profile(raw: Any, *, source: str = "<memory>", check_registry: bool = True) -> Profile:
    """Validate a parsed profile: structure, unique clause ids, and (with the registry)
    check and metric names."""
    if not isinstance(raw, dict):
        raise SpecError("a profile must be a YAML mapping with 'name', 'title' and 'clauses'", where=source)
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        raise _profile_error(exc, source) from None
    profile._file = source
    seen: dict[str, int] = {}
    for i, clause in enumerate(profile.clauses):
        if clause.id in seen:
            raise SpecError(f"duplicate clause id '{clause.id}' (also clauses[{seen[clause.id]}]). Each clause "
                            f"needs its own id: merge the two clauses' evidence into one, or number the second "
                            f"apart (e.g. '{clause.id} ¶2')", where=f"{source}: clauses[{i}].id")
        seen[clause.id] = i
    if check_registry:
        _check_names(profile, source)
    return profile


_FIELDS = {"<top>": ["schema", "name", "title", "source", "version", "note", "clauses"],
           "clause": ["id", "title", "evidence", "attestation", "note"],
           "evidence": ["check", "metrics", "record"]}


def _profile_error(exc: ValidationError, source: str) -> SpecError:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        field = str(loc[-1])
        parent = loc[:-1]
        kind = ("evidence" if "evidence" in parent else "clause" if "clauses" in parent else "<top>")
        msg = f"unknown key '{field}'.{did_you_mean(field, _FIELDS[kind])}"
    elif err["type"] == "missing":
        msg = f"missing required key '{loc[-1]}'"
    elif err["type"] == "string_too_long" and loc and loc[-1] == "title":
        msg = (f"{msg}: a title is a short summary in your own words (at most {MAX_TITLE} characters), "
               "not the clause's text")
    elif err["type"] == "literal_error" and loc and loc[-1] == "record":
        msg = f"unknown record '{err.get('input')}'.{did_you_mean(str(err.get('input')), RECORDS)}"
    elif err["type"] == "literal_error" and loc and loc[-1] == "schema":
        msg = f"unknown profile schema '{err.get('input')}' (this suite reads {PROFILE_SCHEMA})"
    return SpecError(msg, where=f"{source}: {yaml_path(loc)}")


def _check_names(profile: Profile, source: str) -> None:
    from audit.registry import registry

    names = registry.names()
    for i, clause in enumerate(profile.clauses):
        for j, item in enumerate(clause.evidence):
            if item.check is None:
                continue
            where = f"{source}: clauses[{i}].evidence[{j}]"
            if item.check not in names:
                raise SpecError(f"unknown check '{item.check}'.{did_you_mean(item.check, names)}",
                                where=f"{where}.check")
            known = check_metric_names(item.check)
            if known is None:
                continue
            for k, metric in enumerate(item.metrics):
                if metric not in known:
                    raise SpecError(f"unknown metric '{metric}' for {item.check}.{did_you_mean(metric, known)}",
                                    where=f"{where}.metrics[{k}]")


def check_metric_names(check: str) -> list[str] | None:
    """The metric names a registered check declares, without importing its module when it
    is not imported yet (the `metrics = {...}` literal of its class, read from source).
    None when they cannot be read that way (then metric names go unchecked)."""
    from audit.registry import registry

    loaded = getattr(registry, "_loaded", {})
    if check in loaded:
        return list(loaded[check].metrics)
    target = getattr(registry, "_lazy", {}).get(check)
    if not target:
        return None
    module, _, cls_name = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        tree = ast.parse(Path(spec.origin).read_bytes())
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                if any(isinstance(t, ast.Name) and t.id == "metrics" for t in targets):
                    value = stmt.value  # type: ignore[union-attr]
                    if isinstance(value, ast.Dict) and all(
                            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in value.keys):
                        return [k.value for k in value.keys]  # type: ignore[union-attr]
                    return None
    return None


def select_profiles(standard: str | None, standards: Sequence[str], *, base_dir: Path, source: str,
                    check_registry: bool = True) -> list[Profile]:
    """The profiles a spec selects: every entry of `standards` (a shipped name, an alias
    such as `eu-ai-act`, or a YAML path), and `standard` when it is a shipped name or a
    YAML path; any other `standard` string is the report's subtitle and selects nothing."""
    refs: list[tuple[str, str]] = []
    # a subtitle may hold a slash ("ISO/IEC 42001"); only a .yaml/.yml name is a profile file here
    if standard and (standard in builtin_names() or standard in ALIASES or standard.endswith((".yaml", ".yml"))):
        refs.append((standard, f"{source}: standard"))
    refs += [(ref, f"{source}: standards[{i}]") for i, ref in enumerate(standards)]
    profiles: list[Profile] = []
    where_of: dict[str, str] = {}
    for ref, where in refs:
        for name in ALIASES.get(ref, (ref,)):
            profile = load_profile(name, base_dir=base_dir, check_registry=check_registry, selected_at=where)
            if profile.name in where_of:
                raise SpecError(f"standard profile '{profile.name}' is selected twice (also at {where_of[profile.name]})",
                                where=where)
            where_of[profile.name] = where
            profiles.append(profile)
    return profiles


# --------------------------------------------------------------------------- coverage

_STATUS_RANK = {"fail": 0, "warn": 1, "pass": 2, "info": 3}


def _metric_value(check: Mapping[str, Any], metric: str) -> Any:
    m = (check.get("metrics") or {}).get(metric) if isinstance(check.get("metrics"), Mapping) else None
    return m.get("value") if isinstance(m, Mapping) else m


def _headline(check: Mapping[str, Any]) -> str | None:
    """First thresholded metric in the check's metric order, else its first metric (as the report)."""
    metrics = check.get("metrics") if isinstance(check.get("metrics"), Mapping) else {}
    info = check.get("metric_info") if isinstance(check.get("metric_info"), Mapping) else {}
    order = [m for m in info if m in metrics] + [m for m in metrics if m not in info]
    judged = {t.get("metric") for t in check.get("thresholds") or [] if isinstance(t, Mapping)}
    return next((m for m in order if m in judged), order[0] if order else None)


def _figure(check: Mapping[str, Any], metric: str) -> dict[str, Any]:
    m = (check.get("metrics") or {}).get(metric)
    m = m if isinstance(m, Mapping) else {"value": m}
    thresholds = [{k: t.get(k) for k in ("op", "limit", "level", "status")}
                  for t in check.get("thresholds") or [] if isinstance(t, Mapping) and t.get("metric") == metric]
    info = (check.get("metric_info") or {}).get(metric) if isinstance(check.get("metric_info"), Mapping) else None
    unit = info.get("unit") if isinstance(info, Mapping) else None
    return {"metric": metric, "value": m.get("value"), "ci": m.get("ci"), "unit": unit or "",
            "thresholds": thresholds}


def _check_evidence(item: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    wanted = list(item.get("metrics") or [])
    found = []
    for c in checks:
        if c.get("check") != item.get("check"):
            continue
        status = str(c.get("status") or "error")
        measured = status in _MEASURED
        metrics = wanted or ([h] if (h := _headline(c)) else [])
        missing = [m for m in metrics if _metric_value(c, m) is None] if measured else []
        found.append({
            "id": c.get("id"), "status": status, "data": c.get("data"),
            "evidences": measured and not missing and bool(metrics),
            "missing_metrics": missing,
            "figures": [_figure(c, m) for m in metrics if m not in missing] if measured else [],
            "message": "" if measured else str(c.get("message") or ""),
        })
    state = ("evidenced" if any(f["evidences"] for f in found) else
             "not_measured" if found else "absent")
    return {"check": item.get("check"), "metrics": wanted, "state": state, "results": found}


def _record_evidence(item: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    record = str(item.get("record"))
    present = isinstance(results.get(record), Mapping) and bool(results.get(record))
    return {"record": record, "label": RECORD_LABEL.get(record, record),
            "state": "evidenced" if present else "absent"}


def coverage(profile: Profile | Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """How far an audit's results (the results.json dict) evidence each clause of `profile`.

    A clause with evidence is `evidenced` when every evidence item is (a check of that name
    measured all of the item's metrics, or the record is present), `partial` when some are,
    `not_evidenced` when none are; `attestation` clauses are left to the reviewer. `status`
    is the worst judgement among the checks that evidence the clause (fail > warn > pass >
    info), so a clause evidenced by a failing check says so."""
    prof = profile.model_dump(by_alias=True) if isinstance(profile, Profile) else dict(profile)
    checks = [c for c in results.get("checks") or [] if isinstance(c, Mapping)]
    rows = []
    for clause in prof.get("clauses") or []:
        row: dict[str, Any] = {"id": clause["id"], "title": clause["title"], "note": clause.get("note")}
        if clause.get("attestation"):
            rows.append({**row, "coverage": "attestation", "status": None, "evidence": []})
            continue
        items = [_record_evidence(e, results) if e.get("record") else _check_evidence(e, checks)
                 for e in clause.get("evidence") or []]
        n_ok = sum(i["state"] == "evidenced" for i in items)
        cov = "evidenced" if items and n_ok == len(items) else "partial" if n_ok else "not_evidenced"
        statuses = [r["status"] for i in items for r in i.get("results", []) if r["evidences"]]
        status = min(statuses, key=lambda s: _STATUS_RANK.get(s, 9)) if statuses else None
        rows.append({**row, "coverage": cov, "status": status, "evidence": items})
    summary = dict.fromkeys(COVERAGE, 0)
    for r in rows:
        summary[r["coverage"]] += 1
    summary["failing"] = sum(r["status"] == "fail" for r in rows)
    return {
        "name": prof.get("name"), "title": prof.get("title"), "source": prof.get("source"),
        "version": prof.get("version"), "note": prof.get("note"),
        "file": profile.file if isinstance(profile, Profile) else prof.get("file"),
        "sha256": profile.sha256 if isinstance(profile, Profile) else prof.get("sha256"),
        "summary": summary, "clauses": rows,
    }


def attach_standards(results: Any, profiles: Sequence[Profile]) -> Any:
    """`results` (audit.results.Results) with the coverage of each profile attached."""
    if not profiles:
        return results
    doc = results.to_json()
    return dataclasses.replace(results, standards=tuple(coverage(p, doc) for p in profiles))
