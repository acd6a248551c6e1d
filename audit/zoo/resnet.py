"""A small ResNet (He et al., 2016) for (N, C, H, W) images: a 3x3 stem, stages of basic
residual blocks (the first block of every stage after the first halves the resolution),
global average pooling and a linear head.

Input-size agnostic like `cnn`: the default (16, 32, 64) x 1 block serves 8x8 digits and
32x32 shapes alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from audit.dataset import Dataset


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # projection shortcut (option B of the paper)
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64),
                 blocks: int | Sequence[int] = 1, dropout: float = 0.0) -> None:
        super().__init__()
        per_stage = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(per_stage) != len(widths):
            raise ValueError(f"'blocks' has {len(per_stage)} entries for {len(widths)} stages")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, per_stage)):
            for j in range(n):
                stages.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.stages:
            # zero-init the last BN of each block: every block starts as the identity
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))))


def build(**kwargs: Any) -> ResNet:
    return ResNet(**kwargs)


def dataset_kwargs(ds: Dataset) -> dict[str, Any]:
    return {"in_channels": int(ds.x.shape[1]), "num_classes": ds.n_classes}
