"""Text data conventions and the word-level tokenizer the suite builds from data.

A text `Dataset` (kind "text") carries:

* `x`: int64 (N, L) token ids, right-padded with the pad id (0), in the vocabulary
  of the model being audited;
* `meta["texts"]`: the raw strings (so that a model with its own tokenizer, e.g. a
  Hugging Face model, can re-encode them: see `audit.hf.encode_dataset`);
* `meta["tokenizer"]`: the tokenizer that produced `x` as JSON (`WordTokenizer.to_json()`
  for ours: its vocabulary, max length, pad and unknown ids).

`WordTokenizer` lower-cases, splits into words and punctuation, maps words to ids by a
vocabulary built from training texts (most frequent first; ties alphabetical, so the
same texts give the same vocabulary), unknown words to `<unk>`, and truncates/pads to a
fixed length. A model trained on such data saves the tokenizer in its recipe.

Tokenization belongs to the model: see `audit.tokenize`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD, UNK = "<pad>", "<unk>"


@dataclass
class Encoded:
    """Token ids of a batch of texts or sentences, and what truncation cost."""

    x: np.ndarray  # (N, L) int64, right-padded
    word_starts: np.ndarray | None  # (N, W) first sub-token of each word, -1 if none (sentences)
    truncated_rows: int
    tokens_lost: int  # sub-tokens cut
    words_lost: int  # words with no sub-token left (sentences)
PAD_ID, UNK_ID = 0, 1
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class WordTokenizer:
    vocab: tuple[str, ...]  # index = token id; vocab[0] = <pad>, vocab[1] = <unk>
    max_len: int

    def __post_init__(self) -> None:
        if self.vocab[:2] != (PAD, UNK):
            raise ValueError(f"a word vocabulary starts with {PAD!r}, {UNK!r}")
        if self.max_len < 1:
            raise ValueError("max_len must be at least 1")

    @classmethod
    def build(cls, texts: Iterable[str], max_len: int, *, max_size: int | None = None,
              min_freq: int = 1) -> WordTokenizer:
        counts = Counter(w for t in texts for w in split_words(t))
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - 2)]
        return cls(vocab=(PAD, UNK, *words), max_len=max_len)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_texts(texts).x

    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def encode_texts(self, texts: Sequence[str]) -> Encoded:
        index = self._index()
        out = np.full((len(texts), self.max_len), PAD_ID, dtype=np.int64)
        rows = lost = 0
        for row, t in enumerate(texts):
            words = split_words(t)
            if len(words) > self.max_len:
                rows, lost = rows + 1, lost + len(words) - self.max_len
            ids = [index.get(w, UNK_ID) for w in words[: self.max_len]]
            out[row, : len(ids)] = ids
        return Encoded(out, None, rows, lost, 0)

    def encode_words(self, sentences: Sequence[Sequence[str]]) -> Encoded:
        """Each word is split like a text (punctuation apart) into one or more tokens."""
        index = self._index()
        width = max((len(s) for s in sentences), default=1)
        out = np.full((len(sentences), self.max_len), PAD_ID, dtype=np.int64)
        starts = np.full((len(sentences), max(width, 1)), -1, dtype=np.int64)
        rows = lost = words_lost = 0
        for row, sent in enumerate(sentences):
            pos = 0
            cut = False
            for w, word in enumerate(sent):
                pieces = split_words(word) or [word.lower()]
                if pos + len(pieces) > self.max_len:
                    cut = True
                    lost += len(pieces)
                    words_lost += 1
                    continue
                starts[row, w] = pos
                out[row, pos:pos + len(pieces)] = [index.get(p, UNK_ID) for p in pieces]
                pos += len(pieces)
            rows += cut
        return Encoded(out, starts, rows, lost, words_lost)

    @property
    def special_ids(self) -> list[int]:
        return [PAD_ID]

    def id_to_token(self) -> list[str]:
        return list(self.vocab)

    def summary(self) -> dict[str, Any]:
        return {"type": "word", "vocab_size": len(self.vocab), "max_len": self.max_len}

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.vocab[i] for i in ids if i != PAD_ID]

    def to_json(self) -> dict[str, Any]:
        return {"type": "word", "vocab": list(self.vocab), "max_len": self.max_len,
                "pad_id": PAD_ID, "unk_id": UNK_ID}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WordTokenizer:
        if data.get("type") != "word":
            raise ValueError(f"not a word tokenizer: type {data.get('type')!r}")
        return cls(vocab=tuple(data["vocab"]), max_len=int(data["max_len"]))
