"""data.integrity: leakage, duplicates, missing values and label balance of a dataset.

Rows (a table row, an image, a token sequence) are compared by their bytes: each row is
hashed (pandas' vectorised 64-bit hash over the row's 8-byte words), equal hashes are
then confirmed byte for byte, so a reported duplicate is an exact copy. A streamed
dataset's hashes (and its missing-value counts) come from its one pass; only the rows
whose hashes match are read back to be compared. Only the
features are compared; labels of copies are reported beside (conflicting labels).

Without a train set (or when the audited dataset is the train set itself) the two
metrics that need one, train_test_overlap and label_shift_pvalue, are omitted with a
note; the others are still measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from audit import stats
from audit.check import Check, Flag, Measurement, Metric, Params, chart, higher, lower, table, text
from audit.context import Context
from audit.dataset import Dataset, code_counts
from audit.lazy import row_hashes, row_words
from audit.registry import register_check


class IntegrityParams(Params):
    train: str = Field("train", description="the reference (training) dataset to compare against")
    resamples: int = Field(stats.COUNT_RESAMPLES, ge=200, le=200_000, description="count-bootstrap resamples")
    max_examples: int = Field(10, ge=0, le=1000, description="overlapping rows listed in the evidence")


_CONFIRM_ROWS = 65_536  # rows compared byte for byte at a time
_SCAN_ROWS = 1 << 18  # rows looked up at a time: bounds a scan's temporaries (~3-5 MiB)


def _distinct(s: np.ndarray) -> np.ndarray:
    """Distinct values of the sorted array `s` (np.unique would sort again, and on uint64
    it is ~100x slower here)."""
    return s[np.r_[True, s[1:] != s[:-1]]] if s.size else s


def _repeated(s: np.ndarray) -> np.ndarray:
    """Sorted distinct values that occur more than once in the sorted array `s`, compared
    in chunks (no N-length mask)."""
    out = []
    for a in range(0, max(s.size - 1, 0), _SCAN_ROWS):
        nxt = s[a + 1:a + 1 + _SCAN_ROWS]
        out.append(nxt[nxt == s[a:a + nxt.size]])
    return _distinct(np.concatenate(out)) if out else s[:0]


def _common(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values present in both sorted arrays. The smaller array is looked
    up in the larger, in chunks: sorted queries walk the larger one in order (cache
    friendly) and the temporaries stay bounded."""
    if a.size > b.size:
        a, b = b, a
    if not b.size:
        return np.zeros(0, a.dtype)
    out = []
    for s in range(0, a.size, _SCAN_ROWS):
        q = a[s:s + _SCAN_ROWS]
        pos = np.minimum(np.searchsorted(b, q), b.size - 1)
        out.append(q[b[pos] == q])
    return _distinct(np.concatenate(out)) if out else np.zeros(0, a.dtype)  # sorted, as `a` is


def _prefixes(h: np.ndarray) -> np.ndarray:
    """The top 32 bits of 64-bit row hashes (in chunks: no N-length uint64 temporary)."""
    out = np.empty(h.size, np.uint32)
    for s in range(0, h.size, _SCAN_ROWS):
        np.right_shift(h[s:s + _SCAN_ROWS], np.uint64(32), out=out[s:s + _SCAN_ROWS], casting="unsafe")
    return out


