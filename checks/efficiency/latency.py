"""efficiency.latency: how fast the model answers on the audit's device.

For every batch size the check takes that many rows of the dataset (repeated when the
dataset is smaller), runs `warmup` untimed forward passes, then `repeats` timed ones
under `torch.inference_mode()` with the context's autocast. On CUDA the device is
synchronised only around each timed pass, so a timing covers the kernels, not the launch
alone. Percentiles come from the timing samples, and their confidence intervals from a
bootstrap of those samples.

Headline: `p95_ms` and `p50_ms` are per-call latencies at the smallest batch size (batch
size 1 by default: the latency a single request sees); `throughput` is samples per second
at the largest batch size (median time). `params` counts parameters and `size_mb` is the
size of the weights serialized as safetensors (10^6 bytes), i.e. their size on disk.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, field_validator

from audit.check import Check, Measurement, Metric, Params, chart, higher, lower, table, text
from audit.registry import register_check
from audit.stats import percentile_ci

_RESAMPLES = 2000


class LatencyParams(Params):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    warmup: int = Field(5, ge=0, le=1000)
    repeats: int = Field(30, ge=5, le=10_000)

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be at least 1")
        return sorted(set(v))


def bootstrap_quantile(samples: np.ndarray, q: float, *, confidence: float, rng: np.random.Generator,
                       n_resamples: int = _RESAMPLES) -> Metric:
    """The q-th percentile of `samples` with a percentile-bootstrap CI (index resampling)."""
    samples = np.asarray(samples, dtype=np.float64)
    idx = rng.integers(0, len(samples), size=(n_resamples, len(samples)))
    draws = np.percentile(samples[idx], q, axis=1)
    return Metric(float(np.percentile(samples, q)), percentile_ci(draws, confidence))


def weights_size_bytes(module: torch.nn.Module) -> int:
    from audit.training import state_bytes

    return len(state_bytes(module))


@register_check
class Latency(Check):
    name = "efficiency.latency"
    version = 1
    requires = ("data",)
    Params = LatencyParams
    area = "deployment"
    metrics = {
        "p95_ms": lower("95th-percentile latency of one forward call at the smallest batch size.", unit="ms",
                        bounds=(0.0, None), timing=True),
        "p50_ms": lower("Median latency of one forward call at the smallest batch size.", unit="ms",
                        bounds=(0.0, None), timing=True),
        "throughput": higher("Samples per second at the largest batch size (median call time).",
                             unit="samples/s", bounds=(0.0, None), timing=True),
        "params": lower("Number of model parameters.", unit="parameters", bounds=(0.0, None)),
        "size_mb": lower("Size of the weights serialized as safetensors (10^6 bytes).", unit="MB",
                         bounds=(0.0, None)),
    }
    summary = "Per-call latency percentiles per batch size, throughput, parameter count and size on the audit's device."

    def run(self, ctx, params: LatencyParams) -> Measurement:
        ds = ctx.dataset(params.data)
        module = ctx.model.module
        device = ctx.device
        rows, per_bs = [], {}
        for bs in params.batch_sizes:
            idx = np.arange(bs) % len(ds)
            x = torch.as_tensor(ds.x[idx]).to(device)
            # the same precision as the audit's own inference (bf16 autocast on CUDA)
            times = ctx.time_calls(None, x, warmup=params.warmup, repeats=params.repeats)
            ms = times * 1000.0
            rng = ctx.rng(f"{self.name}:{params.data}:{bs}")
            p50 = bootstrap_quantile(ms, 50, confidence=params.confidence, rng=rng)
            p95 = bootstrap_quantile(ms, 95, confidence=params.confidence, rng=rng)
            # throughput = bs / median seconds; the CI maps the median's CI (monotone)
            thr = Metric(bs * 1000.0 / p50.value,
                         None if p50.ci is None else (bs * 1000.0 / p50.ci[1], bs * 1000.0 / p50.ci[0]))
            per_bs[bs] = (p50, p95, thr, ms)
            rows.append([bs, _cell(p50), _cell(p95), round(float(ms.mean()), 4), round(float(ms.min()), 4),
                         _cell(thr, 1), params.repeats])
        small, large = min(per_bs), max(per_bs)
        n_params = int(sum(p.numel() for p in module.parameters()))
        size_mb = weights_size_bytes(module) / 1e6
        metrics = {"p95_ms": per_bs[small][1], "p50_ms": per_bs[small][0], "throughput": per_bs[large][2],
                   "params": Metric(float(n_params)), "size_mb": Metric(size_mb)}
        evidence = [
            table("Latency per batch size", ["batch size", "p50 ms", "p95 ms", "mean ms", "min ms",
                                             "throughput (samples/s)", "timed calls"], rows,
                  note=f"{params.warmup} warm-up calls per batch size; CIs bootstrap the timing samples."),
            text("Timing set-up",
                 f"device {device}"
                 + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                    f", {torch.get_num_threads()} intra-op threads")
                 + f"; precision {'bf16 autocast' if device.type == 'cuda' else 'float32'}; "
                 f"input {tuple(ds.x.shape[1:])} {ds.x.dtype}; {n_params:,} parameters, {size_mb:.3f} MB."),
        ]
        evidence.append(chart("bar", "Latency per batch size", _bars(per_bs),
                              caption="Median and 95th-percentile call latency with bootstrap CIs."))
        return Measurement(metrics=metrics, evidence=evidence)


def _cell(m: Metric, digits: int = 4) -> dict:
    ci = None if m.ci is None else [round(m.ci[0], digits), round(m.ci[1], digits)]
    return {"value": round(m.value, digits), "ci": ci}


def _bars(per_bs: dict) -> dict:
    labels, values, lo, hi = [], [], [], []
    for bs, (p50, p95, _, _) in per_bs.items():
        for name, m in (("p50", p50), ("p95", p95)):
            labels.append(f"bs {bs} {name}")
            values.append(m.value)
            lo.append(m.ci[0] if m.ci else m.value)
            hi.append(m.ci[1] if m.ci else m.value)
    return {"labels": labels, "values": values, "ci_lo": lo, "ci_hi": hi, "title": "Call latency", "ylabel": "ms"}
