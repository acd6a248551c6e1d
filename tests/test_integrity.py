"""data.integrity: planted leakage and duplicates are caught exactly; label shift against
scipy; a missing train set omits only the metrics that need it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import SpecError
from audit.lazy import row_words
from audit.spec import parse_spec
from checks.data import integrity
from checks.data.integrity import DataIntegrity, RowIndex

CLASSES = ["a", "b", "c"]


def images(n: int, seed: int, p: tuple[float, ...] = (0.5, 0.3, 0.2)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6), dtype=np.float32), rng.choice(3, size=n, p=p).astype(np.int64)


def model() -> LoadedModel:
    return LoadedModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)), "0" * 64, "test", "linear")


def ctx_of(**datasets: tuple[np.ndarray, np.ndarray]) -> Context:
    return Context.from_objects({name: Dataset(name, x, y, "image", CLASSES) for name, (x, y) in datasets.items()},
                                model())


def run(ctx: Context, **params: object):
    return DataIntegrity().run(ctx, DataIntegrity.Params(resamples=1000, **params))


def test_planted_leak_is_caught_with_the_exact_fraction() -> None:
    xtr, ytr = images(900, seed=1)
    xte, yte = images(400, seed=2)
    rng = np.random.default_rng(3)
    k = 37
    test_rows = np.sort(rng.choice(np.arange(1, 400), k, replace=False))
    train_rows = rng.choice(900, k, replace=False)
    xte[test_rows] = xtr[train_rows]
    # a near-copy differing in one value by one ulp is not an exact duplicate
    xte[0] = xtr[5]
    xte[0, 0, 0, 0] = np.nextafter(xte[0, 0, 0, 0], np.float32(2))
    m = run(ctx_of(train=(xtr, ytr), test=(xte, yte)))
    overlap = m.metrics["train_test_overlap"]
    assert overlap.value == k / 400
    assert overlap.ci[0] < k / 400 < overlap.ci[1]
    examples = next(e for e in m.evidence if e["type"] == "table" and e["title"].startswith("Rows of"))
    assert [r[:2] for r in examples["rows"]] == [[int(t), int(r)] for t, r in zip(test_rows[:10], train_rows[:10])]


def test_clean_split_has_no_overlap_and_planted_duplicates_are_counted() -> None:
    xtr, ytr = images(500, seed=4)
    xte, yte = images(300, seed=5)
    xte[10:22], yte[10:22] = xte[100:112], yte[100:112]  # 12 exact copies inside the test set
    xte[50] = xte[60]
    yte[50] = (yte[60] + 1) % 3  # a copy with a conflicting label
    m = run(ctx_of(train=(xtr, ytr), test=(xte, yte)))
    assert m.metrics["train_test_overlap"].value == 0.0
    # 0 of 300: the exact (Clopper-Pearson) interval, never zero width: 1 - 0.025 ** (1 / 300)
    assert m.metrics["train_test_overlap"].ci == pytest.approx((0.0, 1 - 0.025 ** (1 / 300)), abs=1e-9)
    assert m.metrics["duplicate_fraction"].value == 13 / 300
    splits = next(e for e in m.evidence if e["title"] == "Splits")
    test_row = splits["rows"][1]
    assert test_row[:5] == ["test", 300, 287, 13, 1]


def test_label_shift_pvalue_equals_scipy_and_detects_shift() -> None:
    xtr, ytr = images(1000, seed=6, p=(0.5, 0.3, 0.2))
    xte, yte = images(500, seed=7, p=(0.5, 0.3, 0.2))
    xsh, ysh = images(500, seed=8, p=(0.2, 0.3, 0.5))
    ctx = ctx_of(train=(xtr, ytr), test=(xte, yte), shifted=(xsh, ysh))
    same = run(ctx)
    shifted = run(ctx, data="shifted")
    ref = chi2_contingency(np.stack([np.bincount(ytr, minlength=3), np.bincount(yte, minlength=3)])).pvalue
    assert same.metrics["label_shift_pvalue"].value == pytest.approx(ref, rel=1e-12)
    assert same.metrics["label_shift_pvalue"].ci is None
    assert same.metrics["label_shift_pvalue"].value > 0.01
    assert shifted.metrics["label_shift_pvalue"].value < 1e-10
    counts = np.bincount(ysh, minlength=3)
    ratio = shifted.metrics["class_imbalance_ratio"]
    assert ratio.value == pytest.approx(counts.max() / counts.min())
    assert 1.0 <= ratio.ci[0] < ratio.value < ratio.ci[1]


def test_balanced_classes_have_ratio_ci_from_one() -> None:
    x, _ = images(600, seed=10)
    y = np.repeat([0, 1, 2], 200)
    y[:3] = 1  # 197 / 203 / 200
    m = run(ctx_of(test=(x, y)))
    ratio = m.metrics["class_imbalance_ratio"]
    assert ratio.value == pytest.approx(203 / 197)
    assert ratio.ci[0] == 1.0 and ratio.value < ratio.ci[1] < 1.5


def test_without_train_only_train_metrics_are_omitted() -> None:
    xte, yte = images(200, seed=9)
    m = run(ctx_of(test=(xte, yte)))
    assert "train_test_overlap" not in m.metrics and "label_shift_pvalue" not in m.metrics
    assert {"duplicate_fraction", "missing_fraction", "class_imbalance_ratio"} <= set(m.metrics)
    assert any("No 'train' dataset" in (e.get("text") or e.get("note") or "") for e in m.evidence)


def test_missing_values_are_counted() -> None:
    # loaders reject NaN features; an in-memory dataset can still carry them
    x = np.zeros((50, 4), np.float32)
    x[:5, 0] = np.nan
    x[7, :] = np.nan
    y = np.arange(50) % 3
    ds = Dataset("test", x, y, "tabular", CLASSES)
    ctx = Context.from_objects({"test": ds}, LoadedModel(torch.nn.Linear(4, 3), "0" * 64, "t", "linear"))
    m = run(ctx)
    assert m.metrics["missing_fraction"].value == pytest.approx(9 / 200)
    lo, hi = m.metrics["missing_fraction"].ci
    assert 0 < lo < 9 / 200 < hi


def test_row_index_confirms_bytes() -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    x[7] = x[2]
    idx = RowIndex.of(x)
    dup, of = idx.duplicates()
    assert dup.tolist() == [7] and of.tolist() == [2]
    hit, where = idx.find(RowIndex.of(np.stack([x[3], x[3] + 0.5, x[9]])))
    assert hit.tolist() == [0, 2] and where.tolist() == [3, 9]


def test_unknown_reference_dataset_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="unknown dataset 'trian'"):
        parse_spec({"name": "x", "model": {"fixture": "digits-cnn"},
                    "data": {"test": {"fixture": "digits", "split": "test"}},
                    "checks": [{"id": "d", "check": "data.integrity", "train": "trian"}]})


def _reference(x: np.ndarray, y: np.ndarray) -> tuple[list[int], list[int], list[int], list[int]]:
    """Duplicates of x and rows of y also in x, from a dict of each row's bytes."""
    first: dict[bytes, int] = {}
    dup, dup_of = [], []
    for i, row in enumerate(x):
        j = first.setdefault(row.tobytes(), i)
        if j != i:
            dup.append(i)
            dup_of.append(j)
    hits = [(i, first[row.tobytes()]) for i, row in enumerate(y) if row.tobytes() in first]
    return dup, dup_of, [i for i, _ in hits], [j for _, j in hits]


