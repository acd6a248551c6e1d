"""Attribution units: how raw input elements aggregate into the features an attribution is
read over (image pixels with channels summed, or tabular feature groups such as the one-hot
columns of one original feature), and the coarser units deletion removes (image patches)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.dataset import Dataset


@dataclass
class Units:
    """How raw input elements aggregate into features: image pixels (channels summed) or
    tabular feature groups (one-hot columns of one original feature)."""

    index: np.ndarray  # (n_elements,) unit of each flat input element
    names: list[str]
    shape: tuple[int, ...] | None = None  # image (H, W)

    @property
    def n(self) -> int:
        return len(self.names)

    def reduce(self, a: np.ndarray) -> np.ndarray:
        """(N, ...) attributions -> (N, n_units) sums (signed)."""
        if self.shape is not None:  # image: sum the channels of each pixel
            return a.astype(np.float64).sum(axis=1).reshape(a.shape[0], -1)
        flat = a.reshape(a.shape[0], -1).astype(np.float64)
        out = np.zeros((a.shape[0], self.n))
        np.add.at(out.T, self.index, flat.T)
        return out

    def values(self, x: np.ndarray) -> np.ndarray:
        """Per-unit feature value for colouring: the column itself for single-column units,
        NaN for one-hot groups."""
        vals = np.full((len(x), self.n), np.nan)
        for un in range(self.n):
            cols = np.flatnonzero(self.index == un)
            if len(cols) == 1:
                vals[:, un] = x[:, cols[0]]
        return vals


def feature_units(ds: Dataset) -> Units:
    shape = ds.x.shape[1:]
    if ds.kind == "image":
        c, h, w = shape
        return Units(np.tile(np.arange(h * w), c), [f"({i // w},{i % w})" for i in range(h * w)], (h, w))
    n_cols = int(np.prod(shape))
    index = np.full(n_cols, -1)
    names: list[str] = []
    for name, cols in (ds.feature_groups or {}).items():
        free = [c for c in cols if index[c] < 0]
        if free:
            index[free] = len(names)
            names.append(name)
    for c in np.flatnonzero(index < 0):
        index[c] = len(names)
        names.append(ds.feature_names[c] if ds.feature_names else f"x{c}")
    return Units(index, names)


def deletion_units(ds: Dataset, patch: int | None) -> tuple[np.ndarray, int, str]:
    """What deletion removes at a time: (unit of each flat input element, number of units,
    a word for the axis label). Images: `patch` x `patch` squares (default: a side of an
    eighth of the width), all channels; tabular: the feature units."""
    if ds.kind == "image":
        _, h, w = ds.x.shape[1:]
        p = patch or max(1, w // 8)
        ph, pw = -(-h // p), -(-w // p)
        pix = (np.arange(h)[:, None] // p) * pw + (np.arange(w)[None, :] // p)
        index = np.tile(pix.ravel(), ds.x.shape[1])
        word = f"{p}x{p} patch" + ("es" if p > 1 else "") if p > 1 else "pixels"
        return index, ph * pw, word
    fu = feature_units(ds)
    return fu.index, fu.n, "features"
