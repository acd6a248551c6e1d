"""Sensitive attribution share (tabular): the share of each explained sample's total
|attribution| that falls on sensitive features, i.e. how much the model leans on them
directly, even when group rates look fine."""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.check import Metric, cell, table
from audit.context import Context
from audit.dataset import Dataset
from audit.stats import bootstrap_mean
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.units import Units


def sensitive_columns(ds: Dataset, attr: str) -> list[int] | None:
    """Input columns encoding `attr`; [] when it is a sensitive attribute that is not a
    model input; None when the dataset knows no such name."""
    if ds.feature_groups and attr in ds.feature_groups:
        return sorted(int(c) for c in ds.feature_groups[attr])
    names = ds.feature_names or []
    if attr in names:
        return [names.index(attr)]
    cols = [i for i, n in enumerate(names) if n.startswith((f"{attr}=", f"{attr}_"))]
    if cols:
        return cols
    return [] if attr in ds.sensitive else None


def _share(mass: np.ndarray, total: np.ndarray, units: list[int]) -> np.ndarray:
    return np.where(total > 0, mass[:, units].sum(axis=1) / np.where(total > 0, total, 1), np.nan)


def sensitive_share(ctx: Context, params: AttributionParams, ds: Dataset, units: Units, u: np.ndarray,
                    key: str) -> tuple[Metric, dict[str, Any]]:
    """The pooled share over every listed feature (the metric), and a table per feature."""
    mass = np.abs(u)
    total = mass.sum(axis=1)
    rows: list[list[Any]] = []
    all_units: set[int] = set()
    absent: list[str] = []
    for attr in params.sensitive:
        cols = sensitive_columns(ds, attr) or []
        us = sorted({int(units.index[c]) for c in cols})
        all_units |= set(us)
        if not cols:
            absent.append(attr)
        share = _share(mass, total, us)
        ok = np.isfinite(share)
        m = bootstrap_mean(share[ok], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:sensitive:{attr}"))
        rows.append([attr, ", ".join((ds.feature_names or [])[c] if ds.feature_names else str(c) for c in cols)
                     or "(not a model input)", cell(m.value, m.ci)])
    share = _share(mass, total, sorted(all_units))
    ok = np.isfinite(share)
    metric = bootstrap_mean(share[ok], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:sensitive"))
    note = ("Per explained sample: |attribution| of the feature (one-hot columns summed first) over the "
            "total |attribution|; the metric pools all listed features.")
    if absent:
        note += f" Not model inputs (share 0 by construction; proxies are not measured): {', '.join(absent)}."
    if (~ok).any():
        note += f" {int((~ok).sum())} samples with all-zero attributions left out."
    return metric, table("Attribution share of sensitive features",
                         ["feature", "input columns", "share of |attribution|"], rows, note=note)
