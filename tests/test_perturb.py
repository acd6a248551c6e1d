"""Text perturbations (audit.perturb): label-preserving edits, re-aligned for token
classification, and the text transforms for domains built on them."""

from __future__ import annotations

import numpy as np
import pytest

from audit.dataset import Dataset
from audit.perturb import (EXPANSIONS, expected_tags, perturb_text, perturb_words)
from audit.transforms import apply_transform


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_text_perturbations_change_the_text_and_are_seeded() -> None:
    t = "The plot is not dull, and it is a great read."
    for name in ("typos", "case", "punctuation", "whitespace", "contractions"):
        a, b = perturb_text(name, t, rng()), perturb_text(name, t, rng())
        assert a is not None and a != t and a == b, name
    assert perturb_text("case", t, rng()) == t.lower()
    assert perturb_text("punctuation", t, rng()) == t[:-1]
    assert perturb_text("contractions", t, rng()) == "The plot isn't dull, and it's a great read."
    assert perturb_text("contractions", "it isn't", rng()) == "it is not"
    assert perturb_text("contractions", "no pair here", rng()) is None  # does not apply: not counted
    assert all(" " in k for k in EXPANSIONS.values())


def test_word_perturbations_keep_the_alignment() -> None:
    words = ["Maria", "Lopez", "do", "not", "live", "in", "New", "York", "."]
    tags = ["B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "I-LOC", "O"]
    e = perturb_words("contractions", words, tags, rng())
    assert e.words == ["Maria", "Lopez", "don't", "live", "in", "New", "York", "."]
    assert e.origin == [0, 1, 2, 4, 5, 6, 7, 8] and e.tags == [t for i, t in enumerate(tags) if i != 3]
    e = perturb_words("punctuation", words, tags, rng())
    assert e.words == words[:-1] and e.origin == list(range(8))
    e = perturb_words("entity_swap", words, tags, rng())
    assert len(e.swaps) == 2 and e.words != words
    ns, ne, os_, oe = e.swaps[0]
    assert (os_, oe) == (0, 1) and e.tags[ns] == "B-PER" and all(t == "I-PER" for t in e.tags[ns + 1:ne + 1])
    assert e.tags[e.swaps[1][0]] == "B-LOC"
    # an invariant model: its predictions on the original carried over through the alignment
    pred = ["B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "O", "O"]  # it missed "York"
    exp = expected_tags(e, pred)
    assert exp[ns] == "B-PER" and exp[e.swaps[1][0]] == "B-LOC" and len(exp) == len(e.words)
    assert perturb_words("whitespace", words, tags, rng()) is None  # pre-split words: nothing to do
    typo = perturb_words("typos", words, tags, rng(), rate=0.5)
    assert len(typo.words) == len(words) and typo.tags == tags and typo.words != words


def test_text_transforms_make_domains_of_raw_text_and_words() -> None:
    texts = ["It is a Great Book .", "It was not dull !"]
    ds = Dataset("t", np.zeros((2, 3), np.int64), np.array([1, 0]), "text", ["n", "p"],
                 meta={"texts": texts, "tokenizer": {"type": "word"}})
    out = apply_transform(ds, "case", 5, rng())
    assert out.meta["texts"] == [t.lower() for t in texts] and out.x.shape == (2, 0)  # re-encoded by the loader
    assert "tokenizer" not in out.meta and out.meta["transform"] == "case"
    tok = Dataset("s", np.zeros((1, 0), np.int64), np.array([[1, 2, 0, 0]]), "tokens", ["O", "B-PER", "I-PER"],
                  meta={"words": [["Ann", "Lee", "said", "."]]})
    out = apply_transform(tok, "punctuation", 5, rng())
    assert out.meta["words"] == [["Ann", "Lee", "said"]] and out.y.tolist() == [[1, 2, 0]]
    with pytest.raises(Exception, match="applies to text data"):
        apply_transform(tok, "whitespace", 1, rng())
