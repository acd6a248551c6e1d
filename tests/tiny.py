"""A tiny audit for tests of the CLI's edges: a 4-feature linear model saved as
safetensors with a factory module, and a few dozen rows of data in every format.

`make_workspace(root)` writes it all under `root` and puts the factory module on
`sys.path` (`drop_workspace` undoes that). The model separates class 1 (x0 + x1 > 1)
perfectly, so the base spec's accuracy threshold passes (exit 0).
"""

from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FACTORY_MODULE = "tiny_audit_models"
FACTORY_SOURCE = '''
import os
import time

import torch


class Tiny(torch.nn.Module):
    """A linear layer on the flattened input; `mode` picks what forward returns."""

    def __init__(self, n_in=4, n_out=2, mode="tensor"):
        super().__init__()
        self.lin = torch.nn.Linear(n_in, n_out)
        self.mode = mode

    def forward(self, x):
        z = self.lin(x.flatten(1))
        m = self.mode
        if m == "dict":
            return {"logits": z, "hidden": x}
        if m == "dict_nologits":
            return {"scores": z}
        if m == "tuple":
            return (z, x)
        if m == "tuple_bad":
            return ("logits", z)
        if m == "zero":
            return z * (1 // 0)
        if m == "raise_runtime":
            raise RuntimeError("boom in forward")
        if m == "nan":
            return z * float("nan")
        if m == "three":
            return torch.cat([z, z[:, :1]], dim=1)
        if m == "sleep":
            open(os.environ["TINY_MARKER"], "w").close()
            time.sleep(60)
        return z


def build(n_in=4, n_out=2, mode="tensor"):
    return Tiny(n_in, n_out, mode)


def broken(**kwargs):
    raise ValueError("factory exploded")


def not_a_module(**kwargs):
    return 42


def wide(**kwargs):
    return Tiny(6, 2)
'''


# ---------------------------------------------------------------------------------------------- workspace
@dataclass
class Workspace:
    root: Path
    model: Path            # tiny.safetensors: separates class 1 (x0 + x1 > 1) perfectly
    test_npz: Path
    train_npz: Path
    test_csv: Path
    images: Path           # two class folders of 2x2 grayscale PNGs
    results: Path          # a valid results.json of the tiny audit (written by the tests' fixture)
    results_other: Path    # the same audit with another start time


def xy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 1).astype(np.int64)


def png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes (a decompression bomb's
    header: the pixels would only be allocated when decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def base_spec(ws: Workspace) -> dict[str, Any]:
    return {"name": "tiny audit", "seed": 0, "device": "cpu",
            "model": {"path": str(ws.model), "factory": f"{FACTORY_MODULE}:build", "factory_kwargs": {}},
            "data": {"test": {"path": str(ws.test_npz)}},
            "checks": [{"id": "heldout", "check": "performance.classification",
                        "thresholds": {"accuracy": {"min": 0.5}}}]}




def make_workspace(root: Path) -> Workspace:
    from safetensors.torch import save_file

    (root / f"{FACTORY_MODULE}.py").write_text(FACTORY_SOURCE)
    sys.path.insert(0, str(root))
    weights = {"lin.weight": torch.tensor([[-1.0, -1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]),
               "lin.bias": torch.tensor([1.0, -1.0])}
    model = root / "tiny.safetensors"
    save_file(weights, str(model))
    x, y = xy(60, 0)
    np.savez(root / "test.npz", x=x, y=y)
    xt, yt = xy(60, 1)
    np.savez(root / "train.npz", x=xt, y=yt)
    csv = root / "test.csv"
    csv.write_text("a,b,c,d,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{r[3]},{int(c)}\n" for r, c in zip(x, y)))
    images = root / "images"
    for i in range(8):
        png(images / "0" / f"{i}.png", np.zeros((2, 2)))
        png(images / "1" / f"{i}.png", np.array([[255, 255], [0, 0]]))
    return Workspace(root, model, root / "test.npz", root / "train.npz", csv, images, root / "r1" / "results.json",
                     root / "results_other.json")


def drop_workspace(ws: Workspace) -> None:
    if str(ws.root) in sys.path:
        sys.path.remove(str(ws.root))
    sys.modules.pop(FACTORY_MODULE, None)
