"""`fairness.group`: per-group rates and the gaps between groups, with confidence intervals.

Everything is a function of the group x true label x prediction count cells. Point
estimates are the rates of those cells (equal to fairlearn's `MetricFrame` on the rows,
which the tests hold them to); confidence intervals resample the cells as one multinomial (the same
distribution as a row bootstrap). Beyond one bincount, cost does not grow with N. Groups smaller
than `min_group_size` are reported as "insufficient data" and kept out of the gaps.
Multiclass tasks are audited one-vs-rest for the positive class.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from audit.check import Check, Measurement, Metric, Params, cell, chart, higher, lower, table, text
from audit.context import Context
from audit.dataset import Dataset, code_counts, code_dtype
from audit.errors import DataError
from audit.registry import register_check
from audit.stats import COUNT_RESAMPLES, from_draws, percentile_ci, resample_counts

RATES = ("base_rate", "selection_rate", "tpr", "fpr", "accuracy")
_CHUNK = 2_000  # resamples per batch: bounds memory when there are many groups
_CHUNK_ROWS = 1 << 20  # rows combined at a time into intersectional groups


class GroupFairnessParams(Params):
    sensitive: list[str] | None = Field(None, min_length=1, description="sensitive attribute(s); several = "
                                        "intersectional groups (default: all the dataset declares)")
    min_group_size: int = Field(30, ge=1, description="smaller groups are 'insufficient data' and kept out of the gaps")
    positive_label: str | int | None = Field(
        None, description="favourable class: a class name, or an index when no class has that name "
                          "(default: the last class, class 1 for binary tasks)")

    @field_validator("sensitive", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("sensitive")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"sensitive attributes are repeated: {v}")
        return v


@dataclass
class Groups:
    """Non-empty groups (one per observed combination of attribute values), sorted."""

    attrs: list[str]
    keys: list[tuple[str, ...]]   # attribute values per group
    codes: np.ndarray             # (N,) group index per row, in the smallest signed integer type

    def label(self, g: int) -> str:
        return ", ".join(self.keys[g])


def resolve_positive(classes: list[str], label: str | int | None) -> int:
    """Index of the positive class. An int is a class name if one matches, else an index."""
    if label is None:
        return len(classes) - 1
    if str(label) in classes:
        return classes.index(str(label))
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
        return label
    raise DataError(f"positive_label {label!r} is not a class of the data; classes are: "
                    f"{', '.join(map(str, classes))} (or an index 0..{len(classes) - 1})")


_HASH_KEYS = np.array([[0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F], [0xD6E8FEB86659FD93, 0x165667B19E3779F9],
                       [0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53], [0xA0761D6478BD642F, 0xE7037ED1A0B428DB],
                       [0x8EBC6AF09C88C6E3, 0x589965CC75374CC3], [0x1D8E4E27C47D124F, 0x94D049BB133111EB],
                       [0xBF58476D1CE4E5B9, 0x2545F4914F6CDD1D]], dtype=np.uint64)
# A word of a '<U' array holds two UTF-32 code points, one per 32-bit half; code points
# below 256 leave these bits zero.
_ABOVE_LATIN1 = np.uint64(0xFFFFFF00FFFFFF00)
# word j x 2^(8j): its two code points land on bits 8j.. and 32 + 8j.. (j < 4: disjoint)
_PACK = np.array([1 << (8 * j) for j in range(4)], dtype=np.uint64)
_BLOCK = 1 << 14  # rows per step of the passes over the words: their temporaries stay in cache


def _fixed_width(values: Any) -> bool:
    return isinstance(values, np.ndarray) and values.dtype.kind in "US" and values.ndim == 1


def _words(values: np.ndarray) -> np.ndarray:
    """(N, w) uint64 view of a fixed-width string array's bytes, zero-padded to whole words
    (copied only when the item size is not a multiple of 8)."""
    n = values.shape[0]
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, values.dtype.itemsize)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((n, pad), np.uint8)], axis=1)
    return raw.view(np.uint64)


def _exact_keys(values: np.ndarray, words: np.ndarray) -> np.ndarray | None:
    """Each value itself as one uint64, where it fits: bytes ('S') of at most 8, or text of
    at most 8 code points each below 256. Distinct values have distinct keys, so no hash and
    no collision guard. None when some value does not fit."""
    n, w = words.shape
    if values.dtype.kind == "S":
        return words[:, 0] if w == 1 else None
    if w > len(_PACK):
        return None
    keys = np.empty(n, np.uint64)
    above = np.uint64(0)
    for s in range(0, n, _BLOCK):  # by blocks of rows: the words are read from memory once
        np.matmul(words[s:s + _BLOCK], _PACK[:w], out=keys[s:s + _BLOCK])
        above |= np.bitwise_or.reduce(words[s:s + _BLOCK].ravel())
    # the code points of every word land on disjoint bits: exact if all are below 256
    return None if above & _ABOVE_LATIN1 else keys


def _unpack(keys: np.ndarray, dtype: np.dtype, w: int) -> list[str]:
    """The values of exact keys (the inverse of `_exact_keys`), as str(values[i]) reads them."""
    if dtype.kind == "S":
        words = keys[:, None]
    else:
        shift = np.arange(w, dtype=np.uint64) * np.uint64(8)
        k = keys[:, None]
        words = ((k >> shift) & np.uint64(0xFF)) | (((k >> (shift + np.uint64(32))) & np.uint64(0xFF)) << np.uint64(32))
    raw = np.ascontiguousarray(words).view(np.uint8).reshape(len(keys), 8 * words.shape[1])[:, : dtype.itemsize]
    return [str(v) for v in np.ascontiguousarray(raw).view(dtype).ravel()]


def _first_rows(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Row of each code's first appearance, for codes numbered in order of first appearance
    (as factorize numbers them): the running maximum steps up exactly there. Scanned over a
    growing prefix, as every group usually appears within the first rows."""
    if n_codes == 0:
        return np.zeros(0, np.int64)
    m = 4096
    while True:
        top = np.maximum.accumulate(codes[:m])
        if top[-1] == n_codes - 1 or m >= len(codes):
            break
        m *= 8
    return np.concatenate([[0], np.flatnonzero(top[1:] != top[:-1]) + 1])


