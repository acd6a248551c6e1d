"""data.integrity: leakage, duplicates, missing values and label balance of a dataset.

Rows (a table row, an image, a token sequence) are compared by their bytes: each row is
hashed (pandas' vectorised 64-bit hash over the row's 8-byte words), equal hashes are
then confirmed byte for byte, so a reported duplicate is an exact copy. Only the
features are compared; labels of copies are reported beside (conflicting labels).

Without a train set (or when the audited dataset is the train set itself) the two
metrics that need one, train_test_overlap and label_shift_pvalue, are omitted with a
note; the others are still measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import chi2_contingency

from audit import stats
from audit.check import Check, Measurement, Metric, Params, chart, higher, lower, table, text
from audit.context import Context
from audit.dataset import Dataset
from audit.registry import register_check


class IntegrityParams(Params):
    train: str = Field("train", description="the reference (training) dataset to compare against")
    resamples: int = Field(stats.COUNT_RESAMPLES, ge=200, le=200_000, description="count-bootstrap resamples")
    max_examples: int = Field(10, ge=0, le=1000, description="overlapping rows listed in the evidence")


def row_words(x: np.ndarray) -> np.ndarray:
    """(N, W) uint64 view of each row's bytes (zero-padded to a multiple of 8 bytes)."""
    n = x.shape[0]
    raw = np.ascontiguousarray(x).reshape(n, -1).view(np.uint8)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(raw).view(np.uint64)


