"""Are the attributions faithful to the model?

* Deletion curves: remove units (image patches, tabular feature groups) in attribution
  order, replacing them by the baseline, and compare how fast the explained class's
  probability falls with removal in random orders. Per sample: the area between the two
  curves, each normalised by the sample's starting probability; > 0 = better than random.
* Completeness (integrated gradients' axiom): the attributions of a sample sum to
  f(x)_t - f(baseline)_t; a large gap means too few integration steps.

Every model pass is a counted Context call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.check import Flag
from audit.context import Context, logits_to_proba
from audit.dataset import Dataset
from audit.stats import resample_weights
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.units import deletion_units
from checks.explain.explainers import class_logits

# Flag IG when the completeness gap (sum of attributions vs output difference) is this large.
COMPLETENESS_FLAG = 0.05
_DELETION_ROWS_PER_CHUNK = 2**16 * 64  # perturbed input elements held at once (~16 MB float32)


@dataclass
class DeletionCurves:
    per_sample: np.ndarray   # (n,) mean area under the random-order curves - area in attribution order
    frac: np.ndarray         # (steps + 1,) fraction of units removed
    # "attribution order" / "random order" -> (mean curve, band low, band high)
    bands: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    unit_word: str
    n: int


def baseline_logits(ctx: Context, baseline: np.ndarray, chunk: int) -> np.ndarray:
    """Float32 logits (n, K) of the baseline rows, from one counted row when every row is
    the same baseline (zeros, the mean), else from each row (blurred)."""
    n = len(baseline)
    if n and (baseline == baseline[:1]).all():
        one = ctx.run_model(None, baseline[:1], what="Baseline outputs", precision="float32")
        return np.repeat(one, n, axis=0)
    return ctx.run_model(None, baseline, what="Baseline outputs", batch_size=chunk, precision="float32")


def deletion_curves(ctx: Context, params: AttributionParams, ds: Dataset, x: np.ndarray, baseline: np.ndarray,
                    attr: np.ndarray, target: np.ndarray, p0: np.ndarray, key: str,
                    f_base: np.ndarray | None = None) -> DeletionCurves:
    """Deletion curves (attribution order vs random orders), every pass through ctx.infer.
    With `f_base` (the baseline rows' logits), the last step (every unit removed: the
    baseline itself, whatever the order) is read from it instead of run again."""
    n = len(x)
    index, n_units, unit_word = deletion_units(ds, params.deletion_patch)
    flat = attr.reshape(n, -1).astype(np.float64)
    scores = np.zeros((n, n_units))
    np.add.at(scores.T, index, flat.T)
    steps = min(params.deletion_steps, n_units)
    counts = np.round(np.linspace(0, n_units, steps + 1)).astype(int)
    frac = counts / n_units
    # rank[i, u] = position of unit u in sample i's removal order (0 = removed first)
    order_rank = [np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)]
    r = ctx.rng(f"{key}:deletion")
    order_rank += [r.permuted(np.tile(np.arange(n_units), (n, 1)), axis=1)
                   for _ in range(params.deletion_random_orders)]
    xf, bf = x.reshape(n, -1), baseline.reshape(n, -1)
    curves = np.ones((len(order_rank), n, steps + 1))
    known_last = f_base is not None and counts[-1] == n_units
    run = counts[1:-1] if known_last else counts[1:]  # removal counts that need a model pass
    if known_last:
        p_last = logits_to_proba(f_base)[np.arange(n), target]
        curves[:, :, -1] = (p_last / np.maximum(p0, 1e-12))[None, :]
    per_chunk = max(1, _DELETION_ROWS_PER_CHUNK // max(1, max(len(run), 1) * len(order_rank) * xf.shape[1]))
    for s in range(0, n if len(run) else 0, per_chunk):
        sl = slice(s, min(n, s + per_chunk))
        m = sl.stop - sl.start
        batch = []
        for rank in order_rank:
            removed = rank[sl][:, None, :] < run[None, :, None]               # (m, steps, units)
            mask = removed[:, :, index]                                        # (m, steps, elements)
            batch.append(np.where(mask, bf[sl][:, None], xf[sl][:, None]))
        pert = np.stack(batch).reshape((-1,) + x.shape[1:]).astype(np.float32)
        # removing a patch that already equals the baseline leaves the input unchanged: not run again
        proba = logits_to_proba(ctx.infer_once(pert, what="Deletion curves"))
        t = np.broadcast_to(target[sl][None, :, None], (len(order_rank), m, len(run))).ravel()
        pt = proba[np.arange(len(t)), t].reshape(len(order_rank), m, len(run))
        curves[:, sl, 1:1 + len(run)] = pt / np.maximum(p0[sl], 1e-12)[None, :, None]
    area = np.trapezoid(curves, frac, axis=-1)                                 # (orders, n)
    per_sample = area[1:].mean(axis=0) - area[0]
    # Mean curves with a bootstrap band over samples, for the figure.
    bands = {}
    rb = ctx.rng(f"{key}:ci:deletion-curves")
    for label, c in (("attribution order", curves[0]), ("random order", curves[1:].mean(axis=0))):
        draws = np.concatenate([w @ c / n for w in resample_weights(n, 1000, rb)])
        lo = np.quantile(draws, (1 - params.confidence) / 2, axis=0)
        hi = np.quantile(draws, 1 - (1 - params.confidence) / 2, axis=0)
        bands[label] = (c.mean(axis=0), lo, hi)
    return DeletionCurves(per_sample, frac, bands, unit_word, n)


def completeness_gap(ctx: Context, x: np.ndarray, baseline: np.ndarray, attr: np.ndarray, target: np.ndarray,
                     chunk: int, f_base: np.ndarray | None = None, fx: np.ndarray | None = None) -> np.ndarray:
    """|sum(attr) - (f(x)_t - f(b)_t)| / |f(x)_t - f(b)_t| per sample, f = the logits (two
    for a single-logit model, as explained), in float32. `fx` and `f_base` are the logits
    already computed (the cached predictions when they are float32, the baseline's);
    what is missing is a counted pass through the Context, in the explained chunks."""
    rows = np.arange(len(x))

    def run(v: np.ndarray) -> np.ndarray:
        return ctx.run_model(None, v, what="Completeness check", batch_size=chunk, precision="float32")

    fx = class_logits(run(x) if fx is None else fx)
    fb = class_logits(run(baseline) if f_base is None else f_base)
    diff = fx[rows, target] - fb[rows, target]
    total = attr.reshape(len(x), -1).astype(np.float64).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(total - diff) / np.abs(diff)


def completeness_report(gap: np.ndarray, n_steps: int) -> tuple[str, Flag | None]:
    """A note on the gap, and the `ig_not_converged` flag when its median is too large."""
    med = float(np.nanmedian(gap))
    note = (f"Integrated-gradients completeness: median |sum of attributions - (f(x) - f(baseline))| "
            f"is {100 * med:.2f}% of |f(x) - f(baseline)| (max {100 * float(np.nanmax(gap)):.2f}%) "
            f"with n_steps={n_steps}.")
    if not med > COMPLETENESS_FLAG:  # NaN (every gap undefined) raises no flag
        return note, None
    return note, Flag("ig_not_converged", f"median completeness gap {100 * med:.1f}% > "
                                          f"{100 * COMPLETENESS_FLAG:.0f}%: raise n_steps")
