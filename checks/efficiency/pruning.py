"""efficiency.pruning: how much of the model can be pruned before accuracy drops.

For each sparsity of the sweep (default 10% to 90%), a fresh copy of the model is pruned
with global unstructured L1 pruning (`torch.nn.utils.prune.global_unstructured` with
`L1Unstructured`): the given share of the weights with the smallest magnitude, ranked
across all prunable tensors at once, is set to zero. Prunable tensors: the weights of
`nn.Linear` and `nn.Conv1d/2d/3d` layers and the input projections of
`nn.MultiheadAttention`; biases, normalisation layers and embeddings are left alone.
Each pruned copy predicts the check's dataset through the context, on the audit's device
and precision, and is compared with the audited model's cached predictions on the same
rows.

Per level: accuracy with its exact interval and the accuracy drop (dense minus pruned)
with a paired count-bootstrap interval. All levels are resampled together, as cells of
(dense correct, pruned correct at each level), so the curve's intervals are joint.

Headline: `max_sparsity_within_tolerance`, the largest sparsity of the sweep whose
accuracy drop's upper confidence bound is at most `tolerance` (0 when none is). Its
interval applies the same rule to each bootstrap resample, with each level's interval
half-width held at its observed value, and takes the percentile interval of the
resulting sparsities.

`structured: true` adds a second curve: per layer, L1-norm structured pruning of output
channels (`prune.ln_structured`, n=1, dim=0) of every prunable layer but the output layer.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn.utils import prune

from audit.check import Check, Measurement, Params, cell, chart, higher, table, text
from audit.context import logits_to_proba
from audit.errors import SkipCheck
from audit.registry import register_check
from audit.stats import from_draws, proportion, resample_counts

_RESAMPLES = 2000
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class PruningParams(Params):
    sparsities: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)],
                                    min_length=1, description="shares of the prunable weights set to zero")
    tolerance: float = Field(0.01, ge=0.0, lt=1.0, description="largest acceptable accuracy drop")
    n_samples: int | None = Field(None, ge=10, description="evaluate on this many rows (seeded subset); all if unset")
    structured: bool = Field(False, description="also sweep L1 structured (output-channel) pruning per layer")

    @field_validator("sparsities")
    @classmethod
    def _in_range(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < s < 1.0 for s in v):
            raise ValueError("sparsities must lie strictly between 0 and 1")
        return sorted(set(v))


def prunable(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every weight tensor global pruning ranks."""
    out = []
    for m in module.modules():
        if isinstance(m, (nn.Linear, *_CONV)) and isinstance(getattr(m, "weight", None), nn.Parameter):
            out.append((m, "weight"))
        elif isinstance(m, nn.MultiheadAttention) and isinstance(m.in_proj_weight, nn.Parameter):
            out.append((m, "in_proj_weight"))
    return out


def pruned_copy(module: nn.Module, sparsity: float) -> tuple[nn.Module, float]:
    """A copy of `module` with global unstructured L1 pruning at `sparsity`, made permanent;
    returns the copy and the share of prunable weights that are zero."""
    twin = copy.deepcopy(module)
    params = prunable(twin)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for m, name in params:
        prune.remove(m, name)
    return twin, _zero_share(params)


def channel_pruned_copy(module: nn.Module, sparsity: float, head: nn.Module | None) -> tuple[nn.Module, float]:
    """A copy with `sparsity` of the output channels (rows) of each prunable layer zeroed by
    L1 norm, except the output layer (its rows are the classes)."""
    twin = copy.deepcopy(module)
    twin_head = None
    if head is not None:
        twin_head = dict(zip(module.modules(), twin.modules())).get(head)
    params = [(m, n) for m, n in prunable(twin) if n == "weight" and m is not twin_head]
    for m, name in params:
        prune.ln_structured(m, name, amount=float(sparsity), n=1, dim=0)
        prune.remove(m, name)
    return twin, _zero_share(params)


def _zero_share(params: list[tuple[nn.Module, str]]) -> float:
    total = sum(getattr(m, n).numel() for m, n in params)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    return zeros / total if total else 0.0


