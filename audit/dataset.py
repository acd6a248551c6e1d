"""In-memory dataset and loaded-model records shared by loaders, context and checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

Kind = Literal["image", "tabular", "text", "tokens"]


@dataclass
class Dataset:
    """x: images (N, C, H, W) float32, tabular (N, F) float32, text and tokens (N, L)
    int64 token ids of the model's tokenizer, right-padded with its pad id.
    y: (N,) int64 class indices into `classes`; for token classification ("tokens": one
    sentence per row) (N, W) int64 word-level tag indices into `classes`, -1 past the
    sentence's last word. `word_starts` (tokens only, (N, W)) is the position in `x` of
    each word's first sub-token, -1 past the last word and for words lost to truncation:
    a word's prediction is its first sub-token's (the Hugging Face convention). The raw
    texts (`meta["texts"]`) or words (`meta["words"]`) travel with the ids.

    Streamed datasets (images and tables too large to hold, see `audit.lazy`): `x` is a
    `LazyInputs` (len, shape, dtype, x[a:b], x[idx], batches) read from disk on demand,
    while `y` and `sensitive` stay in memory, compact: `y` in `code_dtype(n_classes)` (one
    byte a row below 128 classes, as the Context keeps predictions), sensitive attributes
    as pandas Categoricals (small integer codes, not a string per row). Index, compare and
    count with such labels freely; cast a sample to int64 before arithmetic that could
    leave the type's range or before a torch loss. Read inputs with `take(idx)` (a seeded
    sample) or `rows(idx)`; `lazy` says which kind of dataset it is."""

    name: str
    x: Any  # np.ndarray, or audit.lazy.LazyInputs for a streamed dataset
    y: np.ndarray
    kind: Kind
    classes: list[str]
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)
    # tabular: a name per column of x; `feature_groups` maps an original column to the
    # x columns that encode it (one-hot groups); `continuous` masks columns that may be
    # perturbed (attacks, feature noise).
    feature_names: list[str] | None = None
    feature_groups: dict[str, list[int]] | None = None
    continuous: np.ndarray | None = None
    word_starts: np.ndarray | None = None
    source: str = ""
    # meta["class_order"]: {"classes", "source", "declared"} (see audit.data); the report shows it
    meta: dict[str, Any] = field(default_factory=dict)
    # One-line facts a user must hear about how the data was read (class order guessed
    # from the data, images resized, an empty class folder); the CLI prints them.
    notices: list[str] = field(default_factory=list)
    _sha256: str | None = field(default=None, repr=False)
    # a content hash being computed on a worker thread (`hash_later`); not copied by replace()
    _sha256_job: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lazy and self.kind != "tokens" and self.y.dtype != code_dtype(len(self.classes)):
            self.y = np.asarray(self.y).astype(code_dtype(len(self.classes)))  # see the class docstring

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def lazy(self) -> bool:
        """True when the inputs are streamed from disk (`x` is an audit.lazy.LazyInputs)."""
        from audit.lazy import LazyInputs

        return isinstance(self.x, LazyInputs)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The inputs of rows `idx` (any order) as an array; a streamed dataset reads only those."""
        idx = np.asarray(idx)
        return self.x.take(idx) if self.lazy else self.x[idx]

    def rows(self, idx: np.ndarray) -> Any:
        """`take(idx)`, except that all the rows of a streamed dataset stay streamed (to run a
        model over every row through `Context.run_model` in bounded memory)."""
        idx = np.asarray(idx)
        if self.lazy and len(idx) == len(self) and np.array_equal(idx, np.arange(len(self))):
            return self.x
        return self.take(idx)

    @property
    def sha256(self) -> str:
        """SHA-256 of the content: the inputs as the SHA-256 of each block's float32 bytes
        (blocks of `audit.lazy.block_rows` rows, the same for every engine), then labels,
        word starts and sensitive attributes (as strings). A streamed dataset gets it from
        its pass (the Context sets it); reading it here otherwise streams the inputs once."""
        if self._sha256 is None and self._sha256_job is not None:
            self._sha256, self._sha256_job = self._sha256_job.result(), None
        if self._sha256 is None:
            from audit.lazy import block_digest, block_rows

            x = self.x
            n = len(x)
            width = int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 1
            step = block_rows(width)
            if self.lazy:
                digests = [block_digest(xb) for _, xb in x.blocks(0, n, step)]
            else:
                digests = [block_digest(x[s:s + step]) for s in range(0, n, step)]
            self._sha256 = self.content_sha256(digests)
        return self._sha256

    def hash_later(self, block_digests: list[bytes]) -> None:
        """Compute `content_sha256(block_digests)` on a worker thread; `sha256` waits for it.
        A streamed dataset's pass leaves the labels and sensitive strings to hash (about a
        second at 10^7 rows, in NumPy and hashlib, which release the GIL): this overlaps it
        with the checks instead of adding it to the audit's time."""
        from concurrent.futures import ThreadPoolExecutor

        self._sha256 = None
        pool = ThreadPoolExecutor(1, thread_name_prefix="dataset-hash")
        self._sha256_job = pool.submit(self.content_sha256, list(block_digests))
        pool.shutdown(wait=False)

    def content_sha256(self, block_digests: list[bytes]) -> str:
        """The dataset hash from the digests of its input blocks (see `sha256`)."""
        h = hashlib.sha256()
        for d in block_digests:
            h.update(d)
        y = np.ascontiguousarray(self.y)
        if not self.lazy or y.dtype == np.int64:
            h.update(memoryview(y).cast("B"))  # no copy of the bytes
        else:  # compact labels hash as the int64 labels of the same data in memory
            for s in range(0, y.size, 1 << 20):
                h.update(memoryview(y.reshape(-1)[s:s + (1 << 20)].astype(np.int64)).cast("B"))
        if self.word_starts is not None:
            h.update(memoryview(np.ascontiguousarray(self.word_starts)).cast("B"))
        for key in sorted(self.sensitive):
            h.update(key.encode())
            _hash_strings(h, self.sensitive[key])
        return h.hexdigest()

    @property
    def word_mask(self) -> np.ndarray:
        """(N, W) bool: the real words of a token-classification dataset."""
        return np.asarray(self.y) >= 0

    def describe(self) -> dict[str, Any]:
        labels = self.y[self.y >= 0] if self.kind == "tokens" else self.y
        out = {
            "name": self.name, "kind": self.kind, "n": len(self), "shape": list(self.x.shape[1:]),
            **({"streamed": self.x.describe()} if self.lazy else {}),
            "classes": self.classes, "class_counts": code_counts(labels, self.n_classes).tolist(),
            "sensitive": sorted(self.sensitive), "source": self.source, "sha256": self.sha256,
            "class_order": self.meta.get("class_order"), "notices": list(self.notices),
        }
        if self.kind == "tokens":
            out["words"] = int(labels.size)
        if "examples" not in self.meta and self.kind in ("text", "tokens"):
            raw = self.meta.get("texts") if self.kind == "text" else self.meta.get("words")
            if raw:
                out["examples"] = [{"text": (t if isinstance(t, str) else " ".join(t))[:200],
                                    "label": self.classes[int(c)] if self.kind == "text" else "sentence"}
                                   for t, c in zip(raw[:3], self.y[:3] if self.kind == "text" else range(3))]
        for key in ("tokenizer_summary", "truncation", "examples", "tag_scheme"):
            if self.meta.get(key) is not None:
                out[key] = self.meta[key]
        return out


