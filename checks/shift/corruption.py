"""`shift.corruption`: accuracy over a corruption x severity grid generated from the audited
data (ImageNet-C style; `audit.transforms` defines the corruptions and their severity
tables).

Every cell is the same seeded subsample under a corruption, so the cells are paired with
the clean predictions: one joint count bootstrap over the distinct per-sample patterns of
(clean correct, correct under each cell) resamples the whole grid at once, and the
metrics' CIs (a mean of ratios, a minimum over cells) come from the same resamples.
`mean_relative_accuracy` is corrupted / clean accuracy averaged over the grid (the
relative-robustness member of the mCE family, without a baseline model);
`worst_accuracy` is the lowest cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from audit.check import Check, Measurement, Params, cell, chart, higher, table
from audit.context import Context
from audit.dataset import Dataset
from audit.errors import DataError, SkipCheck, did_you_mean
from audit.registry import register_check
from audit.stats import COUNT_RESAMPLES, from_draws, percentile_ci, resample_counts

DEFAULT_CORRUPTIONS: dict[str, list[str]] = {
    "image": ["gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness",
              "pixelate", "rotate", "translate"],
    "tabular": ["feature_noise", "feature_scale"],
}
_CHUNK_ELEMENTS = 4_000_000


class CorruptionParams(Params):
    corruptions: list[str] | None = Field(None, min_length=1)  # default: all for the data kind
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    n_samples: int | None = Field(1000, ge=1)  # seeded subsample of the data; null = all rows

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, v: list[int]) -> list[int]:
        for s in v:
            if not 1 <= s <= 5:
                raise ValueError(f"severities must be in 1..5, got {s}")
        return sorted(set(v))


@register_check
class CorruptionShift(Check):
    name = "shift.corruption"
    version = 1
    requires = ("data",)
    kinds = ("image", "tabular")
    area = "robustness"
    metrics = {
        "mean_relative_accuracy": higher("Accuracy under corruption divided by clean accuracy, averaged over "
                                         "the corruption x severity grid.", bounds=(0.0, None)),
        "worst_accuracy": higher("Lowest accuracy of any corruption at any severity in the grid.",
                                 bounds=(0.0, 1.0)),
    }
    summary = "Accuracy under common corruptions at severities 1..5 (noise, blur, contrast, ...)."
    Params = CorruptionParams

    @classmethod
    def validate_params(cls, params: CorruptionParams, spec: Any) -> None:
        from audit.transforms import TRANSFORMS

        for name in params.corruptions or []:
            if name not in TRANSFORMS:
                raise ValueError(f"corruptions: unknown corruption '{name}'.{did_you_mean(name, TRANSFORMS)}")

    @classmethod
    def preflight(cls, ctx: Context, params: CorruptionParams) -> None:
        if params.corruptions is not None:  # named corruptions must fit the data kind
            _corruptions(ctx.dataset(params.data), params)

    def run(self, ctx: Context, params: CorruptionParams) -> Measurement:
        from audit.transforms import apply_transform

        ds = ctx.dataset(params.data)
        names = _corruptions(ds, params)
        tag = f"{self.name}:{params.data}"
        n = len(ds) if params.n_samples is None else min(params.n_samples, len(ds))
        idx = np.arange(len(ds)) if n == len(ds) else \
            np.sort(ctx.rng(f"{tag}:subsample").choice(len(ds), n, replace=False))
        if ds.lazy and params.n_samples is None:
            raise DataError(f"n_samples: null corrupts every row in memory, and dataset '{params.data}' is streamed "
                            f"({len(ds):,} rows): give n_samples (a seeded sample)")
        sub = Dataset(name=params.data, x=ds.take(idx), y=ds.y[idx], kind=ds.kind, classes=ds.classes,
                      feature_names=ds.feature_names, feature_groups=ds.feature_groups,
                      continuous=ds.continuous, meta={"from": params.data})
        clean_correct = ctx.predictions(params.data)[idx] == sub.y

        cells = [(c, s) for c in names for s in params.severities]
        correct = np.empty((n, len(cells)), dtype=bool)
        for j, (c, s) in enumerate(cells):
            def make(c: str = c, s: int = s) -> np.ndarray:
                return apply_transform(sub, c, s, ctx.rng(f"{tag}:{c}:{s}")).x

            logits = ctx.cached_logits(f"corruption:{params.data}:{c}:{s}:{n}", make,
                                       label=f"Corruptions of '{params.data}'")
            correct[:, j] = _predict(logits) == sub.y

        # Column 0: clean; columns 1..: the grid cells.
        draws = _joint_accuracy_draws(np.column_stack([clean_correct, correct]), ctx.rng(f"{tag}:bootstrap"))
        conf = params.confidence
        clean_acc = float(clean_correct.mean())
        acc = correct.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_draws = (draws[:, 1:] / draws[:, :1]).mean(axis=1)
            rel = float(np.mean(acc / clean_acc)) if clean_acc > 0 else float("nan")
        worst_j = int(np.argmin(acc))
        metrics = {
            "mean_relative_accuracy": from_draws(rel, rel_draws, conf, n=n),
            "worst_accuracy": from_draws(float(acc[worst_j]), draws[:, 1:].min(axis=1), conf, n=n, bounds=(0.0, 1.0)),
        }
        cell_ci = {cells[j]: percentile_ci(draws[:, j + 1], conf) for j in range(len(cells))}
        clean_ci = percentile_ci(draws[:, 0], conf)
        evidence = self._evidence(params, ds, names, cells, acc, cell_ci, clean_acc, clean_ci, n, cells[worst_j])
        return Measurement(metrics=metrics, evidence=evidence)

    @staticmethod
    def _evidence(params: CorruptionParams, ds: Dataset, names: list[str], cells: list[tuple[str, int]],
                  acc: np.ndarray, cell_ci: dict[tuple[str, int], Any], clean_acc: float, clean_ci: Any,
                  n: int, worst: tuple[str, int]) -> list[dict[str, Any]]:
        from audit.transforms import TRANSFORMS

        by = {cells[j]: float(acc[j]) for j in range(len(cells))}
        sev = params.severities
        curves = {c: [by[(c, s)] for s in sev] for c in names}
        rows = []
        for c in names:
            vals = [by[(c, s)] for s in sev]
            rows.append([c, *[cell(by[(c, s)], cell_ci[(c, s)]) for s in sev],
                         float(np.mean(vals) / clean_acc) if clean_acc > 0 else None])
        levels = [[c, TRANSFORMS[c].description, *[float(TRANSFORMS[c].levels[s - 1]) for s in sev]] for c in names]
        pct = int(round(100 * params.confidence))
        note = (f"{n} samples of '{params.data}' (seeded subsample), clean accuracy {clean_acc:.3f} "
                f"[{clean_ci[0]:.3f}, {clean_ci[1]:.3f}]; {pct}% CIs from a joint count bootstrap "
                f"({COUNT_RESAMPLES} resamples). Worst cell: {worst[0]} at severity {worst[1]}.") if clean_ci else \
            f"{n} samples of '{params.data}', clean accuracy {clean_acc:.3f}."
        return [
            chart("severity_curves", "Accuracy vs corruption severity",
                  {"severities": list(sev), "curves": curves, "clean": clean_acc},
                  caption=f"One line per corruption; the dashed line is clean accuracy ({clean_acc:.3f}). "
                          f"{n} samples of '{params.data}'."),
            table("Corruption grid: accuracy", ["corruption", *[f"severity {s}" for s in sev],
                                                "relative accuracy"], rows, note=note),
            table("Corruption parameters", ["corruption", "parameter", *[f"severity {s}" for s in sev]], levels),
        ]


def _corruptions(ds: Dataset, params: CorruptionParams) -> list[str]:
    """The grid's corruptions for this dataset; DataError when one does not apply."""
    from audit.transforms import TRANSFORMS, transforms_for

    if params.corruptions is None:
        names = [c for c in DEFAULT_CORRUPTIONS.get(ds.kind, []) if c in TRANSFORMS]
        if not names:
            raise SkipCheck(f"no corruptions are defined for {ds.kind} data")
        return names
    valid = transforms_for(ds.kind)
    for c in params.corruptions:
        if c not in valid:
            raise DataError(f"corruption '{c}' does not apply to {ds.kind} data (dataset '{params.data}'). "
                            f"Corruptions for {ds.kind} data: {', '.join(valid) or 'none'}.")
    return list(dict.fromkeys(params.corruptions))


def _predict(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=1)


def _joint_accuracy_draws(correct: np.ndarray, rng: np.random.Generator,
                          n_resamples: int = COUNT_RESAMPLES) -> np.ndarray:
    """(n_resamples, m) bootstrap accuracies of the m columns of a per-sample correctness
    matrix, resampling rows jointly: a multinomial over the distinct row patterns."""
    patterns, counts = np.unique(correct, axis=0, return_counts=True)
    patterns = patterns.astype(np.float64)
    n = correct.shape[0]
    out = np.empty((n_resamples, correct.shape[1]))
    chunk = max(1, _CHUNK_ELEMENTS // max(patterns.shape[0], correct.shape[1]))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        out[start:start + b] = resample_counts(counts, b, rng) @ patterns / n
    return out