@pytest.mark.parametrize("chunk", [1 << 20, 64])  # one chunk, and many (offsets across chunks)
@pytest.mark.parametrize("levels", [3, 1000, None])  # mostly copies, some, only the planted ones
def test_row_index_matches_a_dict_of_row_bytes_with_planted_copies_and_collisions(
        levels: int | None, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(integrity, "_SCAN_ROWS", chunk)
    rng = np.random.default_rng(11)
    n, m = 2000, 1500

    def rows(k: int) -> np.ndarray:
        return (rng.random((k, 5)) if levels is None else rng.integers(0, levels, (k, 5))).astype(np.float32)

    x, y = rows(n), rows(m)
    x[rng.choice(n, 100)] = x[rng.choice(n, 100)]  # copies in either direction
    y[rng.choice(m, 80)] = x[rng.choice(n, 80)]  # rows of y also in x
    y[-1] = x[-1]  # the last row of each
    hx, hy = RowIndex.of(x).hashes.copy(), RowIndex.of(y).hashes.copy()
    dup, dup_of, hit, where = _reference(x, y)
    if levels is None:
        # plant hash collisions between different rows (rows that have no copy, so the
        # reference is unchanged): only the byte comparison can rule them out
        ux = [i for i in range(n) if i not in dup and i not in dup_of and i not in where]
        uy = [i for i in range(m) if i not in hit]
        hx[ux[5]] = hx[ux[0]]
        hx[ux[6]] = hx[ux[0]]
        hy[uy[0]] = hx[ux[1]]
        hy[uy[1]] = hx[ux[0]]
        # and collisions that put a different row first among a copied row's hash: the
        # copy must still be found (a row is not only compared with its hash's first row)
        i, j = max(zip(dup, dup_of), key=lambda p: p[1])
        a = next(r for r in ux[10:] if r < j)
        hx[a] = hx[j]
        r, j2 = max(zip(hit, where), key=lambda p: p[1])
        a2 = next(q for q in ux[10:] if q < j2 and q != a)
        hx[a2] = hx[j2]
        assert hy[r] == hx[j2] and hx[i] == hx[j]
    wx, wy = row_words(x), row_words(y)
    ix = RowIndex.from_hashes(hx, lambda i: wx[i], wx.shape[1])
    iy = RowIndex.from_hashes(hy, lambda i: wy[i], wy.shape[1])
    got_dup, got_of = ix.duplicates()
    got_hit, got_where = ix.find(iy)
    assert (got_dup.tolist(), got_of.tolist()) == (dup, dup_of)
    assert (got_hit.tolist(), got_where.tolist()) == (hit, where)
    assert len(hit) >= 50 and len(dup) >= 50
    if levels is None:
        assert np.unique(hx).size < n - len(dup) and len(set(hy) & set(hx)) > len(set(where))  # collisions are in


def test_row_index_degenerate_cases() -> None:
    same = np.ones((50, 3), np.float32)
    dup, of = RowIndex.of(same).duplicates()
    assert dup.tolist() == list(range(1, 50)) and of.tolist() == [0] * 49
    hit, where = RowIndex.of(same).find(RowIndex.of(same[:4]))
    assert hit.tolist() == [0, 1, 2, 3] and where.tolist() == [0] * 4
    full = RowIndex.of(same)
    # (row_words cannot view 0 rows: an empty set built from its (0,) hashes)
    empty = RowIndex.from_hashes(np.zeros(0, np.uint64), lambda i: np.zeros((len(i), 2), np.uint64), 2)
    for a, b in [(empty, full), (full, empty), (empty, empty)]:
        hit, where = a.find(b)
        assert hit.size == where.size == 0 and hit.dtype == where.dtype == np.int64
    dup, of = empty.duplicates()
    assert dup.size == of.size == 0 and dup.dtype == of.dtype == np.int64
    # rows of another width are never found, even with equal hashes
    narrow = RowIndex.of(same)
    wide = RowIndex.from_hashes(narrow.hashes, lambda i: np.zeros((len(i), 3), np.uint64), 3)
    assert narrow.find(wide)[0].size == 0 and wide.find(narrow)[0].size == 0


def _by_value(h: list[int]) -> RowIndex:
    """An index whose rows are their own hashes (one word each)."""
    a = np.array(h, np.uint64)
    return RowIndex.from_hashes(a, lambda i: a[i].reshape(-1, 1), 1)


def test_row_index_finds_the_smallest_and_largest_hashes() -> None:
    top = 2**64 - 1
    big, small = _by_value([top, 5, 0, 9, top, 0, 7]), _by_value([8, 0, top])
    assert [r.tolist() for r in big.duplicates()] == [[4, 5], [0, 2]]
    assert [r.tolist() for r in big.find(small)] == [[1, 2], [2, 0]]
    assert [r.tolist() for r in small.find(big)] == [[0, 2, 4, 5], [2, 1, 2, 1]]


def test_hashes_that_share_only_their_top_32_bits_are_told_apart() -> None:
    # RowIndex sorts the hashes' top 32 bits; rows are then matched by their full hash
    p = 0x12345678 << 32
    big, small = _by_value([p | 1, p | 2, p | 1, p | 3, 5]), _by_value([p | 2, p | 4, 5, p | 1])
    assert [r.tolist() for r in big.duplicates()] == [[2], [0]]
    assert [r.tolist() for r in big.find(small)] == [[0, 2, 3], [1, 4, 0]]
    assert [r.tolist() for r in small.find(big)] == [[0, 1, 2, 4], [3, 0, 3, 2]]
    assert [r.tolist() for r in _by_value([p | 1, p | 2, p | 3]).duplicates()] == [[], []]


def test_token_ids_padded_to_different_widths_are_compared_at_one_width() -> None:
    rng = np.random.default_rng(12)
    xtr = np.zeros((300, 9), np.int64)  # right-padded with pad id 0
    xte = np.zeros((200, 6), np.int64)
    for x in (xtr, xte):
        for row, k in zip(x, rng.integers(1, x.shape[1] + 1, len(x))):
            row[:k] = rng.integers(1, 50, k)
    xte[:20, :5] = xtr[:20, :5]
    xte[:20, 5] = 0
    xtr[:20, 5:] = 0  # 20 test rows also in train once padded to one width
    xte[30] = xte[40]  # and one copy inside the test set
    y = lambda n: np.arange(n) % 3
    ctx = Context.from_objects({"train": Dataset("train", xtr, y(300), "text", CLASSES, meta={"pad_id": 0}),
                                "test": Dataset("test", xte, y(200), "text", CLASSES, meta={"pad_id": 0})}, model())
    m = run(ctx)
    # the reference: row bytes at width 9
    pad = np.zeros((200, 9), np.int64)
    pad[:, :6] = xte
    dup, _, _, _ = _reference(pad, xtr)
    _, _, test_hit, _ = _reference(xtr, pad)
    assert m.metrics["train_test_overlap"].value == len(test_hit) / 200 and len(test_hit) >= 20
    assert m.metrics["duplicate_fraction"].value == len(dup) / 200 and len(dup) >= 1


def test_repeated_prefixes_found_across_chunk_edges() -> None:
    # _repeated compares neighbours chunk by chunk; a pair split by a chunk edge still counts
    from checks.data import integrity as integ

    edge = integ._SCAN_ROWS
    rng = np.random.default_rng(5)
    for n in (0, 1, 2, edge - 1, edge, edge + 1, 2 * edge + 3):
        s = np.sort(rng.integers(0, max(n // 3, 1), n).astype(np.uint32))
        want = np.unique(s[1:][s[1:] == s[:-1]])
        assert np.array_equal(integ._repeated(s), want), n
    s = np.arange(2 * edge + 5, dtype=np.uint32)
    s[edge] = s[edge - 1]  # the only repeat: its two copies on either side of the first edge
    assert integ._repeated(np.sort(s)).tolist() == [edge - 1]