def _rows_with(h: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Ascending rows i whose hash prefix (`_prefixes(h[i])`) is in the sorted `values`,
    scanned in chunks. A table of which top-bit buckets hold a value (cache resident)
    rules out most rows with one lookup each; only the rest are searched in `values`.
    Hashes are well mixed, so the buckets are evenly used; on any other input the result
    is the same, only slower."""
    if not values.size:
        return np.zeros(0, np.int64)
    shift = np.uint32(32 - int(np.clip(np.log2(values.size) + 6, 12, 22)))  # ~1/64 of buckets set
    bucket = np.zeros(1 << (32 - int(shift)), bool)
    bucket[values >> shift] = True
    out = []
    for s in range(0, h.size, _SCAN_ROWS):
        q = _prefixes(h[s:s + _SCAN_ROWS])
        cand = np.flatnonzero(bucket[q >> shift])
        qc = q[cand]
        pos = np.minimum(np.searchsorted(values, qc), values.size - 1)
        out.append(cand[values[pos] == qc] + s)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _first_of_each(h: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ascending `rows`: per row, the first of them with its hash; and per distinct
    hash (ascending), its first row. A stable sort of these (few) rows keeps each hash's
    rows ascending, so the head of each run is its first row."""
    vals = h[rows]
    order = np.argsort(vals, kind="stable")
    v = vals[order]
    head = np.flatnonzero(np.r_[True, v[1:] != v[:-1]]) if v.size else np.zeros(0, np.int64)
    firsts = rows[order[head]]
    rep = np.empty_like(rows)
    rep[order] = np.repeat(firsts, np.diff(np.r_[head, v.size]))
    return rep, firsts


@dataclass
class RowIndex:
    """Hashes of one dataset's rows, the sorted top 32 bits of each, and a way to read the
    bytes of given rows (to confirm that equal hashes are equal rows). Sorting instead of
    a hash table: copies are adjacent in the sorted prefixes, and only the rows whose
    prefix repeats (or is shared) are ever gathered and compared by their full hash, so
    the temporaries beyond the sorted prefixes (4 bytes a row) are bounded by the chunk
    size and the number of such rows (at 10^7 distinct rows, about 2 * 10^4 share a prefix
    by chance)."""

    hashes: np.ndarray
    sorted: np.ndarray  # the hashes' top 32 bits, sorted
    fetch: Callable[[np.ndarray], np.ndarray]  # row words (uint64) of the given rows
    width: int  # words per row

    @classmethod
    def of(cls, x: np.ndarray) -> RowIndex:
        words = row_words(x)
        return cls.from_hashes(row_hashes(words), lambda i: words[i], words.shape[1])

    @classmethod
    def of_dataset(cls, ctx: Context, name: str) -> RowIndex:
        """In-memory rows are hashed here; a streamed dataset's hashes come from its pass
        and only the rows to confirm are read back."""
        ds = ctx.dataset(name)
        if not ds.lazy:
            return cls.of(ds.x)
        width = -(-int(np.prod(ds.x.shape[1:])) * ds.x.dtype.itemsize // 8)
        return cls.from_hashes(ctx.row_hashes(name), lambda i: row_words(ds.take(i)), width)

    @classmethod
    def from_hashes(cls, h: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], width: int) -> RowIndex:
        h = np.asarray(h, np.uint64)
        top = _prefixes(h)
        top.sort()
        return cls(h, top, fetch, width)

    def _same(self, mine: np.ndarray, other: RowIndex, theirs: np.ndarray) -> np.ndarray:
        """Byte-for-byte equality of rows `mine` here and rows `theirs` of `other`, in chunks."""
        out = np.zeros(mine.size, bool)
        for s in range(0, mine.size, _CONFIRM_ROWS):
            a, b = mine[s:s + _CONFIRM_ROWS], theirs[s:s + _CONFIRM_ROWS]
            out[s:s + len(a)] = (self.fetch(a) == other.fetch(b)).all(axis=1)
        return out

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows that are exact copies of an earlier row, and that earlier row's index."""
        # every row of a repeated hash has a repeated prefix; a row whose full hash is its
        # own among them is its own first row, and drops out as `later` is False
        rows = _rows_with(self.hashes, _repeated(self.sorted))
        rep = _first_of_each(self.hashes, rows)[0]
        later = rep != rows
        cand, of = rows[later], rep[later]
        same = self._same(cand, self, of)  # rule out hash collisions
        if same.all():
            return cand, of
        # a hash that different rows share (a 64-bit collision): its rows are grouped by
        # their bytes instead, so that a copy of a row that is not its hash's first is found
        clash = np.isin(self.hashes[rows], self.hashes[cand[~same]])
        exact = self._by_bytes(rows[clash])
        first: dict[tuple[int, bytes], int] = {}
        pairs = [(r, first.setdefault(key, r)) for r, key in exact]
        pairs = [(r, j) for r, j in pairs if j != r]
        keep = same & ~np.isin(cand, rows[clash])
        dup = np.concatenate([cand[keep], np.array([r for r, _ in pairs], np.int64)])
        dup_of = np.concatenate([of[keep], np.array([j for _, j in pairs], np.int64)])
        order = np.argsort(dup, kind="stable")
        return dup[order], dup_of[order]

    def _by_bytes(self, rows: np.ndarray) -> list[tuple[int, tuple[int, bytes]]]:
        """(row, (hash, bytes)) of the given rows (few: those of colliding hashes)."""
        return [(int(r), (int(self.hashes[r]), w.tobytes())) for r, w in zip(rows, self.fetch(rows))]

    def find(self, other: RowIndex) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `other` that also occur here, and the index of their first copy here."""
        if other.width != self.width:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        shared = _common(self.sorted, other.sorted)  # prefixes
        # first row here of each full hash among the rows with a shared prefix (ascending)
        firsts = _first_of_each(self.hashes, _rows_with(self.hashes, shared))[1]
        keys = self.hashes[firsts]
        hit = _rows_with(other.hashes, shared)
        if not keys.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        theirs = other.hashes[hit]
        pos = np.minimum(np.searchsorted(keys, theirs), keys.size - 1)
        full = keys[pos] == theirs  # the whole hash, not only its prefix
        hit, mine = hit[full], firsts[pos[full]]
        same = other._same(hit, self, mine)
        if same.all():
            return hit, mine
        # a hash that different rows here share (a 64-bit collision): look the rows of other
        # whose first match failed up by their bytes among every row here with that hash
        clash = np.unique(other.hashes[hit[~same]])
        here = _rows_with(self.hashes, _distinct(_prefixes(clash)))
        first: dict[tuple[int, bytes], int] = {}
        for r, key in self._by_bytes(here[np.isin(self.hashes[here], clash)]):
            first.setdefault(key, r)
        retry = [(int(r), first.get(key)) for r, key in other._by_bytes(hit[~same])]
        found = [(r, j) for r, j in retry if j is not None]
        out = np.concatenate([hit[same], np.array([r for r, _ in found], np.int64)])
        at = np.concatenate([mine[same], np.array([j for _, j in found], np.int64)])
        order = np.argsort(out, kind="stable")
        return out[order], at[order]


def _missing_levels(ctx: Context, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows by their number of missing (NaN) values: (levels, rows at each level), from the
    streamed dataset's pass or counted here."""
    ds = ctx.dataset(name)
    if ds.lazy:
        hist = np.asarray(ctx.input_stats(name).missing_rows)
    else:
        x = ds.x.reshape(len(ds), -1)
        per_row = np.isnan(x).sum(axis=1) if np.issubdtype(x.dtype, np.floating) else np.zeros(len(ds), np.int64)
        hist = np.bincount(per_row, minlength=1)
    levels = np.flatnonzero(hist)
    return levels, hist[levels]


def _pad_to(x: np.ndarray, width: int, pad: int) -> np.ndarray:
    if x.shape[1] == width:
        return x
    out = np.full((x.shape[0], width), pad, dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


def _labels(ds: Dataset) -> np.ndarray:
    """What two copies of a row must agree on: the label, or a sentence's tag sequence."""
    if ds.kind == "tokens":
        return np.asarray(ds.meta.get("tags_by_row", ds.y))
    return np.asarray(ds.y)


def _conflicts(a: np.ndarray, b: np.ndarray) -> int:
    if a.ndim == 2:
        return int((a != b).any(axis=1).sum()) if a.size else 0
    return int((a != b).sum())


def _class_units(ds: Dataset, types: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """One label per unit for class balance and label shift: the class of each row, or
    for token data the type of each true entity (the tag distribution as entities)."""
    if ds.kind != "tokens":
        return np.asarray(ds.y), list(ds.classes)  # compact when streamed: no int64 copy
    from audit.tokens import entity_counts, entity_types

    types = list(types) if types is not None else entity_types(ds.classes)
    c = entity_counts(ds.y, ds.y, ds.classes, types)
    per_type = c.gold.sum(axis=0)[: len(types)]
    return np.repeat(np.arange(len(types)), per_type).astype(np.int64), types


_NORMALISE = None


def normalise_text(t: str) -> str:
    """Lower case, digits as 0, every run of punctuation and whitespace as one space."""
    import re

    global _NORMALISE
    if _NORMALISE is None:
        _NORMALISE = (re.compile(r"\d"), re.compile(r"[\W_]+", re.UNICODE))
    digits, other = _NORMALISE
    return other.sub(" ", digits.sub("0", t.lower())).strip()


def _raw_texts(ds: Dataset) -> list[str] | None:
    if ds.kind == "text" and ds.meta.get("texts") is not None:
        return list(ds.meta["texts"])
    if ds.kind == "tokens" and ds.meta.get("words") is not None:
        return [" ".join(w) for w in ds.meta["words"]]
    return None


def _text_checks(ctx: Context, params: IntegrityParams, ds: Dataset, train: Dataset | None,
                 metrics: dict[str, Metric]) -> dict[str, Any]:
    """Near-duplicates across splits (text and tokens) and tags that break the IOB scheme
    (tokens); adds to `metrics` and returns notes, flags and evidence."""
    out: dict[str, Any] = {"notes": [], "flags": [], "evidence": []}
    texts = _raw_texts(ds)
    if texts is None:
        return out
    n = len(texts)
    train_texts = _raw_texts(train) if train is not None else None
    if train_texts is not None:
        seen: dict[str, int] = {}
        for j, t in enumerate(train_texts):
            seen.setdefault(normalise_text(t), j)
        hits = [(i, seen[nt]) for i, nt in enumerate(map(normalise_text, texts)) if nt in seen]
        metrics["near_duplicate_overlap"] = stats.proportion(len(hits), n, params.confidence)
        out["notes"].append(f"{len(hits)} of {n} rows of '{params.data}' ({len(hits) / max(n, 1):.2%}) match a row "
                            f"of '{params.train}' once case, punctuation, whitespace and digits are ignored.")
        if hits and params.max_examples:
            out["evidence"].append(table(
                f"Rows of '{params.data}' that nearly duplicate '{params.train}' (first {min(len(hits), params.max_examples)})",
                [f"{params.data} row", f"{params.data} text", f"{params.train} row", f"{params.train} text"],
                [[i, texts[i][:160], j, train_texts[j][:160]] for i, j in hits[: params.max_examples]]))
    if ds.kind == "tokens":
        scheme = ds.meta.get("tag_scheme") or {}
        invalid = ds.meta.get("invalid_iob") or []
        total = int(scheme.get("invalid", len(invalid)))
        bad_sentences = int(scheme.get("invalid_sentences", len({b["sentence"] for b in invalid})))
        metrics["invalid_iob_fraction"] = stats.proportion(min(bad_sentences, n), n, params.confidence)
        where = ds.meta.get("path") or ds.source or ds.name
        if total:
            first = invalid[0]
            out["flags"].append(Flag("invalid_iob", (
                f"{total} tag(s) of {where} break the {scheme.get('scheme', 'IOB2')} scheme, first at line "
                f"{first['line']}: '{first['tag']}' after '{first['previous']}' (an I- tag must continue an entity "
                f"of its type); entity metrics read such a tag as the start of an entity (conlleval rules): fix the "
                f"data rather than trust them")))
            out["evidence"].append(table(
                f"Tags that break the {scheme.get('scheme', 'IOB2')} scheme (first {min(len(invalid), 50)} of {total})",
                ["line", "sentence", "word", "tag", "after"],
                [[b["line"], b["sentence"], b["word"], b["tag"], b["previous"]] for b in invalid[:50]],
                note=f"File: {where}. Nothing was changed: the audit reads the tags as written."))
        else:
            out["notes"].append(f"Tags follow the {scheme.get('scheme', 'IOB2')} scheme"
                                f"{' (declared)' if scheme.get('declared') else ' (inferred)'}.")
    return out


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
        "near_duplicate_overlap": lower("Text and token data: fraction of the audited rows whose normalised text "
                                        "(case, punctuation, whitespace and digits ignored) also occurs in the "
                                        "training set.", proportion=True),
        "invalid_iob_fraction": lower("Token classification: fraction of sentences with a tag that breaks the IOB "
                                      "scheme (in IOB2, an I- tag that cannot continue an entity).",
                                      proportion=True),
    }
    kinds = ("image", "tabular", "text", "tokens")
    Params = IntegrityParams

    @classmethod
    def validate_params(cls, params: IntegrityParams, spec: Any) -> None:
        # the default 'train' may be absent (those metrics are then omitted); a named one must exist
        if "train" in params.model_fields_set and params.train not in spec.dataset_names():
            raise ValueError(f"parameter 'train' names an unknown dataset '{params.train}'")

    @classmethod
    def row_hash_datasets(cls, params: IntegrityParams) -> tuple[str, ...]:
        return (params.data, params.train)

    def run(self, ctx: Context, params: IntegrityParams) -> Measurement:
        ds = ctx.dataset(params.data)
        n = len(ds)
        # class balance and label shift: over classes, or over entity types (token data)
        y, classes = _class_units(ds)
        k = len(classes)
        notes: list[str] = []
        metrics: dict[str, Metric] = {}

        idx = RowIndex.of_dataset(ctx, params.data)
        dup_rows, dup_of = idx.duplicates()
        labels = _labels(ds)
        dup_conflict = _conflicts(labels[dup_rows], labels[dup_of])

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
            if ds.kind in ("text", "tokens") and train.kind == ds.kind and train.x.shape[1] != ds.x.shape[1]:
                # token ids padded to each set's longest row: compare them at one width
                width = max(train.x.shape[1], ds.x.shape[1])
                pad = int(ds.meta.get("pad_id", 0))
                idx = RowIndex.of(_pad_to(ds.x, width, pad))
                dup_rows, dup_of = idx.duplicates()
                tidx = RowIndex.of(_pad_to(train.x, width, pad))
                comparable = True
            else:
                tidx = RowIndex.of_dataset(ctx, params.train)
                comparable = train.x.shape[1:] == ds.x.shape[1:] and train.x.dtype == ds.x.dtype
            if not comparable:
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
        levels, per_level = _missing_levels(ctx, params.data)
        miss_total = int((levels * per_level).sum())
        width = max(int(np.prod(ds.x.shape[1:])), 1)
        if levels[-1] != width:
            levels, per_level = np.append(levels, width), np.append(per_level, 0)
        levels = levels.astype(np.float64)
        metrics["missing_fraction"] = stats.bootstrap_counts(
            per_level, lambda c: (c @ levels) / (c.sum(axis=1) * width), confidence=params.confidence,
            n_resamples=params.resamples, rng=ctx.rng(f"{self.name}:{params.data}:missing"), bounds=(0.0, 1.0))

        counts = code_counts(y, k)
        present = counts > 0
        if present.sum() < k:
            absent = [classes[c] for c in np.flatnonzero(~present)]
            notes.append(f"{len(absent)} class(es) absent from '{params.data}' ({', '.join(absent[:10])}); "
                         "the imbalance ratio uses the classes present.")
        # CI of the ratio of the observed largest to the observed smallest class. Re-picking
        # max and min in every resample would bias the interval upwards (on near-balanced
        # data it would not even contain the estimate); a ratio below 1 means "balanced".
        pc = counts[present] if present.any() else np.ones(1, np.int64)
        hi_c, lo_c = int(np.argmax(pc)), int(np.argmin(pc))
        metrics["class_imbalance_ratio"] = stats.bootstrap_counts(
            pc, lambda c: np.maximum(c[:, hi_c] / c[:, lo_c], 1.0), confidence=params.confidence,
            n_resamples=params.resamples, rng=ctx.rng(f"{self.name}:{params.data}:imbalance"), bounds=(1.0, None))

        text_notes = _text_checks(ctx, params, ds, train, metrics)
        notes.extend(text_notes.pop("notes"))
        flags = text_notes.pop("flags")

        train_counts = None
        if train is not None:
            train_counts = code_counts(_class_units(train, classes)[0], k)[:k]
            tab = np.stack([train_counts, counts])
            tab = tab[:, tab.sum(axis=0) > 0]
            if tab.shape[1] >= 2:
                # Pearson chi-square test of homogeneity (Yates' correction when 2 classes)
                metrics["label_shift_pvalue"] = Metric(stats.chi2_contingency_pvalue(tab), None)
            else:
                notes.append("Label shift is not tested: fewer than two classes occur in the two sets.")

        evidence = self._evidence(ctx, ds, train, tidx, idx, params, dup_rows, dup_conflict,
                                  overlap_rows, overlap_train, counts, train_counts, miss_total, metrics, notes,
                                  classes)
        evidence.extend(text_notes.pop("evidence"))
        return Measurement(metrics=metrics, evidence=evidence, flags=flags)

    def _evidence(self, ctx: Context, ds: Dataset, train: Dataset | None, tidx: RowIndex | None,
                  idx: RowIndex, params: IntegrityParams, dup_rows: np.ndarray, dup_conflict: int,
                  overlap_rows: np.ndarray, overlap_train: np.ndarray, counts: np.ndarray,
                  train_counts: np.ndarray | None, miss_total: int, metrics: dict[str, Metric],
                  notes: list[str], classes: list[str] | None = None) -> list[dict]:
        n = len(ds)
        classes = list(ds.classes) if classes is None else classes
        what = "entity type" if ds.kind == "tokens" else "class"
        y = np.asarray(ds.y)
        rows: list[list[Any]] = []
        if train is not None and tidx is not None:
            t_dup, t_of = tidx.duplicates()
            ty = _labels(train)
            t_levels, t_per = _missing_levels(ctx, params.train)
            rows.append([params.train, len(train), len(train) - int(t_dup.size), int(t_dup.size),
                         _conflicts(ty[t_dup], ty[t_of]), int((t_levels * t_per).sum()), None])
        overlap_conflict = None
        if overlap_rows.size and train is not None:
            overlap_conflict = _conflicts(_labels(ds)[overlap_rows], _labels(train)[overlap_train])
        rows.append([params.data, n, n - int(dup_rows.size), int(dup_rows.size), dup_conflict, miss_total,
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

        dist_cols = [what, f"{params.data} count", f"{params.data} share"]
        if train_counts is not None:
            dist_cols += [f"{params.train} count", f"{params.train} share"]
        dist_rows = []
        for c, name in enumerate(classes):
            row: list[Any] = [name, int(counts[c]), float(counts[c] / max(n, 1))]
            if train_counts is not None:
                row += [int(train_counts[c]), float(train_counts[c] / max(train_counts.sum(), 1))]
            dist_rows.append(row)
        evidence.append(table("Entity types" if ds.kind == "tokens" else "Class distribution", dist_cols, dist_rows,
                              note="True entities per type (exact spans)." if ds.kind == "tokens" else None))
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
            {"classes": list(classes), "splits": series, "title": f"{what.capitalize()} shares per split",
             "ylabel": "share of rows"},
            caption=f"Share of each class per split, with {params.confidence:.0%} bootstrap intervals."))

        if overlap_rows.size and params.max_examples and train is not None and ds.kind != "tokens":
            m = min(params.max_examples, overlap_rows.size)
            ex = [[int(overlap_rows[i]), int(overlap_train[i]), ds.classes[int(y[overlap_rows[i]])],
                   train.classes[int(train.y[overlap_train[i]])] if int(train.y[overlap_train[i]]) < len(train.classes)
                   else int(train.y[overlap_train[i]])] for i in range(m)]
            evidence.append(table(f"Rows of '{params.data}' also in '{params.train}' (first {m})",
                                  [f"{params.data} row", f"{params.train} row", f"{params.data} label",
                                   f"{params.train} label"], ex))
        return evidence
