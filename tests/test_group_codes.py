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


def test_a_hash_collision_falls_back_to_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = group_gaps._HASH_KEYS.copy()
    keys[:, 0] = 0  # the first hash collides for every value; the second one notices
    monkeypatch.setattr(group_gaps, "_HASH_KEYS", keys)
    values = np.array(["a", "b", "c", "b"])
    assert group_gaps._fixed_width_codes(values) is None
    codes, labels = _factorize(values)
    assert labels == ["a", "b", "c"] and codes.tolist() == [0, 1, 2, 1]


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
