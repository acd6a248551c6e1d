"""A small configurable convolutional classifier for (N, C, H, W) images in [0, 1].

Input-size agnostic: adaptive pooling before the head, so the same recipe serves
8x8 digits and 32x32 shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from audit.dataset import Dataset


class CNN(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (32, 64),
                 pool_size: int = 2, hidden: int = 128, dropout: float = 0.1, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU())
            if i < len(widths) - 1:
                # ceil_mode keeps odd and tiny feature maps non-empty
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * pool_size * pool_size, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def build(**kwargs: Any) -> CNN:
    return CNN(**kwargs)


def dataset_kwargs(ds: Dataset) -> dict[str, Any]:
    return {"in_channels": int(ds.x.shape[1]), "num_classes": ds.n_classes}
