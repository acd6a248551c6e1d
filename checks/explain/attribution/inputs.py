"""What explain.attribution explains: a seeded subset of the dataset, the class explained
per sample, the baseline, and the explainers' set-up (background rows, k-means summary)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from audit.context import Context
from audit.dataset import Dataset
from checks.explain import explainers as ex
from checks.explain.attribution.params import AttributionParams


@dataclass
class Explained:
    idx: np.ndarray        # sorted rows of the dataset
    x: np.ndarray          # (n, ...) float32 inputs
    target: np.ndarray     # (n,) explained class
    p0: np.ndarray         # (n,) probability of the explained class (the cached predictions)
    proba_all: np.ndarray  # (N, K) cached probabilities of the whole dataset
    pred_all: np.ndarray   # (N,) cached predictions


def select(ctx: Context, params: AttributionParams, ds: Dataset, key: str) -> Explained:
    n = min(params.n_samples, len(ds))
    idx = np.sort(ctx.rng(f"{key}:samples").choice(len(ds), n, replace=False))
    x = np.ascontiguousarray(ds.x[idx], dtype=np.float32)
    proba_all = ctx.probabilities(params.data)  # cached: no model call for predictions
    pred_all = proba_all.argmax(axis=1)
    target = targets(params, ds, idx, pred_all)
    return Explained(idx, x, target, proba_all[idx, target], proba_all, pred_all)


def cached_float32_logits(ctx: Context, name: str, rows: np.ndarray) -> np.ndarray | None:
    """The cached logits of `rows` when the audit's inference ran in float32 (no autocast:
    not on CUDA), so that a check needing f(x) in float32 reuses them; None otherwise."""
    if ctx.device.type == "cuda":
        return None
    return ctx.logits(name)[rows]


def targets(params: AttributionParams, ds: Dataset, rows: np.ndarray, pred_all: np.ndarray) -> np.ndarray:
    if params.target == "predicted":
        return pred_all[rows].astype(np.int64)
    if params.target == "true":
        return ds.y[rows].astype(np.int64)
    return np.full(len(rows), int(params.target), dtype=np.int64)


def misclassified(ctx: Context, key: str, ds: Dataset, e: Explained, want: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Misclassified rows to show in the maps figure: those of the explained subset, and a
    seeded few more from outside it (in no metric) when the subset holds fewer than `want`."""
    mis_in = e.idx[e.pred_all[e.idx] != ds.y[e.idx]]
    extra = np.setdiff1d(np.flatnonzero(e.pred_all != ds.y), e.idx)
    return mis_in, np.sort(ctx.rng(f"{key}:figure").permutation(extra)[:max(0, want - len(mis_in))])


def background_dataset(ctx: Context, ds: Dataset) -> Dataset:
    """Backgrounds and mean baselines describe the training data when it has the same shape."""
    if ctx.has_dataset("train") and ctx.dataset("train").x.shape[1:] == ds.x.shape[1:]:
        return ctx.dataset("train")
    return ds


def baseline(params: AttributionParams, x: np.ndarray, bg: Dataset, mean: np.ndarray | None = None) -> np.ndarray:
    """`mean`: the background's per-element mean (Context.input_stats: the same numbers
    whether the background streams or not); computed from `bg.x` when not given."""
    if params.baseline == "zeros":
        return np.zeros_like(x)
    if params.baseline == "mean":
        m = np.asarray(mean).reshape(x.shape[1:]) if mean is not None else bg.x.mean(axis=0, dtype=np.float64)
        return np.broadcast_to(m.astype(np.float32), x.shape).copy()
    sigma = params.blur_sigma or max(1.0, x.shape[-1] / 8)
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest").astype(np.float32)


def explain_setup(ctx: Context, params: AttributionParams, ds: Dataset, bg: Dataset, key: str) -> ex.ExplainSetup:
    """Built once per run (set-up cost): seeds, background rows on the device, k-means."""
    methods = [params.method] + ([params.compare_with] if params.compare_with else [])
    setup = ex.ExplainSetup(
        kind=ds.kind, n_steps=params.n_steps, n_evals=params.n_evals, internal_batch_size=ctx.batch_size,
        occlusion_window=(params.occlusion_window or max(1, ds.x.shape[-1] // 8)) if ds.kind == "image" else 1,
        seed=int(ctx.rng(f"{key}:explainer").integers(2**31)))
    if any(m in ex.USES_BACKGROUND for m in methods):
        rows = ctx.rng(f"{key}:background").choice(len(bg), min(params.n_background, len(bg)), replace=False)
        setup.background = torch.tensor(np.ascontiguousarray(bg.x[np.sort(rows)]), dtype=torch.float32,
                                        device=ctx.device)
    if any(m in ex.MODEL_AGNOSTIC for m in methods):
        setup.kmeans = ex.kmeans_background(_kmeans_rows(bg, setup.seed), params.n_background, setup.seed)
    return setup


def _kmeans_rows(bg: Dataset, seed: int, max_rows: int = 2000) -> np.ndarray:
    """The background rows k-means reads: a streamed background gives only the seeded
    subsample `kmeans_background` would draw from it in memory (the same rows, in the same
    order), never all its rows."""
    if not bg.lazy:
        return bg.x
    if len(bg) <= max_rows:
        return bg.take(np.arange(len(bg)))
    return bg.take(np.random.default_rng(seed).choice(len(bg), max_rows, replace=False))
