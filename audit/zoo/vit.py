"""A small Vision Transformer (Dosovitskiy et al., 2021) for (N, C, H, W) images.

Non-overlapping patches (a strided convolution) become tokens, a learned CLS token and
position embeddings are added, pre-norm transformer blocks follow, and the head reads
the mean of the patch tokens (`pool="mean"`, global average pooling as in Beyer et al.,
2022, "Better plain ViT baselines") or the CLS token (`pool="cls"`, the original). The
default patch size (`default_patch_size`) keeps the sequence short enough for CPU
training: 16 tokens on 32x32 shapes, 4 on 8x8 digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from audit.dataset import Dataset


def default_patch_size(height: int, width: int) -> int:
    """The largest patch size dividing both sides that is at most a quarter of the shorter
    side, or 4 pixels on small images: a 4x4 grid on 32x32, a 2x2 grid of 4x4 patches on
    8x8 digits (single-pixel-scale patches learn far more slowly on tiny data)."""
    side = min(height, width)
    p = max(1, side // 4, min(4, side))
    while height % p or width % p:
        p -= 1
    return p


class ViT(nn.Module):
    def __init__(self, image_size: int | Sequence[int] = 32, in_channels: int = 3, num_classes: int = 10,
                 patch_size: int | None = None, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', not {pool!r}")
        self.pool = pool
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        p = patch_size or default_patch_size(h, w)
        if h % p or w % p:
            raise ValueError(f"patch size {p} does not divide the image size {h}x{w}")
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=p, stride=p)
        n_tokens = (h // p) * (w // p)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.empty(1, n_tokens + 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(dim * mlp_ratio), dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # nested tensors only help with padding masks, which patch tokens never have
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, dim)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        h = self.encoder(tokens)
        return self.head(self.norm(h[:, 1:].mean(dim=1) if self.pool == "mean" else h[:, 0]))


def build(**kwargs: Any) -> ViT:
    return ViT(**kwargs)


def dataset_kwargs(ds: Dataset) -> dict[str, Any]:
    return {"image_size": [int(ds.x.shape[2]), int(ds.x.shape[3])], "in_channels": int(ds.x.shape[1]),
            "num_classes": ds.n_classes}