def output_layer(module: nn.Module) -> nn.Module | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def sweep_draws(correct: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, levels) accuracy drops (dense minus level), from one joint count
    bootstrap of the cells of (dense correct, level 1 correct, ..., level L correct):
    every cell of the table for up to 10 columns, the observed patterns beyond."""
    n, cols = correct.shape
    code = correct.astype(np.int64) @ (1 << np.arange(cols))
    if cols <= 10:
        patterns = np.arange(1 << cols)
        counts = np.bincount(code, minlength=1 << cols)
    else:
        patterns, counts = np.unique(code, return_counts=True)
    draws = resample_counts(counts, n_resamples, rng)  # (B, cells)
    bits = ((patterns[:, None] >> np.arange(cols)) & 1).astype(np.float64)  # (cells, cols)
    acc = draws @ bits / n  # (B, cols)
    return acc[:, :1] - acc[:, 1:]


def within_tolerance(drop_hi: np.ndarray, sparsities: np.ndarray, tolerance: float) -> np.ndarray:
    """Largest sparsity whose drop upper bound is within tolerance, per row of (.., levels)."""
    ok = drop_hi <= tolerance + 1e-12
    best = np.where(ok, sparsities, 0.0)
    return best.max(axis=-1)


@register_check
class Pruning(Check):
    name = "efficiency.pruning"
    version = 1
    area = "deployment"
    requires = ("data",)
    kinds = ("image", "tabular", "text")
    Params = PruningParams
    metrics = {
        "max_sparsity_within_tolerance": higher(
            "Largest swept sparsity (global unstructured L1 pruning) whose accuracy drop's upper confidence "
            "bound stays within the tolerance.", bounds=(0.0, 1.0)),
    }
    summary = "Global unstructured L1 pruning over a sparsity sweep: accuracy with CIs per level and the " \
              "largest sparsity within the accuracy tolerance."

    def run(self, ctx, params: PruningParams) -> Measurement:
        module = ctx.model.module
        if isinstance(module, torch.jit.ScriptModule):
            raise SkipCheck("a TorchScript model cannot be pruned with torch.nn.utils.prune")
        targets = prunable(module)
        if not targets:
            raise SkipCheck("the model has no Linear, Conv or MultiheadAttention weights to prune")
        ds = ctx.dataset(params.data)
        idx = ctx.sample_rows(params.data, params.n_samples, f"{self.name}:{params.data}:subset")
        x, y = ds.rows(idx), ds.y[idx]  # all rows of a streamed dataset stay streamed
        dense = ctx.predictions(params.data)[idx] == y
        levels = np.array(params.sparsities)

        def sweep(make) -> tuple[np.ndarray, list[float]]:
            cols, achieved = [], []
            for s in levels:
                twin, zero = make(s)
                logits = ctx.run_model(twin, x, what=f"Predicting with {s:.0%} of the weights pruned")
                cols.append(logits_to_proba(logits).argmax(axis=1) == y)
                achieved.append(zero)
                del twin
            return np.stack(cols, axis=1), achieved

        pruned, achieved = sweep(lambda s: pruned_copy(module, s))
        correct = np.concatenate([dense[:, None], pruned], axis=1)
        rng = ctx.rng(f"{self.name}:{params.data}")
        draws = sweep_draws(correct, _RESAMPLES, rng)
        conf = params.confidence
        drop_value = dense.mean() - pruned.mean(axis=0)
        drops = [from_draws(float(drop_value[i]), draws[:, i], conf, n=len(idx), bounds=(-1.0, 1.0))
                 for i in range(len(levels))]
        accs = [proportion(int(pruned[:, i].sum()), len(idx), conf) for i in range(len(levels))]
        hi = np.array([d.ci[1] if d.ci else d.value for d in drops])
        value = float(within_tolerance(hi, levels, params.tolerance))
        half = hi - drop_value  # each level's upper half-width, held fixed in the resamples
        best_draws = within_tolerance(draws + half, levels, params.tolerance)
        headline = from_draws(value, best_draws, conf, n=len(idx), bounds=(0.0, 1.0))

        structured = None
        if params.structured:
            head = output_layer(module)
            sp, s_achieved = sweep(lambda s: channel_pruned_copy(module, s, head))
            structured = ([proportion(int(sp[:, i].sum()), len(idx), conf) for i in range(len(levels))],
                          s_achieved)
        evidence = self._evidence(params, len(idx), levels, achieved, dense, accs, drops, value, headline,
                                  targets, structured)
        return Measurement(metrics={"max_sparsity_within_tolerance": headline}, evidence=evidence)

    @staticmethod
    def _evidence(params: PruningParams, n: int, levels: np.ndarray, achieved: list[float], dense: np.ndarray,
                  accs: list, drops: list, value: float, headline: Any, targets: list,
                  structured: tuple[list, list[float]] | None) -> list[dict[str, Any]]:
        acc0 = float(dense.mean())
        rows = []
        for i, s in enumerate(levels):
            d = drops[i]
            within = d.ci is not None and d.ci[1] <= params.tolerance + 1e-12
            row = [f"{s:.0%}", round(achieved[i], 4), cell(accs[i].value, accs[i].ci), cell(d.value, d.ci),
                   "yes" if within else "no"]
            if structured is not None:
                row.append(cell(structured[0][i].value, structured[0][i].ci))
            rows.append(row)
        columns = ["sparsity", "zero share", "accuracy", "accuracy drop", f"drop <= {params.tolerance:g}"]
        if structured is not None:
            columns.append("accuracy (channel pruning)")
        series: dict[str, Any] = {
            "global unstructured L1": [levels.tolist(), [a.value for a in accs], [a.ci[0] for a in accs],
                                       [a.ci[1] for a in accs]]}
        if structured is not None:
            series["L1 channel pruning"] = [levels.tolist(), [a.value for a in structured[0]],
                                            [a.ci[0] for a in structured[0]], [a.ci[1] for a in structured[0]]]
        n_params = sum(getattr(m, name).numel() for m, name in targets)
        ci = f" [{headline.ci[0]:.2f}, {headline.ci[1]:.2f}]" if headline.ci else ""
        return [
            table("Accuracy per sparsity", columns, rows,
                  note=f"{n:,} rows of '{params.data}'; dense accuracy {acc0:.4f}. Accuracy: exact interval; drop: "
                       f"dense minus pruned, paired joint count bootstrap. Largest sparsity within the tolerance "
                       f"{params.tolerance:g}: {value:.0%}{ci}."),
            chart("line", "Accuracy vs sparsity", {
                "series": series, "xlabel": "sparsity (share of prunable weights set to zero)",
                "ylabel": "accuracy", "title": "Pruning sweep", "threshold": acc0 - params.tolerance,
                "mark_x": value if value > 0 else None,
                "mark_label": f"max sparsity within tolerance ({value:.0%})" if value > 0 else None},
                caption=f"Accuracy with exact CIs per sparsity; dashed: dense accuracy minus the tolerance "
                        f"({acc0:.3f} - {params.tolerance:g})."),
            text("What was pruned",
                 f"{len(targets)} weight tensors with {n_params:,} parameters, ranked together by magnitude "
                 f"(torch.nn.utils.prune.global_unstructured, L1Unstructured); biases, normalisation layers and "
                 f"embeddings are not pruned. Pruned copies run on the audit's device and precision. Zeroed "
                 f"weights are not removed from memory: sparsity alone does not make a dense kernel faster."),
        ]
