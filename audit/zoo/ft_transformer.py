"""FT-Transformer (Gorishniy et al., 2021, "Revisiting Deep Learning Models for Tabular
Data") for float tabular input (N, F).

Every original feature becomes one token: a numeric column x_i gives x_i * w_i + b_i; a
one-hot group gives onehot @ E_g + b_g. The one-hot product keeps the model a function
of its float input, so gradients, attacks and attributions work on x as the data holds
it. A CLS token is prepended; pre-norm transformer blocks; the head reads the CLS token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from audit.dataset import Dataset


class FeatureTokenizer(nn.Module):
    def __init__(self, n_features: int, groups: Sequence[Sequence[int]], d_token: int) -> None:
        super().__init__()
        in_group = [i for g in groups for i in g]
        if len(set(in_group)) != len(in_group):
            raise ValueError("a column belongs to more than one one-hot group")
        if any(not 0 <= i < n_features for i in in_group):
            raise ValueError(f"group column index out of range for {n_features} features")
        numeric = sorted(set(range(n_features)) - set(in_group))
        self.n_tokens = len(numeric) + len(groups)
        self.register_buffer("num_idx", torch.tensor(numeric, dtype=torch.long), persistent=False)
        self.register_buffer("cat_idx", torch.tensor(in_group, dtype=torch.long), persistent=False)
        self.register_buffer("cat_group", torch.tensor([k for k, g in enumerate(groups) for _ in g],
                                                       dtype=torch.long), persistent=False)
        self.n_groups = len(groups)
        bound = 1.0 / math.sqrt(d_token)  # the paper's tokenizer initialisation
        self.num_weight = nn.Parameter(torch.empty(len(numeric), d_token).uniform_(-bound, bound))
        self.num_bias = nn.Parameter(torch.empty(len(numeric), d_token).uniform_(-bound, bound))
        self.cat_embedding = nn.Parameter(torch.empty(len(in_group), d_token).uniform_(-bound, bound))
        self.cat_bias = nn.Parameter(torch.empty(len(groups), d_token).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x[:, self.num_idx, None] * self.num_weight + self.num_bias
        if self.n_groups:
            parts = x[:, self.cat_idx, None] * self.cat_embedding  # (N, C, d)
            cat = torch.zeros(x.shape[0], self.n_groups, parts.shape[2], dtype=parts.dtype, device=x.device)
            cat = cat.index_add(1, self.cat_group, parts) + self.cat_bias  # sum within each group
            tokens = torch.cat([tokens, cat], dim=1)
        return tokens


class FTTransformer(nn.Module):
    def __init__(self, n_features: int, num_classes: int = 2, groups: Sequence[Sequence[int]] = (),
                 d_token: int = 32, n_layers: int = 2, n_heads: int = 4, dropout: float = 0.1,
                 ffn_factor: float = 2.0) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_features, [list(g) for g in groups], d_token)
        self.cls = nn.Parameter(torch.empty(1, 1, d_token).uniform_(-1 / math.sqrt(d_token), 1 / math.sqrt(d_token)))
        layer = nn.TransformerEncoderLayer(d_token, n_heads, dim_feedforward=int(d_token * ffn_factor),
                                           dropout=dropout, activation="gelu", batch_first=True, norm_first=True)
        # nested tensors only help with padding masks, which tabular tokens never have
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU(), nn.Linear(d_token, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(x)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0])


def build(**kwargs: Any) -> FTTransformer:
    return FTTransformer(**kwargs)


def dataset_kwargs(ds: Dataset) -> dict[str, Any]:
    """One-hot groups are the multi-column groups with no continuous column."""
    groups: list[list[int]] = []
    for cols in (ds.feature_groups or {}).values():
        if len(cols) > 1 and (ds.continuous is None or not ds.continuous[cols].any()):
            groups.append(sorted(int(c) for c in cols))
    return {"n_features": int(ds.x.shape[1]), "num_classes": ds.n_classes, "groups": groups}
