"""Which torch device an audit runs on."""

from __future__ import annotations

import torch

from audit.errors import ModelError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`; a device this
    machine does not have is a ModelError (exit 2), not a crash at the first tensor."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device '{name}' (choose auto, cpu, cuda, cuda:N or mps)", where="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device '{name}' requested but CUDA is not available", where="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device '{name}' requested but this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)", where="device")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(f"device '{name}' requested but Apple MPS is not available", where="device")
    elif dev.type != "cpu":
        raise ModelError(f"unsupported device '{name}' (choose auto, cpu, cuda, cuda:N or mps)", where="device")
    return dev
