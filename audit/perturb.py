"""Perturbations a user's text meets, label-preserving by construction (CheckList's
invariance tests are the model: Ribeiro et al., 2020, "Beyond Accuracy").

Each perturbation works on a raw text (`perturb_text`) or on a sentence of words with
their tags (`perturb_words`), draws from the caller's generator, and returns None when
it does not apply to that sample (no word long enough for a typo, no contraction to
expand or make): such samples are not counted as perturbed. A word-level perturbation
returns the new words and tags and, for every new word, the original word it comes from
(`origin`, -1 for an inserted word) and the entity spans it swapped, so that a token
classifier's predictions can be compared word for word ("re-aligned").

* typos: in `rate` of the words of 3+ letters, swap two neighbouring letters, drop one,
  double one, or hit a neighbouring key (CheckList's `Perturb.add_typos`).
* case: lower-case everything, or when already lower-case, capitalise every word.
* punctuation: drop the final punctuation, or add "!" when there is none.
* whitespace (text only): double spaces between some words, a space before punctuation
  removed or added, leading and trailing blanks. Pre-split words have no whitespace.
* contractions: expand ("isn't" -> "is not") or contract ("is not" -> "isn't"),
  CheckList's `Perturb.expand_contractions` / `contract`.
* entity_swap (words with tags only): each entity is replaced by another of the same
  type, from our name lists for PER, LOC, ORG and MISC, else from the other entities of
  that type in the data; the tags are rewritten for the new span (B- then I-).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PERTURBATIONS: dict[str, str] = {
    "typos": "character typos (swap, drop, double, neighbouring key) in a share of the words",
    "case": "all lower case, or every word capitalised when already lower case",
    "punctuation": "final punctuation dropped, or '!' added",
    "whitespace": "extra spaces, spacing around punctuation, leading and trailing blanks",
    "contractions": "contractions expanded or made (isn't <-> is not)",
    "entity_swap": "each entity swapped for another of the same type (token classification)",
}
TEXT_ONLY = ("whitespace",)
WORDS_ONLY = ("entity_swap",)

_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD):
    for _c, _ch in enumerate(_row):
        near = [_row[_c - 1] if _c > 0 else "", _row[_c + 1] if _c + 1 < len(_row) else ""]
        for _rr in (_r - 1, _r + 1):
            if 0 <= _rr < len(_KEYBOARD) and _c < len(_KEYBOARD[_rr]):
                near.append(_KEYBOARD[_rr][_c])
        _NEIGHBOURS[_ch] = "".join(near)

# CheckList's contraction table (a subset), both ways
CONTRACTIONS = {
    "is not": "isn't", "are not": "aren't", "was not": "wasn't", "were not": "weren't", "do not": "don't",
    "does not": "doesn't", "did not": "didn't", "can not": "can't", "cannot": "can't", "could not": "couldn't",
    "will not": "won't", "would not": "wouldn't", "should not": "shouldn't", "have not": "haven't",
    "has not": "hasn't", "had not": "hadn't", "it is": "it's", "that is": "that's", "there is": "there's",
    "i am": "i'm", "you are": "you're", "we are": "we're", "they are": "they're", "he is": "he's",
    "she is": "she's", "i have": "i've", "i will": "i'll", "let us": "let's", "what is": "what's",
}
EXPANSIONS = {v: k for k, v in CONTRACTIONS.items() if k != "cannot"}

# entity lists for swaps (types of CoNLL-2003); other types swap among the data's own entities
ENTITY_LISTS: dict[str, list[str]] = {
    "PER": ["Ada Okafor", "Luis Moreno", "Aiko Mori", "Nikhil Rao", "Fatima Haddad", "Sean Murphy", "Olga Petrova",
            "Kwame Mensah", "Ingrid Larsen", "Tomas Novak", "Amara", "Jonas", "Mariam Khan", "Chen Jie"],
    "LOC": ["Lisbon", "Accra", "Vancouver", "Kyoto", "Santiago", "Dublin", "Hanoi", "Cairo", "Rio de Janeiro",
            "San Francisco", "Krakow", "Perth", "Bogota", "Zurich"],
    "ORG": ["Helix Insurance", "Northwind Traders", "Greenleaf Foundation", "Pioneer Rail", "Silverline Telecom",
            "Maple University", "Coastal Water Board", "Vertex Pharma", "Union Gas", "Bright Books"],
    "MISC": ["Super Bowl", "Italian", "Booker Prize", "Champions League", "Brazilian", "Cannes Festival",
             "Wimbledon", "Dutch", "Oscars", "Ryder Cup"],
}

_WORD = re.compile(r"[A-Za-z]{3,}")
_PUNCT_END = re.compile(r"\s*[.!?]+\s*$")


@dataclass
class WordEdit:
    """A perturbed sentence of words, re-aligned to the original."""

    words: list[str]
    tags: list[str]
    origin: list[int]  # original word of each new word; -1 for an inserted word
    # swapped entity spans: (new first, new last, original first, original last)
    swaps: list[tuple[int, int, int, int]] = field(default_factory=list)


def _typo(word: str, rng: np.random.Generator) -> str:
    kind = int(rng.integers(4))
    i = int(rng.integers(len(word) - 1))
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop one
        return word[:i] + word[i + 1:]
    if kind == 2:  # double one
        return word[:i] + word[i] + word[i:]
    ch = word[i]
    near = _NEIGHBOURS.get(ch.lower(), "")
    if not near:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    rep = near[int(rng.integers(len(near)))]
    return word[:i] + (rep.upper() if ch.isupper() else rep) + word[i + 1:]


def _typo_mask(candidates: list[int], rate: float, rng: np.random.Generator) -> list[int]:
    if not candidates:
        return []
    pick = [c for c in candidates if rng.random() < rate]
    return pick or [candidates[int(rng.integers(len(candidates)))]]  # at least one typo


def _recase(words: Sequence[str]) -> list[str]:
    if any(ch.isupper() for w in words for ch in w):
        return [w.lower() for w in words]
    return [w[:1].upper() + w[1:] for w in words]


# ---- raw text -------------------------------------------------------------------------------
def perturb_text(name: str, text: str, rng: np.random.Generator, rate: float = 0.1) -> str | None:
    """`text` under perturbation `name`, or None when it does not apply (or changes nothing)."""
    if name == "typos":
        matches = list(_WORD.finditer(text))
        chosen = set(_typo_mask(list(range(len(matches))), rate, rng))
        out, last = [], 0
        for k, m in enumerate(matches):
            if k in chosen:
                out += [text[last:m.start()], _typo(m.group(), rng)]
                last = m.end()
        new = "".join(out) + text[last:]
    elif name == "case":
        new = text.lower() if any(ch.isupper() for ch in text) else re.sub(r"\b[a-z]", lambda m: m.group().upper(),
                                                                           text)
    elif name == "punctuation":
        new = _PUNCT_END.sub("", text) if _PUNCT_END.search(text) else text.rstrip() + "!"
    elif name == "whitespace":
        parts = text.split(" ")
        new = " ".join(p + (" " if rng.random() < max(rate, 0.2) else "") for p in parts)
        new = re.sub(r" ([.,;!?])", r"\1", new) if rng.random() < 0.5 else re.sub(r"(\w)([.,;!?])", r"\1 \2", new)
        new = "  " + new + " \t"
    elif name == "contractions":
        low = text
        found = [(k, v) for k, v in EXPANSIONS.items() if re.search(rf"\b{re.escape(k)}\b", low, re.I)]
        if found:
            new = low
            for k, v in found:
                new = re.sub(rf"\b{re.escape(k)}\b", v, new, flags=re.I)
        else:
            new = low
            for k, v in CONTRACTIONS.items():
                new = re.sub(rf"\b{re.escape(k)}\b", v, new, flags=re.I)
    elif name == "entity_swap":
        return None
    else:
        raise ValueError(f"unknown perturbation {name!r}")
    return new if new != text else None


# ---- words with tags --------------------------------------------------------------------------
def _type_of(tag: str) -> str:
    return tag.partition("-")[2] if "-" in tag else ""


def perturb_words(name: str, words: Sequence[str], tags: Sequence[str], rng: np.random.Generator,
                  rate: float = 0.1, inventory: dict[str, list[list[str]]] | None = None) -> WordEdit | None:
    """A sentence under perturbation `name`, re-aligned; None when it does not apply."""
    words, tags = list(words), list(tags)
    keep = list(range(len(words)))
    if name == "typos":
        cand = [i for i, w in enumerate(words) if _WORD.fullmatch(w)]
        new = list(words)
        for i in _typo_mask(cand, rate, rng):
            new[i] = _typo(words[i], rng)
        edit = WordEdit(new, tags, keep)
    elif name == "case":
        edit = WordEdit(_recase(words), tags, keep)
    elif name == "punctuation":
        if words and re.fullmatch(r"[.!?]+", words[-1]) and tags[-1] == "O":
            edit = WordEdit(words[:-1], tags[:-1], keep[:-1])
        else:
            edit = WordEdit(words + ["!"], tags + ["O"], keep + [-1])
    elif name == "contractions":
        edit = _contractions(words, tags)
        if edit is None:
            return None
    elif name == "entity_swap":
        edit = _swap(words, tags, rng, inventory or {})
        if edit is None:
            return None
    elif name == "whitespace":
        return None  # words come pre-split: there is no whitespace to perturb
    else:
        raise ValueError(f"unknown perturbation {name!r}")
    if edit.words == words:
        return None
    return edit


def _contractions(words: list[str], tags: list[str]) -> WordEdit | None:
    out_w, out_t, origin = [], [], []
    changed = False
    i = 0
    lower = [w.lower() for w in words]
    while i < len(words):
        pair = " ".join(lower[i:i + 2])
        if i + 1 < len(words) and pair in CONTRACTIONS and tags[i] == tags[i + 1] == "O":
            c = CONTRACTIONS[pair]
            out_w.append(c[0].upper() + c[1:] if words[i][:1].isupper() else c)
            out_t.append("O")
            origin.append(i)
            i += 2
            changed = True
            continue
        if lower[i] in EXPANSIONS and tags[i] == "O":
            a, b = EXPANSIONS[lower[i]].split(" ")
            out_w += [a[0].upper() + a[1:] if words[i][:1].isupper() else a, b]
            out_t += ["O", "O"]
            origin += [i, -1]
            i += 1
            changed = True
            continue
        out_w.append(words[i])
        out_t.append(tags[i])
        origin.append(i)
        i += 1
    return WordEdit(out_w, out_t, origin) if changed else None


def entity_inventory(sentences: Sequence[Sequence[str]], tag_rows: Sequence[Sequence[str]]) -> dict[str, list[list[str]]]:
    """The entities of each type in the data (for swaps of types we have no list for)."""
    from audit.tokens import spans

    inv: dict[str, list[list[str]]] = {}
    for words, tags in zip(sentences, tag_rows):
        for t, a, b in spans(tags):
            span = list(words[a:b + 1])
            if span not in inv.setdefault(t, []):
                inv[t].append(span)
    return inv


def _swap(words: list[str], tags: list[str], rng: np.random.Generator,
          inventory: dict[str, list[list[str]]]) -> WordEdit | None:
    from audit.tokens import spans

    found = spans(tags)
    if not found:
        return None
    out_w: list[str] = []
    out_t: list[str] = []
    origin: list[int] = []
    swaps: list[tuple[int, int, int, int]] = []
    pos = 0
    lower = all(w == w.lower() for w in words)
    for t, a, b in found:
        for j in range(pos, a):
            out_w.append(words[j])
            out_t.append(tags[j])
            origin.append(j)
        old = words[a:b + 1]
        pool = [e.split() for e in ENTITY_LISTS.get(t, [])] or inventory.get(t, [])
        pool = [p for p in pool if p != old]
        if not pool:
            new = list(old)
        else:
            new = list(pool[int(rng.integers(len(pool)))])
            if lower:
                new = [w.lower() for w in new]
        start = len(out_w)
        out_w += new
        out_t += [f"B-{t}"] + [f"I-{t}"] * (len(new) - 1)
        origin += [a] + [-1] * (len(new) - 1)
        swaps.append((start, len(out_w) - 1, a, b))
        pos = b + 1
    for j in range(pos, len(words)):
        out_w.append(words[j])
        out_t.append(tags[j])
        origin.append(j)
    return WordEdit(out_w, out_t, origin, swaps)


def expected_tags(edit: WordEdit, pred: Sequence[str]) -> list[str | None]:
    """What an invariant model predicts on the perturbed words, from its predictions on
    the original: the same tag for a word that was kept (or retyped); for a swapped span,
    the original span's first predicted tag followed by I- tags of its type (all O when
    the model saw no entity there); None for an inserted word (not compared)."""
    out: list[str | None] = [pred[o] if o >= 0 else None for o in edit.origin]
    for ns, ne, os_, oe in edit.swaps:
        old = list(pred[os_:oe + 1])
        first = old[0]
        typ = _type_of(first) or next((_type_of(t) for t in old if t != "O"), "")
        if not typ:
            fill = ["O"] * (ne - ns + 1)
        else:
            head = first if first != "O" else f"B-{typ}"
            fill = [head] + [f"I-{typ}"] * (ne - ns)
        out[ns:ne + 1] = fill
    return out
