"""Chart evidence of explain.attribution. Each chart's `data` are the keyword arguments of
the report's renderer of that kind, as JSON: `line` (reports.plots.line_chart_svg),
`image_grid` (reports.plots.image_grid_svg), `importance_bars` and `beeswarm`
(reports.plots_explain). Arrays become nested lists of floats rounded to 4 significant
digits (NaN -> null): the report draws them, and full precision would swell results.json.
Nothing here imports `reports`."""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.check import chart
from audit.dataset import Dataset
from audit.stats import resample_weights
from checks.explain.attribution.faithfulness import DeletionCurves
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.randomization import Cascade
from checks.explain.attribution.units import Units


def json_array(a: Any, digits: int = 4) -> Any:
    """An array (or scalar) as nested lists of floats with `digits` significant digits; NaN as None."""
    def rnd(v: Any) -> Any:
        if isinstance(v, list):
            return [rnd(w) for w in v]
        return float(f"{v:.{digits}g}") if np.isfinite(v) else None

    return rnd(np.asarray(a, dtype=np.float64).tolist())


def deletion_chart(curves: DeletionCurves, confidence: float) -> dict[str, Any]:
    series = {label: [json_array(v) for v in (curves.frac, *band)] for label, band in curves.bands.items()}
    return chart("line", "Deletion curves", {
        "series": series, "xlabel": f"fraction of {curves.unit_word} removed (replaced by the baseline)",
        "ylabel": "explained-class probability / initial", "title": "Deletion curves"},
        caption=f"Mean over {curves.n} samples with a {int(100 * confidence)}% bootstrap band. "
                f"Faster fall in attribution order than in random order means faithful attributions.")


def cascade_chart(c: Cascade) -> dict[str, Any]:
    xs, ys, los, his = c.curve
    return chart("line", "Model-parameter randomization cascade", {
        "series": {"trained vs randomised": [list(xs), json_array(ys), json_array(los), json_array(his)]},
        "xlabel": f"layers re-initialised, from the top (of {c.n_layers})", "ylabel": "Spearman similarity",
        "title": "Randomization cascade", "ylim": [-1.05, 1.05]},
        caption="An explanation that depends on the learned weights falls towards 0 as layers are "
                "re-initialised; one that stays near 1 ignores the model.")


def attribution_maps(ds: Dataset, params: AttributionParams, correct: np.ndarray, wrong: np.ndarray,
                     maps: dict[int, np.ndarray], pred: np.ndarray, proba: np.ndarray) -> list[dict[str, Any]]:
    """One grid (one layout pass): correctly classified samples first, then misclassified ones,
    each with its |attribution| heat map."""
    rows = np.concatenate([correct, wrong]).astype(int)
    if len(rows) == 0:
        return []
    titles = [f"{'✓' if k < len(correct) else '✗'} #{i} {ds.classes[ds.y[i]]}→{ds.classes[pred[i]]} "
              f"({proba[i, pred[i]]:.2f})" for k, i in enumerate(rows)]
    caption = ("Heat map: |attribution| towards the explained class, channels summed, scaled per image. "
               "✓ correctly classified, ✗ misclassified (true→predicted, probability).")
    if len(wrong) == 0:
        caption += f" No misclassified sample in dataset '{ds.name}'."
    return [chart("image_grid", "Attribution maps", {
        "images": [json_array(ds.x[i]) for i in rows], "titles": titles,
        "overlays": [json_array(maps[int(i)]) for i in rows],
        "ncols": max(len(correct), len(wrong), 1), "title": f"{params.method}: correct, then misclassified"},
        caption=caption)]


def importance_charts(params: AttributionParams, x: np.ndarray, u: np.ndarray, units: Units,
                      rng: np.random.Generator) -> list[dict[str, Any]]:
    """Tabular: global importance bars (mean |attribution| with bootstrap intervals) and a
    beeswarm of per-sample attributions, top 20 units."""
    g = np.abs(u)
    mean = g.mean(axis=0)
    draws = np.concatenate([w @ g / len(g) for w in resample_weights(len(g), 1000, rng)])
    lo = np.quantile(draws, (1 - params.confidence) / 2, axis=0)
    hi = np.quantile(draws, 1 - (1 - params.confidence) / 2, axis=0)
    order = np.argsort(-mean, kind="stable")[:20]
    names = [units.names[i] for i in order]
    values = units.values(x)
    return [
        chart("importance_bars", "Global feature importance", {
            "names": names, "values": json_array(mean[order]), "lo": json_array(lo[order]),
            "hi": json_array(hi[order]), "title": f"{params.method}: mean |attribution|"},
            caption=f"Mean |attribution| over {len(x)} samples (one-hot groups summed), "
                    f"{int(100 * params.confidence)}% bootstrap intervals; top {len(order)} features."),
        chart("beeswarm", "Attribution summary", {
            "names": names, "attributions": json_array(u[:, order]), "values": json_array(values[:, order]),
            "title": f"{params.method}: per-sample attributions"},
            caption="One dot per explained sample; colour = the feature's value (numeric features; grey for "
                    "one-hot groups); right of 0 pushes towards the explained class."),
    ]