def _hashed_codes(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes of the rows' value combinations over fixed-width string columns, numbered in
    order of first appearance, and the first row of each, from the bytes (no Python string
    per row): every 8-byte word of a row gets two independent 64-bit linear hashes (one
    integer matrix product per column: sum of odd keys x words, modulo 2^64). The first is
    factorized (pandas' integer hash table, O(N)); the second must agree within every group,
    so two different rows merge only if both hashes collide (odds about 2^-128; a single
    differing word can never collide). None when they disagree: the caller then factorizes
    strings."""
    n = columns[0].shape[0]
    words = [_words(v) for v in columns]
    keys = []
    start = 0
    for w in words:  # odd keys, different for every word of every column
        j = np.arange(start, start + w.shape[1])
        start += w.shape[1]
        keys.append(_HASH_KEYS[j % len(_HASH_KEYS)] * (j.astype(np.uint64)[:, None] * np.uint64(2) + np.uint64(1)))
    h = np.empty((2, n), np.uint64)
    block = np.empty((min(n, _BLOCK), 2), np.uint64)
    part = np.empty_like(block)
    for s in range(0, n, _BLOCK):  # by blocks of rows: words read once, partial sums in cache
        m = min(n - s, _BLOCK)
        np.matmul(words[0][s:s + m], keys[0], out=block[:m])  # wraps modulo 2^64
        for w, k in zip(words[1:], keys[1:]):
            block[:m] += np.matmul(w[s:s + m], k, out=part[:m])
        h[:, s:s + m] = block[:m].T  # each hash one contiguous row, for factorize
    codes, uniques = pd.factorize(h[0])
    first = _first_rows(codes, len(uniques))
    expect = h[1][first]
    buf = np.empty(min(n, _BLOCK), np.uint64)
    for s in range(0, n, _BLOCK):  # the second hash of each row is its group's
        rows = codes[s:s + _BLOCK]
        if not np.array_equal(np.take(expect, rows, out=buf[: len(rows)]), h[1][s:s + _BLOCK]):
            return None
    return codes, first


def _sorted_codes(codes: np.ndarray, labels: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes renumbered so that labels are sorted (one gather into the smallest dtype).
    Indexing, not `np.take`: take casts compact codes to an N-length intp array first."""
    order = sorted(range(len(labels)), key=labels.__getitem__)
    rank = np.empty(len(labels), code_dtype(len(labels)))
    rank[order] = np.arange(len(labels))
    return rank[codes], [labels[i] for i in order]


def _factorize(values: Any) -> tuple[np.ndarray, list[str]]:
    """Codes into sorted string labels, hashing rather than sorting the N values (O(N));
    missing values become their own '(missing)' group. Fixed-width string arrays are
    factorized from their bytes (no Python string per row): short values exactly, longer
    ones by hashing; a pandas Categorical gives its codes."""
    if _fixed_width(values):
        if values.dtype.itemsize == 0:
            return np.zeros(len(values), np.int8), [""] * min(len(values), 1)
        words = _words(values)
        keys = _exact_keys(values, words)
        if keys is not None:
            codes, uniques = pd.factorize(keys)
            return _sorted_codes(codes, _unpack(uniques, values.dtype, words.shape[1]))
        hashed = _hashed_codes([values])
        if hashed is not None:
            codes, first = hashed
            return _sorted_codes(codes, [str(values[i]) for i in first])
    if isinstance(values, pd.Categorical):  # its codes, in a type that also holds '(missing)'
        codes, labels = values.codes, [str(u) for u in values.categories]
        codes = codes.astype(code_dtype(len(labels) + 1), copy=False)
    else:
        codes, uniques = pd.factorize(pd.Series(np.asarray(values)), use_na_sentinel=True)
        labels = [str(u) for u in uniques]
    if (codes < 0).any():
        codes = np.where(codes < 0, len(labels), codes)
        labels.append("(missing)")
    return _sorted_codes(codes, labels)


def make_groups(ds: Dataset, attrs: list[str]) -> Groups:
    check_attributes(ds, attrs)
    columns = [ds.sensitive[a] for a in attrs]
    if len(columns) == 1:  # one attribute: every label was observed, its codes are the groups
        codes, labels = _factorize(columns[0])
        return Groups(list(attrs), [(label,) for label in labels], codes)
    if all(_fixed_width(v) and v.dtype.itemsize for v in columns):
        # one hash over the bytes of all the columns: the observed combinations directly
        hashed = _hashed_codes(columns)
        if hashed is not None:
            codes, first = hashed
            codes, keys = _sorted_codes(codes, [tuple(str(v[i]) for v in columns) for i in first])
            return Groups(list(attrs), keys, codes)
    per_attr = [_factorize(v) for v in columns]

    def combined(rows: slice) -> np.ndarray:  # mixed-radix code of the value combination
        out = np.zeros(len(range(*rows.indices(len(ds)))), np.int64)
        for codes, labels in per_attr:
            out *= len(labels)
            out += codes[rows]
        return out

    # Only observed combinations become groups: no group of size zero can arise. O(N):
    # over the combination space when it is small (in chunks of rows: no N-length int64
    # temporaries), else a hash table.
    n = len(ds)
    space = int(np.prod([len(labels) for _, labels in per_attr], dtype=np.float64))
    if space <= 4 * n + 1024:
        seen = np.zeros(space, bool)
        for s in range(0, n, _CHUNK_ROWS):
            seen[combined(slice(s, s + _CHUNK_ROWS))] = True
        observed = np.flatnonzero(seen)
        remap = (np.cumsum(seen) - 1).astype(code_dtype(len(observed)))
        codes = np.empty(n, remap.dtype)
        for s in range(0, n, _CHUNK_ROWS):
            codes[s:s + _CHUNK_ROWS] = remap[combined(slice(s, s + _CHUNK_ROWS))]
    else:
        observed, codes = np.unique(combined(slice(0, n)), return_inverse=True)
        codes = codes.ravel().astype(code_dtype(len(observed)))
    keys = []
    for c in observed:
        parts = []
        for _, labels in reversed(per_attr):
            c, r = divmod(int(c), len(labels))
            parts.append(labels[r])
        keys.append(tuple(reversed(parts)))
    return Groups(list(attrs), keys, codes)


def check_attributes(ds: Dataset, attrs: list[str]) -> None:
    have = sorted(ds.sensitive)
    for a in attrs:
        if a not in ds.sensitive:
            listed = ", ".join(have) if have else "none"
            close = difflib.get_close_matches(a, have, n=1)
            raise DataError(f"sensitive attribute '{a}' is not in dataset '{ds.name}' "
                            f"(it has: {listed})" + (f". Did you mean '{close[0]}'?" if close else ""))
        if len(ds.sensitive[a]) != len(ds):
            raise DataError(f"sensitive attribute '{a}' of dataset '{ds.name}' has "
                            f"{len(ds.sensitive[a])} values for {len(ds)} rows")


def group_counts(codes: np.ndarray, y_bin: np.ndarray, p_bin: np.ndarray, n_groups: int) -> np.ndarray:
    """(G, 2, 2) counts: [group, true is positive, predicted positive]; y_bin and p_bin are
    0/1 (bool or integer). In chunks of rows: the int64 cell index is never N long."""
    out = np.zeros(n_groups * 4, np.int64)
    for s in range(0, len(codes), _CHUNK_ROWS):
        idx = np.multiply(codes[s:s + _CHUNK_ROWS], 4, dtype=np.int64)  # codes may be a small integer type
        y = y_bin[s:s + _CHUNK_ROWS]
        np.add(idx, y, out=idx, casting="unsafe")
        np.add(idx, y, out=idx, casting="unsafe")  # twice: no temporary for y * 2
        np.add(idx, p_bin[s:s + _CHUNK_ROWS], out=idx, casting="unsafe")
        out += np.bincount(idx, minlength=n_groups * 4)
    return out.reshape(n_groups, 2, 2)


def count_rates(c: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates from (..., G, 2, 2) counts; NaN where undefined (an empty group,
    TPR of a group without positives, FPR of a group without negatives)."""
    c = c.astype(np.float64)
    n = c.sum(axis=(-2, -1))
    pos, neg = c[..., 1, :].sum(-1), c[..., 0, :].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "size": n,
            "base_rate": pos / n,
            "selection_rate": c[..., :, 1].sum(-1) / n,
            "tpr": c[..., 1, 1] / pos,
            "fpr": c[..., 0, 1] / neg,
            "accuracy": (c[..., 0, 0] + c[..., 1, 1]) / n,
        }


def _spread(v: np.ndarray) -> np.ndarray:
    """max - min over groups (last axis), ignoring undefined groups; NaN if fewer than 2."""
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        hi = np.where(ok, v, -np.inf).max(-1)
        lo = np.where(ok, v, np.inf).min(-1)
    return np.where(ok.sum(-1) >= 2, hi - lo, np.nan)


def gaps(rates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The five gap metrics over the groups on the last axis (already restricted to the
    groups with sufficient data). Definitions follow fairlearn's between-groups metrics."""
    sel = rates["selection_rate"]
    ok = np.isfinite(sel)
    with np.errstate(divide="ignore", invalid="ignore"):
        sel_max = np.where(ok, sel, -np.inf).max(-1)
        sel_min = np.where(ok, sel, np.inf).min(-1)
        ratio = np.where(ok.sum(-1) >= 2, sel_min / sel_max, np.nan)
    tpr_gap, fpr_gap = _spread(rates["tpr"]), _spread(rates["fpr"])
    return {
        "demographic_parity_difference": _spread(sel),
        "demographic_parity_ratio": ratio,
        "equalized_odds_difference": np.fmax(tpr_gap, fpr_gap),
        "equal_opportunity_difference": tpr_gap,
        "accuracy_difference": _spread(rates["accuracy"]),
    }


def bootstrap_fairness(counts: np.ndarray, sufficient: np.ndarray, *, confidence: float,
                       rng: np.random.Generator, n_resamples: int = COUNT_RESAMPLES,
                       ) -> tuple[dict[str, tuple[float, float] | None], dict[str, list[tuple[float, float] | None]]]:
    """CIs of the gaps (over `sufficient` groups) and of every per-group rate, from one
    multinomial resampling of the (G, 2, 2) count table: cost independent of N."""
    gap_draws: dict[str, list[np.ndarray]] = {}
    rate_draws: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(_CHUNK, n_resamples - done)
        rates = count_rates(resample_counts(counts, b, rng))
        for k, v in gaps({r: rates[r][:, sufficient] for r in RATES}).items():
            gap_draws.setdefault(k, []).append(v)
        for r in RATES:
            rate_draws.setdefault(r, []).append(rates[r])
        done += b
    gap_all = {k: np.concatenate(v) for k, v in gap_draws.items()}
    rate_ci = {}
    for r, chunks in rate_draws.items():
        d = np.concatenate(chunks)
        rate_ci[r] = [percentile_ci(d[:, g], confidence) for g in range(d.shape[1])]
    return gap_all, rate_ci


def group_rates(counts: np.ndarray) -> pd.DataFrame:
    """Per-group point estimates (size and the rates of RATES), one row per group in
    `groups.keys` order, from the (G, 2, 2) count cells.

    Every rate is a ratio of those counts, so NumPy computes it directly: fairlearn's
    `MetricFrame` on the same cells gives the same numbers (tests/test_fairness.py holds
    them equal to MetricFrame on the rows) but costs ~65 ms per call whatever N, as much
    as tabulating 1.6 million rows (benchmarks/run_all.py). fairlearn reports TPR = 0 for
    a group without positives (and FPR = 0 without negatives); those rates are undefined,
    so they are NaN here."""
    return pd.DataFrame(count_rates(counts))


@register_check
class GroupFairness(Check):
    name = "fairness.group"
    version = 1
    requires = ("data", "sensitive")
    summary = "Per-group selection, error and accuracy rates and the gaps between groups, with CIs."
    area = "fairness"
    metrics = {
        "demographic_parity_difference": lower(
            "Largest minus smallest share of each group predicted positive (0 = every group is selected at the "
            "same rate).", bounds=(0.0, 1.0)),
        "demographic_parity_ratio": higher(
            "Smallest over largest group selection rate (1 = parity; the 'four-fifths rule' asks for at least "
            "0.8).", bounds=(0.0, 1.0)),
        "equalized_odds_difference": lower(
            "The larger of the between-group gaps in true positive rate and in false positive rate (0 = equal "
            "error rates).", bounds=(0.0, 1.0)),
        "equal_opportunity_difference": lower(
            "Largest minus smallest true positive rate: how much more often truly positive members of one group "
            "are recognised than another's.", bounds=(0.0, 1.0)),
        "accuracy_difference": lower("Largest minus smallest per-group accuracy.", bounds=(0.0, 1.0)),
        "entity_f1_difference": lower(
            "Token classification: largest minus smallest per-group entity F1 (exact spans), groups of "
            "sentences.", bounds=(0.0, 1.0)),
        "entity_recall_difference": lower(
            "Token classification: largest minus smallest per-group share of true entities found.",
            bounds=(0.0, 1.0)),
    }
    kinds = ("image", "tabular", "text", "tokens")
    Params = GroupFairnessParams

    @classmethod
    def preflight(cls, ctx: Context, params: GroupFairnessParams) -> None:
        ds = ctx.dataset(params.data)
        groups = _groups(ctx, params)
        if ds.kind == "tokens":
            if params.positive_label is not None:
                raise DataError("positive_label applies to classification; token classification is audited by "
                                "entity F1 and recall per group")
        else:
            resolve_positive(ds.classes, params.positive_label)
        _require_comparable(ds, groups, params)

    def run(self, ctx: Context, params: GroupFairnessParams) -> Measurement:
        ds = ctx.dataset(params.data)
        groups = _groups(ctx, params)
        if ds.kind == "tokens":
            return self._run_tokens(ctx, params, ds, groups)
        pos = resolve_positive(ds.classes, params.positive_label)
        sufficient = _require_comparable(ds, groups, params)
        y_bin = ds.y == pos  # bool: 1 byte per row
        p_bin = ctx.predictions(params.data) == pos

        counts = group_counts(groups.codes, y_bin, p_bin, len(groups.keys))
        by = group_rates(counts)
        point = gaps({r: by[r].to_numpy()[sufficient] for r in RATES})
        rng = ctx.rng(f"{self.name}:{params.data}:{','.join(groups.attrs)}:{pos}")
        gap_draws, rate_ci = bootstrap_fairness(counts, sufficient, confidence=params.confidence, rng=rng)
        metrics = {k: from_draws(float(point[k]), gap_draws[k], params.confidence, n=len(ds), bounds=(0.0, 1.0))
                   for k in point}

        return Measurement(metrics=metrics, evidence=self._evidence(ds, groups, pos, by, rate_ci, sufficient,
                                                                    metrics, params))

    # ---- token classification ------------------------------------------------------
    def _run_tokens(self, ctx: Context, params: GroupFairnessParams, ds: Dataset, groups: Groups) -> Measurement:
        """Per-group entity precision, recall and F1 (groups of sentences), their largest
        gaps, and sentence-bootstrap intervals (one set of resamples for every group)."""
        from audit.stats import WEIGHT_RESAMPLES, resample_weights
        from audit.tokens import entity_counts, f1_from, ratio

        sufficient = _require_comparable(ds, groups, params)
        c = entity_counts(ds.y, ctx.predictions(params.data), ds.classes)
        g = len(groups.keys)
        onehot = np.zeros((len(ds), g))
        onehot[np.arange(len(ds)), groups.codes] = 1.0
        per = np.stack([c.tp.sum(1), c.pred.sum(1), c.gold.sum(1)], axis=1).astype(np.float64)  # (N, 3)

        def rates(w: np.ndarray) -> dict[str, np.ndarray]:
            s = np.einsum("bn,ng,nk->bgk", w, onehot, per)  # (B, G, 3)
            return {"precision": ratio(s[..., 0], s[..., 1]), "recall": ratio(s[..., 0], s[..., 2]),
                    "f1": f1_from(s[..., 0], s[..., 1], s[..., 2])}

        def gap(v: np.ndarray) -> np.ndarray:
            v = v[..., sufficient]
            return v.max(-1) - v.min(-1)

        point = rates(np.ones((1, len(ds))))
        rng = ctx.rng(f"{self.name}:{params.data}:{','.join(groups.attrs)}:tokens")
        draws: dict[str, list[np.ndarray]] = {"precision": [], "recall": [], "f1": []}
        for w in resample_weights(len(ds), WEIGHT_RESAMPLES, rng):
            for k, v in rates(w.astype(np.float64)).items():
                draws[k].append(v)
        d = {k: np.concatenate(v) for k, v in draws.items()}
        conf = params.confidence
        metrics = {
            "entity_f1_difference": from_draws(float(gap(point["f1"])[0]), gap(d["f1"]), conf, n=len(ds),
                                               bounds=(0.0, 1.0)),
            "entity_recall_difference": from_draws(float(gap(point["recall"])[0]), gap(d["recall"]), conf,
                                                   n=len(ds), bounds=(0.0, 1.0)),
        }
        sizes = code_counts(groups.codes, g)
        ents = onehot.T @ per
        rows = []
        for j in range(g):
            rows.append([*groups.keys[j], int(sizes[j]), int(ents[j, 2]), "ok" if sufficient[j] else "insufficient",
                         *[cell(float(point[k][0, j]), percentile_ci(d[k][:, j], conf))
                           for k in ("precision", "recall", "f1")]])
        table_ev = table(f"Entity recognition per group ({' x '.join(groups.attrs)})",
                         [*groups.attrs, "sentences", "true entities", "data", "precision", "recall", "entity F1"],
                         rows, note=f"{conf:.0%} sentence-bootstrap CIs ({WEIGHT_RESAMPLES} resamples); groups with "
                                    f"fewer than {params.min_group_size} sentences are 'insufficient' and kept out "
                                    f"of the gaps.")
        labels = [groups.label(j) for j in range(g)]
        series = {k: (point[k][0], [(percentile_ci(d[k][:, j], conf) or (np.nan, np.nan))[0] for j in range(g)],
                      [(percentile_ci(d[k][:, j], conf) or (np.nan, np.nan))[1] for j in range(g)])
                  for k in ("recall", "f1")}
        chart_ev = chart("group_rates", "Entity recognition per group",
                         {"groups": labels, "series": {"entity recall": series["recall"], "entity F1": series["f1"]},
                          "insufficient": [bool(v) for v in ~sufficient],
                          "title": f"Entity recall and F1 by {' x '.join(groups.attrs)}"},
                         caption=f"Whiskers: {conf:.0%} sentence-bootstrap CIs.")
        explain = text("How to read this", (
            f"Token classification: each sentence belongs to one group of {', '.join(groups.attrs)}; per group, "
            "entity precision, recall and F1 count exact spans (type, first and last word) as seqeval does. "
            "Entity F1 difference and entity recall difference are the largest minus the smallest per-group "
            "value among the groups with enough sentences. Selection-rate metrics (demographic parity, "
            "equalized odds) need one favourable decision per sample and are not measured here."))
        return Measurement(metrics=metrics, evidence=[explain, table_ev, chart_ev])

    # ---- evidence --------------------------------------------------------------------
    def _evidence(self, ds: Dataset, groups: Groups, pos: int, by: pd.DataFrame,
                  rate_ci: dict[str, list[tuple[float, float] | None]], sufficient: np.ndarray,
                  metrics: dict[str, Metric], params: GroupFairnessParams) -> list[dict[str, Any]]:
        pos_name = ds.classes[pos]
        n_ins = int((~sufficient).sum())
        rows = []
        for g in range(len(groups.keys)):
            status = "ok" if sufficient[g] else "insufficient"
            rows.append([*groups.keys[g], int(by["size"][g]), status,
                         *[cell(float(by[r][g]), rate_ci[r][g]) for r in RATES]])
        group_table = table(
            f"Per-group rates ({' x '.join(groups.attrs)}), positive class '{pos_name}'",
            [*groups.attrs, "size", "data", "base rate", "selection rate", "TPR", "FPR", "accuracy"], rows,
            note=(f"{params.confidence:.0%} bootstrap CIs. TPR is undefined (blank) for a group with no "
                  f"true '{pos_name}', FPR for one with none other."
                  + (f" {n_ins} group(s) with fewer than {params.min_group_size} samples are marked "
                     "'insufficient' (not enough data) and kept out of the gaps." if n_ins else "")))

        # Which groups set each gap: the reader's first question after the number itself.
        idx = np.flatnonzero(sufficient)
        extremes = []
        for r, label in (("selection_rate", "selection rate"), ("tpr", "TPR"), ("fpr", "FPR"), ("accuracy", "accuracy")):
            v = by[r].to_numpy()[idx]
            if np.isfinite(v).sum() < 2:
                continue
            hi_g, lo_g = idx[np.nanargmax(v)], idx[np.nanargmin(v)]
            extremes.append([label, groups.label(hi_g), cell(float(by[r][hi_g]), rate_ci[r][hi_g]),
                             groups.label(lo_g), cell(float(by[r][lo_g]), rate_ci[r][lo_g])])
        gap_table = table("Groups that set the gaps", ["rate", "highest group", "rate (CI)", "lowest group", "rate (CI)"],
                          extremes, note=f"Among the {len(idx)} groups with at least {params.min_group_size} samples.")

        series = {}
        for r, label in (("selection_rate", "selection rate"), ("tpr", "TPR"), ("fpr", "FPR")):
            vals = by[r].to_numpy()
            cis = rate_ci[r]
            series[label] = (vals, [c[0] if c else np.nan for c in cis], [c[1] if c else np.nan for c in cis])
        rates_chart = chart(
            "group_rates", "Per-group rates",
            {"groups": [groups.label(g) for g in range(len(groups.keys))], "series": series,
             "insufficient": [bool(v) for v in ~sufficient],
             "title": f"Rates by {' x '.join(groups.attrs)} (positive: {_short(pos_name)})"},
            caption=f"Whiskers: {params.confidence:.0%} bootstrap CIs."
                    + (" * insufficient data (faded), not in the gaps." if n_ins else ""))

        ovr = (f" The task has {ds.n_classes} classes, so it is audited one-vs-rest: a sample is "
               f"'positive' when its true class is '{pos_name}' and 'selected' when the model "
               f"predicts '{pos_name}'." if ds.n_classes > 2 else "")
        explain = text("How to read this", (
            f"Positive (favourable) class: '{pos_name}'.{ovr} Groups: "
            f"{len(groups.keys)} observed value combination(s) of {', '.join(groups.attrs)} in "
            f"dataset '{ds.name}' ({len(ds)} rows); {int(sufficient.sum())} have at least "
            f"{params.min_group_size} samples and enter the gaps. "
            "Demographic parity difference: gap in the share predicted positive. "
            "Demographic parity ratio: lowest over highest selection rate. "
            "Equal opportunity difference: gap in true positive rate. "
            "Equalized odds difference: the larger of the TPR and FPR gaps. "
            "Accuracy difference: gap in per-group accuracy. "
            "Confidence intervals resample the group x label x prediction counts "
            f"({COUNT_RESAMPLES} multinomial resamples), so a gap measured on few samples gets a wide "
            "interval and an inconclusive verdict rather than a pass."))
        return [explain, gap_table, group_table, rates_chart]


def _groups(ctx: Context, params: GroupFairnessParams) -> Groups:
    """The groups of the check's attributes (default: all the dataset declares), made once
    per audit and shared by preflight and run."""
    ds = ctx.dataset(params.data)
    attrs = list(params.sensitive) if params.sensitive else list(ds.sensitive)
    return ctx.cached(("groups", params.data, tuple(attrs)), lambda: make_groups(ds, attrs))


def _short(s: str, n: int = 20) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _require_comparable(ds: Dataset, groups: Groups, params: GroupFairnessParams) -> np.ndarray:
    """Mask of groups with enough data; a clear DataError when fewer than two qualify."""
    sizes = code_counts(groups.codes, len(groups.keys))
    sufficient = sizes >= params.min_group_size
    what = " x ".join(groups.attrs)
    if len(groups.keys) < 2:
        only = groups.label(0) if groups.keys else "nothing"
        raise DataError(f"sensitive attribute(s) {what} take a single value ('{only}') in dataset "
                        f"'{ds.name}': there are no groups to compare")
    if sufficient.sum() < 2:
        listing = ", ".join(f"{groups.label(g)}: {int(s)}" for g, s in enumerate(sizes))
        raise DataError(f"fewer than two groups of {what} in dataset '{ds.name}' have at least "
                        f"min_group_size={params.min_group_size} samples ({listing}); lower "
                        "min_group_size or use fewer attributes")
    return sufficient
