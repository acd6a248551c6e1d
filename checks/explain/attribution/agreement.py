"""Rank agreement between attributions: Spearman correlation row by row, and the agreement
of two methods' global importances (mean |attribution| per unit)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from audit.check import Metric, table
from audit.stats import bootstrap_weighted
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.units import Units


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of a with the same row of b (NaN if constant)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def method_agreement(params: AttributionParams, units: Units, u1: np.ndarray, u2: np.ndarray,
                     rng: np.random.Generator) -> tuple[Metric, dict[str, Any]]:
    """Spearman correlation of the two methods' global importances, with a weight-bootstrap
    CI over the explained samples, and the table of the top units."""
    a1, a2 = np.abs(u1), np.abs(u2)
    n = len(a1)

    def stat(w: np.ndarray) -> np.ndarray:
        return spearman_rows(w @ a1 / n, w @ a2 / n)

    metric = bootstrap_weighted(stat, n, confidence=params.confidence, rng=rng)
    g1, g2 = a1.mean(axis=0), a2.mean(axis=0)
    top = np.argsort(-g1, kind="stable")[:25]
    r1, r2 = rankdata(-g1), rankdata(-g2)
    rows = [[units.names[i], float(g1[i]), int(r1[i]), float(g2[i]), int(r2[i])] for i in top]
    ci = f" [{metric.ci[0]:.3f}, {metric.ci[1]:.3f}]" if metric.ci else ""
    ev = table(f"Global importance: {params.method} vs {params.compare_with}",
               ["feature", f"{params.method} mean |attr|", "rank", f"{params.compare_with} mean |attr|", "rank"],
               rows, note=f"Spearman rank correlation of the two importance vectors over {len(g1)} features: "
                          f"{metric.value:.3f}" + ci + (" (top 25 by the first method shown)" if len(g1) > 25 else ""))
    return metric, ev
