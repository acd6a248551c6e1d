"""Token classification (named-entity recognition): tag schemes, entity spans and the
word-level view of a model's sub-token outputs.

A token-classification dataset (kind "tokens") holds one sentence per row: `y` (N, W)
word tags (-1 past the last word), `x` (N, L) sub-token ids of the model's tokenizer and
`word_starts` (N, W) the position of each word's first sub-token (-1 when the word was
truncated away). A word's prediction is that of its first sub-token, the Hugging Face
convention (`transformers`' token-classification pipeline with `aggregation_strategy=
"first"`, and the label alignment its examples train with). A word lost to truncation
gets no prediction: it counts as predicted `O` (no entity), so truncation costs recall
and is reported.

Entities are the spans seqeval finds (`seqeval.metrics.sequence_labeling.get_entities`,
the conlleval rules, ported here to run on tag indices; the tests hold it equal to seqeval): an `I-X` after `O` or after another type starts an entity, as in
IOB1. In an IOB2 file such an `I-X` is an error of the data, and `invalid_iob` lists
them (data.integrity reports them; nothing is silently fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTSIDE = "O"


def tag_parts(tag: str) -> tuple[str, str]:
    """('B' | 'I' | 'O' | other prefix, entity type) of an IOB tag."""
    if tag == OUTSIDE or "-" not in tag:
        return (tag, "") if tag == OUTSIDE else (tag[:1], tag[1:])
    prefix, _, typ = tag.partition("-")
    return prefix, typ


def entity_types(classes: Sequence[str]) -> list[str]:
    """The entity types a tag set names, in first-seen order (B-PER, I-PER -> PER)."""
    out: list[str] = []
    for c in classes:
        prefix, typ = tag_parts(c)
        if prefix in ("B", "I", "E", "S") and typ and typ not in out:
            out.append(typ)
    return out


def outside_index(classes: Sequence[str]) -> int | None:
    return list(classes).index(OUTSIDE) if OUTSIDE in classes else None


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of one sentence as (type, first word, last word), by seqeval's rules."""
    return _chunks([_parse(t) for t in tags])


def _parse(chunk: str) -> tuple[str, str]:
    """seqeval's reading of a tag (prefix mode): (first letter, type after the dash or '_')."""
    return chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"