def code_dtype(n_codes: int) -> type[np.signedinteger]:
    """The smallest signed integer type for codes 0..n_codes-1 (and -1 for "missing"): what
    per-row codes are kept in, 1 byte a row for up to 128 values."""
    for t in (np.int8, np.int16, np.int32):
        if n_codes - 1 <= np.iinfo(t).max:
            return t
    return np.int64


def code_counts(codes: np.ndarray, minlength: int = 0, chunk: int = 1 << 20) -> np.ndarray:
    """`np.bincount` of per-row codes, in chunks of rows: bincount first casts its input to
    intp, which for codes kept in 1 byte a row is an N-length copy 8 times their size."""
    codes = np.asarray(codes).reshape(-1)
    if codes.size <= chunk or codes.dtype.itemsize >= np.dtype(np.intp).itemsize:
        return np.bincount(codes, minlength=minlength)
    out = np.zeros(minlength, np.int64)
    for s in range(0, codes.size, chunk):
        part = np.bincount(codes[s:s + chunk], minlength=minlength)
        if part.size > out.size:
            out = np.concatenate([out, np.zeros(part.size - out.size, np.int64)])
        out[:part.size] += part
    return out


def _hash_strings(h: Any, values: Any, chunk: int = 1 << 16) -> None:
    """Feed `values` as a fixed-width unicode array (`np.asarray(values).astype(str)`) to
    `h`, in chunks; a pandas Categorical hashes as the strings it stands for."""
    import pandas as pd

    if isinstance(values, pd.Categorical):
        cats = np.asarray(values.categories).astype(str)
        codes = values.codes
        used = np.unique(codes)
        width = max((len(c) for c in cats[used[used >= 0]]), default=1)
        table = cats.astype(f"<U{max(width, 1)}")
        for s in range(0, len(codes), chunk):
            h.update(memoryview(table[codes[s:s + chunk]]).cast("B"))
        return
    h.update(np.asarray(values).astype(str).tobytes())


@dataclass
class LoadedModel:
    module: torch.nn.Module
    sha256: str
    source: str
    architecture: str
    input_range: tuple[float, float] | None = None
    classes: list[str] | None = None
    training: dict[str, Any] | None = None  # training record when the audit trained it
    # Rebuilds the same architecture with fresh weights (randomization tests, retraining).
    factory: Any = None
    # Counted when loaded: the context later freezes every weight for input-only gradients.
    trainable_params: int | None = None
    # "classification" or "token-classification" when the model states it (a Hugging Face config)
    task: str | None = None

    def card(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.module.parameters())
        trainable = self.trainable_params
        if trainable is None:
            trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        layers = []
        for name, mod in self.module.named_modules():
            n = sum(p.numel() for p in mod.parameters(recurse=False))
            # leaves, plus containers that hold parameters of their own (attention in-projections,
            # a ViT's position embeddings), so that the layer table adds up to `params`
            if (name and not list(mod.children())) or n:
                layers.append({"name": name or "(top level)", "type": type(mod).__name__, "params": n})
        return {"architecture": self.architecture, "source": self.source, "sha256": self.sha256,
                "params": params, "trainable_params": trainable, "layers": layers,
                "input_range": list(self.input_range) if self.input_range else None}
