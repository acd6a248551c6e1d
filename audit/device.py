"""Which torch device an audit runs on."""

from __future__ import annotations

import torch

from audit.errors import ModelError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device '{name}' requested but CUDA is not available", where="device")
    return dev
