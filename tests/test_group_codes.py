"""Group codes of fairness.group from the bytes of fixed-width string arrays equal the ones
from Python strings (pandas' factorize), in the same sorted label order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.dataset import Dataset
from checks.fairness import group_gaps
from checks.fairness.group_gaps import _factorize, make_groups


def _by_strings(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(pd.Series(values.astype(object)))
    labels = [str(u) for u in uniques]
    order = np.argsort(np.array(labels, dtype=object), kind="stable")
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels))
    return rank[codes], [labels[i] for i in order]


VALUES = {
    "short": ["Male", "Female"],
    "long": ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"],
    "odd widths and empty": ["", "a", "ab", "abc", "abcd", "abcde"],
    "non-ascii": ["Müller", "Muller", "日本", "日本語", "é"],
    "shared prefixes": ["group-000000001", "group-000000002", "group-000000010", "group-0000000010"],
}


@pytest.mark.parametrize("name", sorted(VALUES))
@pytest.mark.parametrize("kind", ["U", "S"])
def test_fixed_width_codes_equal_string_codes(name: str, kind: str) -> None:
    if kind == "S" and name == "non-ascii":
        pytest.skip("bytes arrays hold ASCII")
    rng = np.random.default_rng(0)
    values = np.array(VALUES[name])[rng.integers(0, len(VALUES[name]), 5000)]
    if kind == "S":
        values = values.astype("S")
    codes, labels = _factorize(values)
    ref_codes, ref_labels = _by_strings(values)  # bytes label as str(bytes), as before
    assert labels == ref_labels
    np.testing.assert_array_equal(codes, ref_codes)


def _check(values: np.ndarray) -> None:
    codes, labels = _factorize(values)
    ref_codes, ref_labels = _by_strings(values)
    assert labels == ref_labels
    np.testing.assert_array_equal(codes, ref_codes)


# Values of at most 8 code points below 256 are packed exactly into one uint64 per row (no
# hash); anything else is hashed with a collision guard. Both sides of that line, and
# pairs a packing or a hash that drops bits would merge:
EXACT = {
    "last char differs": ["abcdefg1", "abcdefg2", "abcdefg", "bbcdefg1"],
    "empty and short": ["", "a", "b", "ab", "ba"],
    "latin-1": ["é", "e", "ÿ", "\x80", "Zürich"],
    "planted: a packing without the 8-bit check merges": ["a", "b", "\x01a"],
}
HASHED = {
    "nine chars": ["abcdefgh1", "abcdefgh2", "abcdefgh", "abcdefghi"],
    "above latin-1": ["Ā", "\x00", "日", "é"],
    # ignoring the upper bits of a code point (256 -> 0) would merge these two
    "planted: code point 256 vs 1 three chars on": ["a\u0100", "a\x00\x00\x01", "a"],
    "long shared prefix": ["x" * 40 + "1", "x" * 40 + "2", "x" * 41, "x" * 40],
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_short_values_are_packed_exactly(name: str) -> None:
    values = np.array(EXACT[name])[np.random.default_rng(0).integers(0, len(EXACT[name]), 2000)]
    assert group_gaps._exact_keys(values, group_gaps._words(values)) is not None  # the path under test
    _check(values)
    _check(values[::-1])  # another order of first appearance


@pytest.mark.parametrize("name", sorted(HASHED))
def test_other_values_are_hashed(name: str) -> None:
    values = np.array(HASHED[name])[np.random.default_rng(0).integers(0, len(HASHED[name]), 2000)]
    assert group_gaps._exact_keys(values, group_gaps._words(values)) is None
    assert group_gaps._hashed_codes([values]) is not None
    _check(values)


@pytest.mark.parametrize("kind", ["S1", "S3", "S8", "S9", "S16"])
def test_bytes_values(kind: str) -> None:
    width = int(kind[1:])
    pool = [b"", b"a", b"ab"[:width], (b"z" * width), (b"z" * (width - 1)) + b"y"]
    values = np.array(pool, dtype=kind)[np.random.default_rng(1).integers(0, len(pool), 1000)]
    _check(values)


@pytest.mark.parametrize("dtype", ["<U3", "<U12", "S2", "S9"])  # packed and hashed, text and bytes
def test_no_rows_and_one_row(dtype: str) -> None:
    _check(np.array([], dtype=dtype))
    _check(np.array(["ab"], dtype=dtype))


def test_a_hash_collision_falls_back_to_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = group_gaps._HASH_KEYS.copy()
    keys[:, 0] = 0  # the first hash collides for every value; the second one notices
    monkeypatch.setattr(group_gaps, "_HASH_KEYS", keys)
    values = np.array(["a" * 9, "b" * 9, "c" * 9, "b" * 9])  # too long to pack: hashed
    assert group_gaps._hashed_codes([values]) is None
    codes, labels = _factorize(values)
    assert labels == ["a" * 9, "b" * 9, "c" * 9] and codes.tolist() == [0, 1, 2, 1]
    # the intersectional hash falls back to one attribute at a time
    sex = np.array(["M", "F", "F", "M"])
    ds = Dataset("d", np.zeros((4, 1), np.float32), np.zeros(4, np.int64), "tabular", ["a", "b"],
                 sensitive={"sex": sex, "v": values})
    assert group_gaps._hashed_codes([sex, values]) is None
    g = make_groups(ds, ["sex", "v"])
    assert g.keys == [("F", "b" * 9), ("F", "c" * 9), ("M", "a" * 9), ("M", "b" * 9)]
    assert g.codes.tolist() == [2, 0, 1, 3]


def _by_tuples(columns: list[np.ndarray]) -> tuple[list[tuple[str, ...]], np.ndarray]:
    rows = list(zip(*[[str(v) for v in c] for c in columns]))
    keys = sorted(set(rows))
    index = {k: i for i, k in enumerate(keys)}
    return keys, np.array([index[r] for r in rows])


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_intersectional_hash_equals_python_tuples(n: int) -> None:
    rng = np.random.default_rng(2)
    a = rng.choice(["x", "y", "xy", ""], n)
    b = rng.choice(["y", "x", "", "Asian-Pac-Islander", "Müller"], n)  # a and b swap values: distinct keys
    c = rng.choice([b"1", b"22"], n)
    ds = Dataset("d", np.zeros((n, 1), np.float32), np.zeros(n, np.int64), "tabular", ["a", "b"],
                 sensitive={"a": a, "b": b, "c": c})
    g = make_groups(ds, ["a", "b", "c"])
    keys, codes = _by_tuples([a, b, c])
    assert g.keys == keys
    np.testing.assert_array_equal(g.codes, codes)


def test_codes_use_a_small_integer_type_and_count_the_same() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    sex = np.where(rng.random(n) < 0.5, "Female", "Male")
    ds = Dataset("d", np.zeros((n, 1), np.float32), np.zeros(n, np.int64), "tabular", ["a", "b"],
                 sensitive={"sex": sex})
    g = make_groups(ds, ["sex"])
    assert g.codes.dtype == np.int8
    y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
    np.testing.assert_array_equal(group_gaps.group_counts(g.codes, y, p, 2),
                                  group_gaps.group_counts(g.codes.astype(np.int64), y, p, 2))


def test_categorical_codes_and_missing_values() -> None:
    cat = pd.Categorical(["b", None, "a", "b"], categories=["b", "a", "unused"])
    codes, labels = _factorize(cat)
    assert [labels[c] for c in codes] == ["b", "(missing)", "a", "b"]
    codes, labels = _factorize(np.array(["x", None, "y"], dtype=object))
    assert [labels[c] for c in codes] == ["x", "(missing)", "y"]


def test_intersectional_groups_are_the_observed_combinations_in_order() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    sex = np.where(rng.random(n) < 0.5, "Female", "Male")
    race = rng.choice(["White", "Black", "Other"], n)
    race[sex == "Female"] = np.where(race[sex == "Female"] == "Other", "White", race[sex == "Female"])
    ds = Dataset("d", np.zeros((n, 1), np.float32), np.zeros(n, np.int64), "tabular", ["a", "b"],
                 sensitive={"sex": sex, "race": race})
    g = make_groups(ds, ["sex", "race"])
    pairs = sorted({(s, r) for s, r in zip(sex, race)})
    assert g.keys == pairs  # ('Female', 'Other') never occurs: no empty group
    assert [g.keys[c] for c in g.codes[:50]] == list(zip(sex[:50], race[:50]))


def test_intersectional_groups_of_categoricals_combined_in_chunks_equal_the_object_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed datasets hold sensitive columns as Categoricals (with missing values): their
    combinations, built chunk by chunk into the smallest code type, are the groups the
    object-array path finds."""
    import checks.fairness.group_gaps as gg
    from audit.dataset import Dataset

    rng = np.random.default_rng(0)
    n = 5000
    a = rng.choice(np.array(["x", "y", "zz", None], dtype=object), n)
    b = rng.choice([f"c{i}" for i in range(140)], n).astype(object)

    def groups(sa: object, sb: object) -> gg.Groups:
        ds = Dataset("t", np.zeros((n, 1), np.float32), np.zeros(n, np.int64), "tabular", ["0", "1"],
                     sensitive={"a": sa, "b": sb})
        return gg.make_groups(ds, ["a", "b"])

    monkeypatch.setattr(gg, "_CHUNK_ROWS", 777)
    cat, obj = groups(pd.Categorical(a), pd.Categorical(b)), groups(a, b)
    assert cat.keys == obj.keys and ("(missing)", "c0") in cat.keys
    assert cat.codes.dtype == np.int16 and len(cat.keys) > 127
    np.testing.assert_array_equal(cat.codes, obj.codes)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64])
def test_code_counts_in_chunks_equal_bincount(dtype: type) -> None:
    from audit.dataset import code_counts

    codes = np.random.default_rng(3).integers(0, 100, 10_001).astype(dtype)
    for minlength in (0, 5, 120):
        want = np.bincount(codes.astype(np.int64), minlength=minlength)
        assert np.array_equal(code_counts(codes, minlength, chunk=64), want)
        assert np.array_equal(code_counts(codes, minlength), want)
    assert code_counts(np.zeros(0, np.int8), 3).tolist() == [0, 0, 0]
