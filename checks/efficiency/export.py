"""efficiency.export: does the model a team will serve (an ONNX export under ONNX Runtime)
give the answers of the model that was audited, and how fast is it?

A float32 CPU copy of the model is exported with `torch.onnx.export` — the dynamo
exporter (`torch.export` + onnxscript) where it works, the classic TorchScript exporter
otherwise (`exporter: auto`; `dynamo` or `classic` forces one) — with a dynamic batch
axis, and loaded in an ONNX Runtime CPU session with as many intra-op threads as
PyTorch uses. Every ONNX Runtime call goes through the context (`ctx.run_model`,
`ctx.time_calls`), so it is counted like any pass.

Parity is measured on the check's dataset (all rows, or a seeded subset of
`n_samples`) against the audit's own float32 CPU logits (the context's cached pass when
the audit runs on the CPU; otherwise the float32 copy on the CPU, like with like):
`prediction_agreement` is the share of rows where both predict the same class (exact
interval); `max_logit_diff` is the largest absolute logit difference over the rows,
with the percentile interval of its bootstrap distribution, computed exactly from the
order statistics (the maximum of a resample is the j-th largest value with probability
((n-j+1)/n)^n - ((n-j)/n)^n): its upper end is the observed maximum, its lower end
says how much the maximum rests on a few rows.

Latency: per batch size, `repeats` timed calls after `warmup` untimed ones of both
runtimes on the same batch; `ort_p50_ms` is ONNX Runtime's median call latency at the
smallest batch size and `speedup` the PyTorch median over the ONNX Runtime median there,
with a bootstrap CI over the timing samples. `onnx_size_mb` is the size of the exported
files (10^6 bytes).

A model the exporters cannot export (an operator with no ONNX translation, a TorchScript
model under the dynamo exporter, ...) makes the check `skipped`, with each exporter's
reason in one line. `onnx`, `onnxruntime` and `onnxscript` come with the `onnx` extra.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from audit.check import Check, Measurement, Metric, Params, cell, chart, higher, lower, table, text
from audit.context import _logits_of, logits_to_proba
from audit.errors import SkipCheck
from audit.registry import register_check
from audit.stats import bootstrap_median, from_draws, proportion, ratio_of_medians

_RESAMPLES = 2000


class ExportParams(Params):
    exporter: Literal["auto", "dynamo", "classic"] = Field(
        "auto", description="auto: the dynamo exporter, the classic one if it fails")
    opset: int | None = Field(None, ge=7, le=30, description="ONNX opset (default: the exporter's)")
    n_samples: int | None = Field(None, ge=10, description="compare on this many rows (seeded subset); all if unset")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    warmup: int = Field(3, ge=0, le=1000)
    repeats: int = Field(20, ge=5, le=10_000)

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be at least 1")
        return sorted(set(v))


class _Logits(nn.Module):
    """The model with its output reduced to the logits tensor (Hugging Face outputs, tuples)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits_of(self.module(x))