def _chunks(parsed: Sequence[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """seqeval.metrics.sequence_labeling.get_entities over pre-parsed tags: the same
    end_of_chunk / start_of_chunk rules (B, I, E, S, O), without re-parsing strings.
    tests/test_ner.py holds it equal to seqeval."""
    prev_tag, prev_type, begin = "O", "", 0
    out: list[tuple[str, int, int]] = []
    for i, (tag, typ) in enumerate([*parsed, ("O", "_")]):
        end = (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
               or (prev_tag not in ("O", ".") and prev_type != typ))
        if end:
            out.append((prev_type, begin, i - 1))
        start = (tag in ("B", "S") or (prev_tag in ("E", "S") and tag in ("E", "I"))
                 or (prev_tag == "O" and tag in ("E", "I")) or (tag not in ("O", ".") and prev_type != typ))
        if start:
            begin = i
        prev_tag, prev_type = tag, typ
    return out


def infer_scheme(sentences: Sequence[Sequence[str]]) -> str:
    """IOB2 when some entity starts with B- after O (or at the start of a sentence), which
    IOB1 never does; IOB1 when I- starts entities and B- only separates two of one type;
    IOB2 when undecided (no entity at all)."""
    b_after_outside = i_starts = False
    for tags in sentences:
        prev_p, prev_t = OUTSIDE, ""
        for tag in tags:
            p, t = tag_parts(tag)
            if p == "B" and (prev_p == OUTSIDE or prev_t != t):
                b_after_outside = True
            if p == "I" and (prev_p == OUTSIDE or prev_t != t):
                i_starts = True
            prev_p, prev_t = p, t
    if b_after_outside or not i_starts:
        return "IOB2"
    return "IOB1"


@dataclass(frozen=True)
class InvalidTag:
    sentence: int
    word: int
    tag: str
    previous: str  # the tag before it ('' at the start of the sentence)


def invalid_iob(sentences: Sequence[Sequence[str]], scheme: str) -> list[InvalidTag]:
    """Tags that break the scheme: in IOB2 an I-X that does not follow B-X or I-X (it
    cannot continue an entity); in IOB1 a B-X that does not follow an X entity. Tags
    without a B-/I- prefix other than O are listed too."""
    out: list[InvalidTag] = []
    for s, tags in enumerate(sentences):
        prev = ""
        for w, tag in enumerate(tags):
            p, t = tag_parts(tag)
            pp, pt = tag_parts(prev) if prev else (OUTSIDE, "")
            bad = p not in ("B", "I", OUTSIDE) or (p != OUTSIDE and not t)
            if scheme == "IOB2" and p == "I" and not (pp in ("B", "I") and pt == t):
                bad = True
            if scheme == "IOB1" and p == "B" and not (pp in ("B", "I") and pt == t):
                bad = True
            if bad:
                out.append(InvalidTag(s, w, tag, prev))
            prev = tag
    return out


# ---- word-level outputs --------------------------------------------------------------------
def gather_words(sub_logits: np.ndarray, word_starts: np.ndarray) -> np.ndarray:
    """(N, W, K) logits of each word's first sub-token from (N, L, K) sub-token logits; 0
    where a word has none (past the sentence, or truncated)."""
    n, w = word_starts.shape
    k = sub_logits.shape[-1]
    pos = np.clip(word_starts, 0, max(sub_logits.shape[1] - 1, 0))
    out = np.take_along_axis(sub_logits, pos[:, :, None].repeat(k, axis=2), axis=1) if w else \
        np.zeros((n, 0, k), np.float32)
    return np.where((word_starts >= 0)[:, :, None], out, 0.0).astype(np.float32)


def word_predictions(word_logits: np.ndarray, word_starts: np.ndarray, y: np.ndarray,
                     classes: Sequence[str]) -> np.ndarray:
    """(N, W) predicted tag indices: the arg-max of each word's first sub-token; `O` for a
    word lost to truncation; -1 past the sentence."""
    pred = word_logits.argmax(axis=-1).astype(np.int64)
    o = outside_index(classes)
    pred = np.where(word_starts >= 0, pred, -1 if o is None else o)
    return np.where(y >= 0, pred, -1)


def tag_names(row: np.ndarray, classes: Sequence[str]) -> list[str]:
    """The tags of one sentence's row of indices (stops at the first -1)."""
    out = []
    for v in row:
        if v < 0:
            break
        out.append(classes[int(v)])
    return out


@dataclass
class EntityCounts:
    """Per-sentence entity counts by type: `tp`, `pred`, `gold` are (N, T) arrays of the
    exact-span matches, predicted entities and true entities of each type; `words` and
    `correct` the (N,) word counts and correctly tagged words."""

    types: list[str]
    tp: np.ndarray
    pred: np.ndarray
    gold: np.ndarray
    words: np.ndarray
    correct: np.ndarray

    @property
    def n(self) -> int:
        return int(self.tp.shape[0])


def entity_counts(y: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                  types: Sequence[str] | None = None) -> EntityCounts:
    """Exact-span entity matches per sentence and type (seqeval's definition: an entity
    is right when its type, first and last word all match)."""
    types = list(types) if types is not None else entity_types(classes)
    index = {t: i for i, t in enumerate(types)}
    parsed = [_parse(c) for c in classes]
    n = y.shape[0]
    tp = np.zeros((n, len(types)), np.int64)
    npred = np.zeros_like(tp)
    ngold = np.zeros_like(tp)
    words = (y >= 0).sum(axis=1).astype(np.int64)
    correct = ((y == pred) & (y >= 0)).sum(axis=1).astype(np.int64)
    ys, ps = y.tolist(), pred.tolist()
    for i in range(n):
        g = _chunks([parsed[v] for v in _until_pad(ys[i])])
        p = _chunks([parsed[v] for v in _until_pad(ps[i])])
        for t, _, _ in g:
            if t not in index:
                index[t] = len(types)
                types.append(t)
        for t, _, _ in p:
            if t not in index:
                index[t] = len(types)
                types.append(t)
        if len(types) > tp.shape[1]:
            grow = len(types) - tp.shape[1]
            tp, npred, ngold = (np.pad(a, ((0, 0), (0, grow))) for a in (tp, npred, ngold))
        gs = set(g)
        for t, a, b in g:
            ngold[i, index[t]] += 1
        for t, a, b in p:
            npred[i, index[t]] += 1
            if (t, a, b) in gs:
                tp[i, index[t]] += 1
    return EntityCounts(types, tp, npred, ngold, words, correct)


def _until_pad(row: list[int]) -> list[int]:
    try:
        return row[: row.index(-1)]
    except ValueError:
        return row


def f1_from(tp: np.ndarray, pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """F1 = 2 tp / (pred + gold), 0 when there is neither (seqeval's zero division)."""
    den = pred + gold
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 2.0 * tp / np.where(den > 0, den, 1), 0.0)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
