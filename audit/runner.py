"""The runner: the only place thresholds are evaluated.

An exception inside a check makes that check `error` (traceback kept) and the audit
goes on; a missing requirement makes it `skipped` with the reason. Bad input found
before any check runs (missing files, shape mismatch, NaNs) raises AuditInputError.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
import traceback as _tb
from collections.abc import Callable
from typing import Any

import numpy as np

from audit import __version__
from audit.check import DEFAULT_CONFIDENCE, Check, Measurement
from audit.context import Context
from audit.errors import AuditInputError, SkipCheck
from audit.labels import check_label_order, check_token_alignment
from audit.registry import registry
from audit.results import CheckResult, Results, ThresholdResult, jsonable
from audit.spec import AuditSpec, CheckEntry
from audit.standards import attach_standards
from audit.verdict import apply_holm, check_status, summarize, threshold_result

class Runner:
    """Runs the checks of one spec over one shared Context."""

    def __init__(self, spec: AuditSpec, *, device: str | None = None,
                 progress: Callable[..., None] | None = None, context: Context | None = None) -> None:
        """`context`: an existing one (in-memory data and model) instead of the spec's."""
        self.spec = spec
        self.started_at = _dt.datetime.now(_dt.timezone.utc)
        self._t0 = time.perf_counter()
        self.ctx = context or Context(spec, device=device, progress=progress)
        self.results: dict[str, CheckResult] = {}
        # datasets whose pass failed after the engine's retries: their checks error
        self.failed: dict[str, str] = {}

    def prepare(self) -> None:
        """Load the model and every dataset a check uses; fail fast on bad input."""
        from audit.engines import PassFailed

        ctx = self.ctx
        ctx.start_engine()  # engine: ray: Ray missing or a bad address is exit 2 before any work
        _ = ctx.model
        roles = {e.data for e in self.spec.checks} or set(self.spec.data)
        ctx.check_task(sorted(roles))
        for role in sorted(roles):
            try:
                ctx.preflight(role)
            except PassFailed as exc:
                self.failed[role] = str(exc)
                continue
            ds = ctx.dataset(role)
            if ds.kind == "tokens":  # labels shifted against the sub-tokens
                check_token_alignment(ds, ctx.sub_token_logits(role))
            else:
                check_label_order(ds, ctx.logits(role))  # an order guessed from the data
        for entry in self.spec.checks:
            cls = registry.get(entry.check)
            if entry.data in self.failed or self.missing(cls, entry.typed_params):
                continue  # skipped when it runs, with the reason; or an error: its data failed
            try:
                cls.preflight(ctx, entry.typed_params)
            except PassFailed:
                continue  # another dataset's pass failed: the check errors when it runs
            except AuditInputError as exc:
                raise type(exc)(str(exc), where=f"{self.spec.source}: check '{entry.id}'") from None

    def missing(self, cls: type[Check], params: Any) -> str | None:
        ctx = self.ctx
        kind = ctx.dataset(params.data).kind
        if kind not in cls.kinds:
            return f"measures {' or '.join(cls.kinds)} data; dataset '{params.data}' is {kind}"
        for req in cls.requires:
            if req == "data":
                continue
            if req == "train" and not ctx.has_dataset("train"):
                return "the spec has no 'train' dataset"
            if req == "domains" and not self.spec.domains:
                return "the spec defines no data.domains"
            if req == "sensitive" and not ctx.dataset(params.data).sensitive:
                return f"dataset '{params.data}' has no sensitive attributes"
        return None

    def release(self, remaining: list[CheckEntry]) -> None:
        """Let the Context drop what no check in `remaining` reads: the row hashes of
        streamed datasets (8 bytes a row) once their last reader has run."""
        keep: set[str] = set()
        for entry in remaining:
            keep.update(registry.get(entry.check).row_hash_datasets(entry.typed_params))
        self.ctx.keep_row_hashes(keep)

    def run_check(self, entry: CheckEntry) -> CheckResult:
        cls = registry.get(entry.check)
        t0 = time.perf_counter()
        measurement: Measurement | None = None
        tb: str | None = None
        reason = ""
        status: str
        from audit.engines import PassFailed

        try:
            params = entry.typed_params
            if params.data in self.failed:
                raise PassFailed(self.failed[params.data])
            skip = self.missing(cls, params)
            if skip:
                raise SkipCheck(skip)
            measurement = cls().run(self.ctx, params)
            status = "info"
        except SkipCheck as exc:
            status, reason = "skipped", str(exc)
        except PassFailed as exc:
            status, reason = "error", str(exc)
        except AuditInputError as exc:
            status, reason = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop the audit
            status, reason = "error", f"{type(exc).__name__}: {exc}"
            tb = _tb.format_exc()

        thresholds: list[ThresholdResult] = []
        reasons: list[dict[str, str]] = []
        flags = [f.to_json() for f in measurement.flags] if measurement else []
        metrics = {k: m.to_json() for k, m in measurement.metrics.items()} if measurement else {}
        message = reason
        if measurement is not None:
            thresholds = [threshold_result(name, measurement.metrics.get(name), t, cls.metrics.get(name),
                                           entry.confidence) for name, t in entry.thresholds.items()]
            status, reasons = check_status(thresholds, flags)
            message = summarize(thresholds, flags, metrics)
        result = CheckResult(
            id=entry.id, check=entry.check, version=cls.version, clause=entry.clause, status=status,
            data=entry.data, area=cls.area, summary=cls.summary, confidence=entry.confidence,
            params=entry.typed_params.model_dump(mode="json") if entry._typed is not None else dict(entry.params),
            metrics=metrics,
            metric_info={k: spec.to_json() for k, spec in cls.metrics.items()},
            thresholds=tuple(thresholds), reasons=tuple(reasons),
            message=message,
            flags=tuple(flags),
            evidence=tuple(measurement.evidence) if measurement else (),
            duration_s=time.perf_counter() - t0, traceback=tb,
        )
        self.results[entry.id] = result
        return result

    def finish(self) -> Results:
        ctx = self.ctx
        checks = tuple(self.results[e.id] for e in self.spec.checks if e.id in self.results)
        if self.spec.familywise == "holm":
            judged = [e.confidence for e in self.spec.checks if e.thresholds] or [DEFAULT_CONFIDENCE]
            checks = tuple(apply_holm(list(checks), alpha=1.0 - min(judged)))
        model = ctx.model if ctx.model_loaded else None
        import torch

        provenance = {
            "spec_sha256": self.spec.sha256, "spec_source": self.spec.source,
            "model_sha256": model.sha256 if model else None,
            "data_sha256": _data_hashes(ctx),
            "seed": self.spec.seed, "device": str(ctx.device),
            "execution": ctx.execution_record(),
            **({"task": ctx.describe_task()["task"], "task_source": ctx.describe_task()["source"]}
               if model else {}),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__, "audit": __version__, **_lib_versions()},
            "platform": platform.platform(),
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "compute": ctx.compute(),
            "timings": {k: round(v, 4) for k, v in ctx.timings.items()}
            | {f"check:{c.id}": round(c.duration_s, 4) for c in checks},
            "spec": jsonable(self.spec.raw, default=str),
        }
        results = Results(
            name=self.spec.name, standard=self.spec.standard, checks=checks, provenance=provenance,
            datasets={name: ds.describe() for name, ds in ctx.loaded_datasets.items()},
            model=model.card() if model else None,
            training=model.training if model else None,
        )
        return attach_standards(results, self.spec.profiles)


def _data_hashes(ctx: Context) -> dict[str, str | None]:
    """Content hashes of the loaded datasets; None for a streamed dataset whose pass failed."""
    from audit.engines import PassFailed

    out: dict[str, str | None] = {}
    for name in ctx.loaded_datasets:
        try:
            out[name] = ctx.data_sha256(name)
        except PassFailed:
            out[name] = None
    return out


def _lib_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("scikit-learn", "captum", "shap", "fairlearn", "weasyprint"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def run_audit(spec: AuditSpec, *, device: str | None = None,
              progress: Callable[[str, int, int], None] | None = None,
              on_check: Callable[[CheckResult], None] | None = None) -> Results:
    runner = Runner(spec, device=device, progress=progress)
    try:
        runner.prepare()
        for i, entry in enumerate(spec.checks):
            result = runner.run_check(entry)
            runner.release(spec.checks[i + 1:])
            if on_check:
                on_check(result)
        return runner.finish()
    finally:
        runner.ctx.close()