class ExportFailed(Exception):
    """An exporter (or ONNX Runtime loading its output) failed; the message is one line."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException, limit: int = 240) -> str:
    """The exporter's reason in one line: for the dynamo exporter the innermost cause of
    its exception summary, otherwise the first line of the message."""
    msg = _ANSI.sub("", str(exc))
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    reason = None
    if "## Exception summary" in msg:
        after = msg.split("## Exception summary", 1)[1]
        found = re.search(r"<class '(?:[\w.]+\.)?(\w+)'>: (.+)", after)
        if found:
            reason = f"{found.group(1)}: {found.group(2).strip()}"
    if reason is None:
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress, warn (TracerWarning, deprecations) and log (optional
    torchvision operators): none of it is the audit's output."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    # the classic exporter switches on the JIT's ONNX log (C++, straight to file descriptor 2,
    # the whole graph on a failure) and leaves it on
    jit_log = torch._C._jit_is_onnx_log_enabled()
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                _silenced_descriptors():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        torch._C._jit_set_onnx_log_enabled(jit_log)


@contextlib.contextmanager
def _silenced_descriptors() -> Iterator[None]:
    """File descriptors 1 and 2 into a scratch file: output written by C++ code."""
    try:
        saved = [os.dup(fd) for fd in (1, 2)]
    except OSError:  # no standard descriptors to silence
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        for fd in (1, 2):
            os.dup2(scratch.fileno(), fd)
        try:
            yield
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)


@contextlib.contextmanager
def _math_path() -> Iterator[None]:
    """Trace the modules' reference computation: without the fused Transformer fast path
    (`_transformer_encoder_layer_fwd`, taken when no weight needs a gradient), an
    inference shortcut that has no ONNX translation."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int | None,
                count: Callable[[nn.Module], nn.Module]) -> None:
    """Export `module` (taking `example`-like batches) to `path` with one exporter.

    The classic exporter traces the model on the real example batch, a forward pass that
    `count` (the context's counting wrapper) records; the dynamo exporter traces with
    fake tensors, which compute nothing."""
    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        with _quiet(), _math_path():
            if exporter == "dynamo":
                if importlib.util.find_spec("onnxscript") is None:
                    raise ExportFailed("the dynamo exporter needs onnxscript (pip install 'audit-suite[onnx]')")
                batch = torch.export.Dim("batch")
                program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                            verbose=False, **kwargs)
                program.save(str(path))
            else:
                torch.onnx.export(count(module), (example,), str(path), dynamo=False,
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **kwargs)
    except ExportFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - every exporter failure is a reason to report
        raise ExportFailed(one_line(exc)) from None


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # the same budget as PyTorch's
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        raise ExportFailed(f"ONNX Runtime cannot load the export: {one_line(exc)}") from None


