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
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD, UNK = "<pad>", "<unk>"
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
        index = {w: i for i, w in enumerate(self.vocab)}
        out = np.full((len(texts), self.max_len), PAD_ID, dtype=np.int64)
        for row, t in enumerate(texts):
            ids = [index.get(w, UNK_ID) for w in split_words(t)[: self.max_len]]
            out[row, : len(ids)] = ids
        return out

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
