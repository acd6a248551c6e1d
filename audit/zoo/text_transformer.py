"""A small Transformer encoder for text classification over int64 token ids (N, L).

Token embedding (`embedding`, the layer token attributions hook into) plus learned
position embeddings, pre-norm transformer blocks with a key-padding mask, masked mean
pooling over the real tokens, and a linear head. The tokenizer (a word vocabulary we
build from the data, `audit.text.WordTokenizer`) is saved with the model's recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from audit.dataset import Dataset


class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int = 2, max_len: int = 128, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1,
                 pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.pos = nn.Parameter(torch.empty(1, max_len, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(dim * mlp_ratio), dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # the nested-tensor fast path would drop padded positions in a data-dependent way
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids[:, : self.max_len].long()
        pad = ids.eq(self.pad_id)
        # an all-padding row (empty text) attends to everything rather than to nothing (NaN)
        pad = pad & ~pad.all(dim=1, keepdim=True)
        h = self.dropout(self.embedding(ids) + self.pos[:, : ids.shape[1]])
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.head(pooled)


def build(**kwargs: Any) -> TextTransformer:
    return TextTransformer(**kwargs)


def dataset_kwargs(ds: Dataset) -> dict[str, Any]:
    tok = ds.meta.get("tokenizer") or {}
    vocab = tok.get("vocab")
    if ds.kind != "text" or vocab is None:
        raise ValueError(f"text_transformer needs a text dataset with a word tokenizer in meta['tokenizer']; "
                         f"dataset '{ds.name}' is {ds.kind}")
    return {"vocab_size": len(vocab), "num_classes": ds.n_classes, "max_len": int(ds.x.shape[1]),
            "pad_id": int(tok.get("pad_id", 0))}
