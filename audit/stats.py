"""Bootstrap confidence intervals without per-sample Python loops.

Two resampling schemes, both seeded by the caller's Generator:

* count bootstrap: a metric that is a function of a table of counts (a confusion
  matrix, group x label x prediction cells) is resampled as one multinomial draw
  over the cells. Cost is independent of N, so 10,000 resamples are the default.
* weight bootstrap: a metric that needs per-sample values (log loss, ROC AUC, ECE)
  is evaluated under multinomial resampling weights, in chunks of resamples, with
  vectorised statistics. Cost is O(resamples x N); 2,000 resamples by default.

Intervals are percentile intervals; resamples where the statistic is undefined
(e.g. a class absent from the resample) are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from audit.check import Metric

COUNT_RESAMPLES = 10_000
WEIGHT_RESAMPLES = 2_000
_CHUNK_ELEMENTS = 4_000_000  # weights matrix elements per chunk (~16 MB float32)


def percentile_ci(draws: np.ndarray, confidence: float) -> tuple[float, float] | None:
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size < 2:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def resample_counts(counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, *counts.shape) multinomial resamples of a count table, same total."""
    counts = np.asarray(counts)
    flat = counts.ravel().astype(np.float64)
    total = int(round(flat.sum()))
    if total == 0:
        return np.zeros((n_resamples,) + counts.shape, dtype=np.int64)
    # Empty cells stay empty in every resample: draw over the non-empty ones only
    # (a confusion matrix is mostly zeros off the diagonal; numpy's cost is per category).
    nz = np.flatnonzero(flat)
    draws = np.zeros((n_resamples, flat.size), dtype=np.int64)
    draws[:, nz] = rng.multinomial(total, flat[nz] / flat[nz].sum(), size=n_resamples)
    return draws.reshape((n_resamples,) + counts.shape)


def bootstrap_counts(
    counts: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    confidence: float,
    rng: np.random.Generator,
    n_resamples: int = COUNT_RESAMPLES,
) -> Metric:
    """`statistic` maps a batch of count tables (B, *shape) to (B,) values."""
    counts = np.asarray(counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(counts[None].astype(np.float64))[0])
        draws = statistic(resample_counts(counts, n_resamples, rng).astype(np.float64))
    return Metric(value, percentile_ci(draws, confidence))


def resample_weights(n: int, n_resamples: int, rng: np.random.Generator,
                     strata: Sequence[int] | None = None):
    """Yield chunks of (b, n) float32 multinomial resampling weights (each row sums to n).

    With `strata` (sizes adding up to n, rows ordered by stratum), each stratum is
    resampled on its own, so every resample keeps the design's group sizes (e.g. a
    balanced members / non-members sample)."""
    sizes = list(strata) if strata is not None else [n]
    if sum(sizes) != n or min(sizes) < 1:
        raise ValueError(f"strata sizes {sizes} must be positive and add up to n={n}")
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        yield np.concatenate([_uniform_counts(m, b, rng) for m in sizes], axis=1).astype(np.float32)
        done += b


def _uniform_counts(n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    # Counts of n uniform index draws are a multinomial(n, 1/n) row; bincount is ~6x
    # faster than rng.multinomial, which draws one binomial per category.
    idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


def bootstrap_weighted(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    confidence: float,
    rng: np.random.Generator,
    n_resamples: int = WEIGHT_RESAMPLES,
) -> Metric:
    """`statistic` maps weights (B, n) to (B,) values; the point estimate uses unit weights."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(statistic(np.ones((1, n), dtype=np.float32))[0])
        draws = np.concatenate([statistic(w) for w in resample_weights(n, n_resamples, rng)])
    return Metric(value, percentile_ci(draws, confidence))


def bootstrap_mean(values: np.ndarray, *, confidence: float, rng: np.random.Generator,
                   n_resamples: int = WEIGHT_RESAMPLES) -> Metric:
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    return bootstrap_weighted(lambda w: (w @ values) / n, n, confidence=confidence, rng=rng,
                              n_resamples=n_resamples)


# ---- metrics as functions of confusion matrices, batched over a leading axis -----------
# cm[b, true, pred]; definitions follow scikit-learn (zero_division=0).

def cm_accuracy(cm: np.ndarray) -> np.ndarray:
    return np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))


def cm_recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall (B, K); NaN where the class has no true samples."""
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    return diag / cm.sum(axis=-1)


def cm_precision(cm: np.ndarray) -> np.ndarray:
    """Per-class precision (B, K); 0 where the class was never predicted (sklearn's zero_division=0)."""
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    pred = cm.sum(axis=-2)
    return np.where(pred > 0, diag / np.where(pred > 0, pred, 1), 0.0)


def cm_f1(cm: np.ndarray) -> np.ndarray:
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)
    return np.where(denom > 0, 2 * diag / np.where(denom > 0, denom, 1), 0.0)


def _present(cm: np.ndarray) -> np.ndarray:
    """Classes present in y_true or y_pred: sklearn's macro averages run over these labels."""
    return (cm.sum(axis=-1) + cm.sum(axis=-2)) > 0


def cm_balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    rec = cm_recall(cm)
    return np.nanmean(np.where(cm.sum(axis=-1) > 0, rec, np.nan), axis=-1)


def _macro(per_class: np.ndarray, cm: np.ndarray) -> np.ndarray:
    present = _present(cm)
    return np.where(present, np.nan_to_num(per_class), 0.0).sum(axis=-1) / present.sum(axis=-1)


def cm_precision_macro(cm: np.ndarray) -> np.ndarray:
    return _macro(cm_precision(cm), cm)


def cm_recall_macro(cm: np.ndarray) -> np.ndarray:
    return _macro(cm_recall(cm), cm)


def cm_f1_macro(cm: np.ndarray) -> np.ndarray:
    return _macro(cm_f1(cm), cm)


def cm_worst_class_recall(cm: np.ndarray) -> np.ndarray:
    rec = np.where(cm.sum(axis=-1) > 0, cm_recall(cm), np.nan)
    return np.nanmin(rec, axis=-1)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