def ort_runtime(session: Any, dtype: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy -> numpy callable over the session, for `ctx.run_model` and `ctx.time_calls`."""
    name = session.get_inputs()[0].name
    out = session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out], {name: np.ascontiguousarray(x, dtype=dtype)})[0]

    return run


def max_with_ci(values: np.ndarray, confidence: float, rng: np.random.Generator,
                n_resamples: int = _RESAMPLES) -> Metric:
    """The sample maximum with the percentile interval of its bootstrap distribution,
    drawn exactly from the order statistics: P(resample max <= j-th smallest) = (j/n)^n."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    if n == 0:
        return Metric(float("nan"), None, n=0)
    j = np.ceil(n * rng.random(n_resamples) ** (1.0 / n)).astype(np.int64)  # rank of the resample max
    draws = v[np.clip(j, 1, n) - 1]
    return from_draws(float(v[-1]), draws, confidence, n=n, bounds=(0.0, None))


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"torch {torch.__version__}"]
    for pkg in ("onnx", "onnxruntime", "onnxscript"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


@register_check
class Export(Check):
    name = "efficiency.export"
    version = 1
    area = "deployment"
    requires = ("data",)
    kinds = ("image", "tabular", "text")
    Params = ExportParams
    metrics = {
        "prediction_agreement": higher("Share of rows where the ONNX Runtime export predicts the same class as "
                                       "the audited PyTorch model.", proportion=True),
        "max_logit_diff": lower("Largest absolute difference between an ONNX Runtime logit and the PyTorch "
                                "one over the rows.", bounds=(0.0, None)),
        "ort_p50_ms": lower("Median ONNX Runtime call latency at the smallest batch size (CPU).", unit="ms",
                            bounds=(0.0, None), timing=True),
        "speedup": higher("Median PyTorch call time over median ONNX Runtime call time at the smallest batch "
                          "size, both on the CPU in float32 (above 1: ONNX Runtime is faster).", unit="x",
                          bounds=(0.0, None), timing=True),
        "onnx_size_mb": lower("Size of the exported ONNX files (10^6 bytes).", unit="MB", bounds=(0.0, None)),
    }
    summary = "ONNX export under ONNX Runtime: prediction agreement and max logit difference with the audited " \
              "model, and latency next to PyTorch's."

    def run(self, ctx, params: ExportParams) -> Measurement:
        missing = [p for p in ("onnx", "onnxruntime") if importlib.util.find_spec(p) is None]
        if missing:
            raise SkipCheck(f"needs {' and '.join(missing)}: pip install 'audit-suite[onnx]'")
        ds = ctx.dataset(params.data)
        idx = ctx.sample_rows(params.data, params.n_samples, f"{self.name}:{params.data}:subset")
        x = ds.rows(idx)  # all rows of a streamed dataset stay streamed

        fp32 = copy.deepcopy(ctx.model.module).cpu().float().eval()
        module = _Logits(fp32).eval()
        example = torch.as_tensor(ds.x[np.arange(2) % len(ds)])  # batch 2: a batch of 1 would be specialised
        order = {"auto": ["dynamo", "classic"], "dynamo": ["dynamo"], "classic": ["classic"]}[params.exporter]
        reasons: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="audit-onnx-") as tmp:
            session, used, size = None, None, 0
            for exporter in order:
                path = Path(tmp) / exporter / "model.onnx"
                path.parent.mkdir()
                try:
                    export_onnx(module, example, path, exporter, params.opset, ctx.counting)
                    session = ort_session(path)
                except ExportFailed as exc:
                    reasons[exporter] = str(exc)
                    continue
                used = exporter
                size = sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file())
                break
            if session is None:
                raise SkipCheck("cannot export to ONNX: " + "; ".join(f"{k} exporter: {v}" for k, v in reasons.items()))
            runtime = ort_runtime(session, ds.x.dtype)
            ort_logits = ctx.run_model(runtime, x, what="Predicting with ONNX Runtime")
            if ctx.device.type == "cpu":
                pt_logits = ctx.logits(params.data)[idx]  # the audit's own float32 CPU pass
            else:  # the audit ran on an accelerator: compare like with like on the CPU
                pt_logits = ctx.run_model(fp32, x, what="Predicting with the float32 copy (CPU)", device="cpu",
                                          precision="float32")
            timings = self._time(ctx, params, fp32, runtime, ds.x)

        pred_pt = logits_to_proba(pt_logits).argmax(axis=1)
        pred_ort = logits_to_proba(ort_logits).argmax(axis=1)
        if ort_logits.shape != pt_logits.shape:
            raise SkipCheck(f"the export returns {ort_logits.shape[1:]} per row, the model {pt_logits.shape[1:]}")
        diff = np.abs(ort_logits.astype(np.float64) - pt_logits.astype(np.float64)).max(axis=1)
        rng = ctx.rng(f"{self.name}:{params.data}")
        agree = proportion(int((pred_pt == pred_ort).sum()), len(idx), params.confidence)
        max_diff = max_with_ci(diff, params.confidence, rng)
        small = min(timings)
        t_pt, t_ort = timings[small]
        speedup = ratio_of_medians(t_pt, t_ort, confidence=params.confidence, rng=rng)
        p50 = bootstrap_median(t_ort * 1000, confidence=params.confidence, rng=rng)
        metrics = {"prediction_agreement": agree, "max_logit_diff": max_diff, "ort_p50_ms": p50,
                   "speedup": speedup, "onnx_size_mb": Metric(size / 1e6)}
        evidence = self._evidence(ctx, params, idx, used or "", reasons, size, agree, max_diff, diff, pred_pt,
                                  pred_ort, timings, rng)
        return Measurement(metrics=metrics, evidence=evidence)

    @staticmethod
    def _time(ctx, params: ExportParams, fp32: nn.Module, runtime: Callable[[np.ndarray], np.ndarray],
              x_all: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Seconds per call of each runtime, the timed calls interleaved (PyTorch, ONNX
        Runtime, PyTorch, ...) so that both meet the same machine load."""
        out = {}
        for bs in params.batch_sizes:
            xb = np.ascontiguousarray(x_all[np.arange(bs) % len(x_all)])
            xt = torch.as_tensor(xb)
            ctx.time_calls(fp32, xt, warmup=params.warmup, repeats=0, precision="float32")
            ctx.time_calls(runtime, xb, warmup=params.warmup, repeats=0)
            t_pt, t_ort = np.empty(params.repeats), np.empty(params.repeats)
            for i in range(params.repeats):
                t_pt[i] = ctx.time_calls(fp32, xt, warmup=0, repeats=1, precision="float32")[0]
                t_ort[i] = ctx.time_calls(runtime, xb, warmup=0, repeats=1)[0]
            out[bs] = (t_pt, t_ort)
        return out

    @staticmethod
    def _evidence(ctx, params: ExportParams, idx: np.ndarray, used: str, reasons: dict[str, str], size: int,
                  agree: Metric, max_diff: Metric, diff: np.ndarray, pred_pt: np.ndarray, pred_ort: np.ndarray,
                  timings: dict[int, tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> list[dict]:
        q50, q99 = np.quantile(diff, [0.5, 0.99])
        rows = [["prediction agreement", cell(agree.value, agree.ci)],
                ["max |logit difference|", cell(max_diff.value, max_diff.ci)],
                ["99th percentile |logit difference|", float(f"{q99:.4g}")],
                ["median |logit difference|", float(f"{q50:.4g}")],
                ["rows that change class", int((pred_pt != pred_ort).sum())]]
        lat_rows, labels, values, lo, hi = [], [], [], [], []
        for bs, (t_pt, t_ort) in timings.items():
            ms_pt, ms_ort = t_pt * 1000, t_ort * 1000
            s = ratio_of_medians(t_pt, t_ort, confidence=params.confidence, rng=rng)
            lat_rows.append([bs, round(float(np.median(ms_pt)), 4), _spread(ms_pt), round(float(np.median(ms_ort)), 4),
                             _spread(ms_ort), cell(s.value, s.ci)])
            for name, ms in (("PyTorch", ms_pt), ("ONNX Runtime", ms_ort)):
                ci = bootstrap_median(ms, confidence=params.confidence, rng=rng).ci
                labels.append(f"bs {bs} {name}")
                values.append(float(np.median(ms)))
                lo.append(ci[0] if ci else values[-1])
                hi.append(ci[1] if ci else values[-1])
        fallback = "".join(f" The {k} exporter failed first: {v}." for k, v in reasons.items())
        return [
            table("ONNX Runtime vs PyTorch", ["", "value"], rows,
                  note=f"{len(idx):,} rows of '{params.data}'; PyTorch: the audited model in float32 on the CPU."),
            table("Latency on the CPU (float32)", ["batch size", "PyTorch median ms", "PyTorch p10-p90 ms",
                                                   "ONNX Runtime median ms", "ONNX Runtime p10-p90 ms", "speedup"],
                  lat_rows,
                  note=f"{params.repeats} timed calls per runtime and batch size, interleaved so that both meet "
                       f"the same machine load, after {params.warmup} warm-up calls each; "
                       f"{torch.get_num_threads()} intra-op threads for both. Speedup: PyTorch median over ONNX "
                       f"Runtime median, bootstrap CI. A wide p10-p90 range means a busy machine."),
            chart("bar", "Median call latency", {"labels": labels, "values": values, "ci_lo": lo, "ci_hi": hi,
                                                 "title": "PyTorch vs ONNX Runtime (CPU)", "ylabel": "ms"},
                  caption="Median call latency per batch size with bootstrap CIs."),
            text("Export", f"Exported with the {used} exporter "
                           f"({'torch.export + onnxscript' if used == 'dynamo' else 'TorchScript tracing'}), "
                           f"dynamic batch axis, {'opset ' + str(params.opset) if params.opset else 'default opset'}"
                           f"; {size / 1e6:.3f} MB; ONNX Runtime CPUExecutionProvider. {_versions()}.{fallback}"),
        ]


def _spread(ms: np.ndarray) -> str:
    lo, hi = np.percentile(ms, [10, 90])
    return f"{lo:.4g}-{hi:.4g}"


