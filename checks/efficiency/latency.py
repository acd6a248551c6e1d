"""efficiency.latency: how fast the model answers on the audit's device.

Timing on a shared machine is noisy, and one burst of calls can land in a quiet or a
busy moment. So the calls are made in `rounds` separated rounds; each round times, for
every batch size in turn, `repeats` calls after `warmup` untimed ones, under
`torch.inference_mode()` with the context's autocast (on CUDA the device is synchronised
only around each timed call). The percentiles pool every timed call; their confidence
intervals come from a two-level bootstrap that resamples rounds, then calls within each
round, so the spread between rounds is in the interval. When the rounds disagree (the
largest round median is more than `tolerance` above the smallest), the timing is flagged
as unstable, which caps the check at `warn`: the numbers describe the machine's load as
much as the model.

Headline: `p95_ms` and `p50_ms` are per-call latencies at the smallest batch size (batch
size 1 by default: the latency a single request sees); `throughput` is samples per second
at the largest batch size (median time). `params` counts parameters and `size_mb` is the
size of the weights serialized as safetensors (10^6 bytes), i.e. their size on disk.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field, field_validator

from audit.check import Check, Flag, Measurement, Metric, Params, chart, higher, lower, table, text
from audit.registry import register_check
from audit.stats import from_draws

_RESAMPLES = 2000


class LatencyParams(Params):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    warmup: int = Field(5, ge=0, le=1000, description="untimed calls before each round's timed ones")
    repeats: int = Field(20, ge=3, le=10_000, description="timed calls per batch size in each round")
    rounds: int = Field(5, ge=2, le=100, description="separated timing rounds")
    pause_s: float = Field(0.05, ge=0.0, le=10.0, description="pause between rounds")
    tolerance: float = Field(0.25, gt=0.0, le=10.0,
                             description="largest relative gap between round medians before the timing is unstable")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be at least 1")
        return sorted(set(v))


def rounds_quantile(rounds: np.ndarray, q: float, *, confidence: float, rng: np.random.Generator,
                    n_resamples: int = _RESAMPLES) -> Metric:
    """The q-th percentile of all timings (rounds x calls) with a two-level bootstrap CI:
    rounds resampled with replacement, then calls within each chosen round."""
    rounds = np.asarray(rounds, dtype=np.float64)
    r, c = rounds.shape
    pick_r = rng.integers(0, r, size=(n_resamples, r))
    pick_c = rng.integers(0, c, size=(n_resamples, r, c))
    sample = rounds[pick_r[:, :, None], pick_c].reshape(n_resamples, r * c)
    draws = np.percentile(sample, q, axis=1)
    return from_draws(float(np.percentile(rounds, q)), draws, confidence, n=r * c, bounds=(0.0, None))


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
        inputs = {bs: torch.as_tensor(ds.x[np.arange(bs) % len(ds)]).to(device) for bs in params.batch_sizes}
        timings = {bs: np.empty((params.rounds, params.repeats)) for bs in params.batch_sizes}
        for r in range(params.rounds):
            if r and params.pause_s:
                time.sleep(params.pause_s)  # separate the rounds in time
            for bs, x in inputs.items():
                # the same precision as the audit's own inference (bf16 autocast on CUDA)
                timings[bs][r] = ctx.time_calls(None, x, warmup=params.warmup, repeats=params.repeats) * 1000.0
        rows, per_bs, flags = [], {}, []
        for bs, ms in timings.items():
            rng = ctx.rng(f"{self.name}:{params.data}:{bs}")
            p50 = rounds_quantile(ms, 50, confidence=params.confidence, rng=rng)
            p95 = rounds_quantile(ms, 95, confidence=params.confidence, rng=rng)
            # throughput = bs / median seconds; the CI maps the median's CI (monotone)
            thr = Metric(bs * 1000.0 / p50.value,
                         None if p50.ci is None else (bs * 1000.0 / p50.ci[1], bs * 1000.0 / p50.ci[0]), n=p50.n)
            medians = np.median(ms, axis=1)
            spread = float(medians.max() / medians.min() - 1.0) if medians.min() > 0 else float("inf")
            if spread > params.tolerance:
                flags.append(Flag(f"unstable timing at batch size {bs}",
                                  f"round medians range from {medians.min():.4g} to {medians.max():.4g} ms "
                                  f"({spread:.0%} apart, tolerance {params.tolerance:.0%}): the machine's load "
                                  "changed during the measurement; rerun on a quiet machine"))
            per_bs[bs] = (p50, p95, thr, ms)
            rows.append([bs, _cell(p50), _cell(p95), round(float(ms.mean()), 4), round(float(ms.min()), 4),
                         _cell(thr, 1), f"{medians.min():.4g}-{medians.max():.4g}", ms.size])
        small, large = min(per_bs), max(per_bs)
        n_params = int(sum(p.numel() for p in module.parameters()))
        size_mb = weights_size_bytes(module) / 1e6
        metrics = {"p95_ms": per_bs[small][1], "p50_ms": per_bs[small][0], "throughput": per_bs[large][2],
                   "params": Metric(float(n_params)), "size_mb": Metric(size_mb)}
        evidence = [
            table("Latency per batch size", ["batch size", "p50 ms", "p95 ms", "mean ms", "min ms",
                                             "throughput (samples/s)", "round medians (ms)", "timed calls"], rows,
                  note=f"{params.rounds} rounds x {params.repeats} timed calls per batch size, {params.warmup} "
                       "warm-up calls before each; CIs: two-level bootstrap over rounds, then calls."),
            text("Timing set-up",
                 f"device {device}"
                 + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                    f", {torch.get_num_threads()} intra-op threads")
                 + f"; precision {'bf16 autocast' if device.type == 'cuda' else 'float32'}; "
                 f"input {tuple(ds.x.shape[1:])} {ds.x.dtype}; {n_params:,} parameters, {size_mb:.3f} MB."),
        ]
        evidence.append(chart("bar", "Latency per batch size", _bars(per_bs),
                              caption="Median and 95th-percentile call latency with bootstrap CIs."))
        return Measurement(metrics=metrics, evidence=evidence, flags=flags)


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
