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
    texts (`meta["texts"]`) or words (`meta["words"]`) travel with the ids."""

    name: str
    x: np.ndarray
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

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            h = hashlib.sha256()
            h.update(np.ascontiguousarray(self.x).tobytes())
            h.update(np.ascontiguousarray(self.y).tobytes())
            if self.word_starts is not None:
                h.update(np.ascontiguousarray(self.word_starts).tobytes())
            for key in sorted(self.sensitive):
                h.update(key.encode())
                h.update(np.asarray(self.sensitive[key]).astype(str).tobytes())
            self._sha256 = h.hexdigest()
        return self._sha256

    @property
    def word_mask(self) -> np.ndarray:
        """(N, W) bool: the real words of a token-classification dataset."""
        return np.asarray(self.y) >= 0

    def describe(self) -> dict[str, Any]:
        labels = self.y[self.y >= 0] if self.kind == "tokens" else self.y
        out = {
            "name": self.name, "kind": self.kind, "n": len(self), "shape": list(self.x.shape[1:]),
            "classes": self.classes, "class_counts": np.bincount(labels, minlength=self.n_classes).tolist(),
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