def row_hashes(words: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row: pandas hashes each column and combines them row-wise."""
    if words.shape[1] == 0:
        return np.zeros(words.shape[0], np.uint64)
    return pd.util.hash_pandas_object(pd.DataFrame(words, copy=False), index=False).to_numpy()


@dataclass
class RowIndex:
    """Hashes of one dataset's rows, with the first row of each distinct hash."""

    words: np.ndarray
    hashes: np.ndarray
    unique: np.ndarray  # sorted distinct hashes
    first: np.ndarray  # index of the first row having each distinct hash
    inverse: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> RowIndex:
        words = row_words(x)
        h = row_hashes(words)
        unique, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        return cls(words, h, unique, first, inverse.ravel())

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows that are exact copies of an earlier row, and that earlier row's index."""
        rep = self.first[self.inverse]
        cand = np.flatnonzero(rep != np.arange(rep.size))
        same = (self.words[cand] == self.words[rep[cand]]).all(axis=1)  # rule out hash collisions
        return cand[same], rep[cand[same]]

    def find(self, other: RowIndex) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `other` that also occur here, and the index of their first copy here."""
        if other.words.shape[1] != self.words.shape[1]:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if not self.unique.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # look up other's sorted distinct hashes (sorted needles: a cache-friendly merge, ~4x
        # faster than searching each row's hash at 10^6 rows), then map back to its rows
        pos_u = np.clip(np.searchsorted(self.unique, other.unique), 0, self.unique.size - 1)
        hit_u = self.unique[pos_u] == other.unique
        hit = np.flatnonzero(hit_u[other.inverse])
        mine = self.first[pos_u[other.inverse[hit]]]
        same = (other.words[hit] == self.words[mine]).all(axis=1)
        return hit[same], mine[same]




def _missing_per_row(ds: Dataset) -> np.ndarray:
    x = ds.x.reshape(len(ds), -1)
    if not np.issubdtype(x.dtype, np.floating):
        return np.zeros(len(ds), np.int64)
    return np.isnan(x).sum(axis=1)


@register_check
class DataIntegrity(Check):
    name = "data.integrity"
    version = 1
    requires = ("data",)
    summary = "Leakage between train and test, exact duplicates, missing values and label balance."
    area = "data"
    metrics = {
        "train_test_overlap": lower("Fraction of the audited rows whose exact bytes also occur in the training "
                                    "set (leakage).", proportion=True),
        "duplicate_fraction": lower("Fraction of the audited rows that are exact copies of an earlier row of the "
                                    "same set.", proportion=True),
        "missing_fraction": lower("Fraction of feature values that are missing (NaN).", proportion=True),
        "class_imbalance_ratio": lower("Largest class count divided by the smallest (classes present in the "
                                       "audited set).", bounds=(1.0, None)),
        "label_shift_pvalue": higher("Chi-square test p-value that train and audited label distributions are the "
                                     "same; small values indicate label shift.", bounds=(0.0, 1.0)),
    }
    Params = IntegrityParams

    @classmethod
    def validate_params(cls, params: IntegrityParams, spec: Any) -> None:
        # the default 'train' may be absent (those metrics are then omitted); a named one must exist
        if "train" in params.model_fields_set and params.train not in spec.dataset_names():
            raise ValueError(f"parameter 'train' names an unknown dataset '{params.train}'")

    def run(self, ctx: Context, params: IntegrityParams) -> Measurement:
        ds = ctx.dataset(params.data)
        y = np.asarray(ds.y, dtype=np.int64)
        n, k = len(ds), ds.n_classes
        notes: list[str] = []
        metrics: dict[str, Metric] = {}

        idx = RowIndex.of(ds.x)
        dup_rows, dup_of = idx.duplicates()
        dup_conflict = int((y[dup_rows] != y[dup_of]).sum())

        train: Dataset | None = None
        if params.train == params.data:
            notes.append(f"The audited dataset is the reference '{params.train}' itself: "
                         "train_test_overlap and label_shift_pvalue are not measured.")
        elif not ctx.has_dataset(params.train):
            notes.append(f"No '{params.train}' dataset in the spec: train_test_overlap and "
                         "label_shift_pvalue are not measured.")
        else:
            train = ctx.dataset(params.train)

        overlap_rows = overlap_train = np.zeros(0, np.int64)
        tidx: RowIndex | None = None
        if train is not None:
            tidx = RowIndex.of(train.x)
            if train.x.shape[1:] != ds.x.shape[1:] or train.x.dtype != ds.x.dtype:
                notes.append(f"'{params.train}' rows have shape {train.x.shape[1:]} {train.x.dtype}, "
                             f"'{params.data}' rows {ds.x.shape[1:]} {ds.x.dtype}: rows cannot be "
                             "compared, train_test_overlap is not measured.")
            else:
                overlap_rows, overlap_train = tidx.find(idx)
                metrics["train_test_overlap"] = stats.proportion(int(overlap_rows.size), n, params.confidence)

        metrics["duplicate_fraction"] = stats.proportion(int(dup_rows.size), n, params.confidence)

        # Rows grouped by their number of missing values: resampling these groups is a row
        # bootstrap of the missing fraction, at a cost independent of N. The worst level (a
        # row with every value missing) joins with no rows, so that the pseudo-observation
        # of the Bayesian bootstrap keeps missing values possible when none were seen.
        miss = _missing_per_row(ds)
        width = max(int(np.prod(ds.x.shape[1:])), 1)
        levels, per_level = np.unique(miss, return_counts=True)
        if levels[-1] != width:
            levels, per_level = np.append(levels, width), np.append(per_level, 0)
        levels = levels.astype(np.float64)
        metrics["missing_fraction"] = stats.bootstrap_counts(
            per_level, lambda c: (c @ levels) / (c.sum(axis=1) * width), confidence=params.confidence,
            n_resamples=params.resamples, rng=ctx.rng(f"{self.name}:{params.data}:missing"), bounds=(0.0, 1.0))

        counts = np.bincount(y, minlength=k)
        present = counts > 0
        if present.sum() < k:
            absent = [ds.classes[c] for c in np.flatnonzero(~present)]
            notes.append(f"{len(absent)} class(es) absent from '{params.data}' ({', '.join(absent[:10])}); "
                         "the imbalance ratio uses the classes present.")
        # CI of the ratio of the observed largest to the observed smallest class. Re-picking
        # max and min in every resample would bias the interval upwards (on near-balanced
        # data it would not even contain the estimate); a ratio below 1 means "balanced".
        pc = counts[present]
        hi_c, lo_c = int(np.argmax(pc)), int(np.argmin(pc))
        metrics["class_imbalance_ratio"] = stats.bootstrap_counts(
            pc, lambda c: np.maximum(c[:, hi_c] / c[:, lo_c], 1.0), confidence=params.confidence,
            n_resamples=params.resamples, rng=ctx.rng(f"{self.name}:{params.data}:imbalance"), bounds=(1.0, None))

        train_counts = None
        if train is not None:
            train_counts = np.bincount(np.asarray(train.y, dtype=np.int64), minlength=k)[:k]
            tab = np.stack([train_counts, counts])
            tab = tab[:, tab.sum(axis=0) > 0]
            if tab.shape[1] >= 2:
                # Pearson chi-square test of homogeneity (Yates' correction when 2 classes)
                metrics["label_shift_pvalue"] = Metric(float(chi2_contingency(tab).pvalue), None)
            else:
                notes.append("Label shift is not tested: fewer than two classes occur in the two sets.")

        evidence = self._evidence(ctx, ds, train, tidx, idx, params, dup_rows, dup_conflict,
                                  overlap_rows, overlap_train, counts, train_counts, miss, metrics, notes)
        return Measurement(metrics=metrics, evidence=evidence)

    def _evidence(self, ctx: Context, ds: Dataset, train: Dataset | None, tidx: RowIndex | None,
                  idx: RowIndex, params: IntegrityParams, dup_rows: np.ndarray, dup_conflict: int,
                  overlap_rows: np.ndarray, overlap_train: np.ndarray, counts: np.ndarray,
                  train_counts: np.ndarray | None, miss: np.ndarray, metrics: dict[str, Metric],
                  notes: list[str]) -> list[dict]:
        n = len(ds)
        y = np.asarray(ds.y, dtype=np.int64)
        rows: list[list[Any]] = []
        if train is not None and tidx is not None:
            t_dup, t_of = tidx.duplicates()
            ty = np.asarray(train.y, dtype=np.int64)
            rows.append([params.train, len(train), len(train) - int(t_dup.size), int(t_dup.size),
                         int((ty[t_dup] != ty[t_of]).sum()), int(_missing_per_row(train).sum()), None])
        overlap_conflict = None
        if overlap_rows.size and train is not None:
            overlap_conflict = int((y[overlap_rows] != np.asarray(train.y)[overlap_train]).sum())
        rows.append([params.data, n, n - int(dup_rows.size), int(dup_rows.size), dup_conflict, int(miss.sum()),
                     int(overlap_rows.size) if "train_test_overlap" in metrics else None])
        sizes = table("Splits", ["dataset", "rows", "distinct rows", "duplicate rows",
                                 "duplicates with conflicting labels", "missing values",
                                 f"rows also in '{params.train}'"], rows)
        evidence: list[dict] = []

        lines = []
        if "train_test_overlap" in metrics:
            lines.append(f"{overlap_rows.size} of {n} rows of '{params.data}' "
                         f"({overlap_rows.size / max(n, 1):.2%}) also occur in '{params.train}'"
                         + (f", {overlap_conflict} of them with a different label." if overlap_conflict else "."))
        lines.append(f"{dup_rows.size} rows ({dup_rows.size / max(n, 1):.2%}) are exact copies of an earlier "
                     f"row of '{params.data}'.")
        pv = metrics.get("label_shift_pvalue")
        if pv is not None:
            lines.append(f"Label-shift chi-square test p = {pv.value:.3g}.")
        lines.extend(notes)
        evidence.append(text("Summary", " ".join(lines)))
        evidence.append(sizes)

        dist_cols = ["class", f"{params.data} count", f"{params.data} share"]
        if train_counts is not None:
            dist_cols += [f"{params.train} count", f"{params.train} share"]
        dist_rows = []
        for c, name in enumerate(ds.classes):
            row: list[Any] = [name, int(counts[c]), float(counts[c] / max(n, 1))]
            if train_counts is not None:
                row += [int(train_counts[c]), float(train_counts[c] / max(train_counts.sum(), 1))]
            dist_rows.append(row)
        evidence.append(table("Class distribution", dist_cols, dist_rows))
        # one grouped chart: class shares per split with multinomial-bootstrap whiskers
        series = {}
        splits = [(params.data, counts)] + ([(params.train, train_counts)] if train_counts is not None else [])
        for split, c in splits:
            draws = stats.resample_counts(c, 2000, ctx.rng(f"{self.name}:{params.data}:shares:{split}"))
            shares = draws / np.maximum(draws.sum(axis=1, keepdims=True), 1)
            lo, hi = np.quantile(shares, [(1 - params.confidence) / 2, (1 + params.confidence) / 2], axis=0)
            series[split] = ((c / max(c.sum(), 1)).tolist(), lo.tolist(), hi.tolist())
        evidence.append(chart(
            "class_shares", "Class distribution",
            {"classes": list(ds.classes), "splits": series, "title": "Class shares per split",
             "ylabel": "share of rows"},
            caption=f"Share of each class per split, with {params.confidence:.0%} bootstrap intervals."))

        if overlap_rows.size and params.max_examples and train is not None:
            m = min(params.max_examples, overlap_rows.size)
            ex = [[int(overlap_rows[i]), int(overlap_train[i]), ds.classes[int(y[overlap_rows[i]])],
                   train.classes[int(train.y[overlap_train[i]])] if int(train.y[overlap_train[i]]) < len(train.classes)
                   else int(train.y[overlap_train[i]])] for i in range(m)]
            evidence.append(table(f"Rows of '{params.data}' also in '{params.train}' (first {m})",
                                  [f"{params.data} row", f"{params.train} row", f"{params.data} label",
                                   f"{params.train} label"], ex))
        return evidence
