"""The audited model's batched inference, shared by the Context and the engines' workers
(audit.engines runs it in Ray actors, which must not import the Context): logits of a
batch or of a streamed dataset, and the hook that takes penultimate-layer activations
during the same pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from audit.errors import ModelError


def predict_logits(module: torch.nn.Module, x: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                   batch_size: int = 256, *, autocast: Any = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Batched float32 logits (N, K) of `module` on `x` under inference mode. Outputs stay
    on the device until one host transfer at the end: no sync inside the loop.

    Uncounted: checks call `Context.run_model`, which counts; this is for code outside
    an audit (training, benchmarks)."""
    device = torch.device(device)
    n = int(x.shape[0])
    outs: list[torch.Tensor] = []
    # batches from NumPy are on the CPU already: no `.to` call per batch there
    move = device.type != "cpu" or (isinstance(x, torch.Tensor) and x.device != device)
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        for start, rows in _batches(x, batch_size):
            if isinstance(rows, np.ndarray) and not rows.flags.writeable:
                # a streamed batch may be a read-only view of pyarrow's buffers, which torch
                # warns about; copying one batch is cheap
                rows = rows.copy()
            xb = rows if isinstance(rows, torch.Tensor) else torch.as_tensor(rows)
            if move:
                xb = xb.to(device, non_blocking=True)
            out = _logits_of(module(xb))
            outs.append(out if out.dtype == torch.float32 else out.float())
            if progress:
                progress(min(start + batch_size, n), n)
    out = torch.cat(outs).cpu().numpy() if outs else np.zeros((0, 1), np.float32)
    return out[:, None] if out.ndim == 1 else out


def _batches(x: Any, batch_size: int) -> Iterator[tuple[int, Any]]:
    """(start, rows) of `x` in order: slices of an array or tensor, or a streamed dataset's
    inputs read sequentially (audit.lazy.LazyInputs)."""
    from audit.lazy import LazyInputs

    if isinstance(x, LazyInputs):
        yield from x.batches(batch_size)
        return
    if isinstance(x, np.ndarray) and x.flags.writeable:
        # one tensor over the array (no copy): slicing it costs less than converting each
        # slice, which is most of the loop's overhead on a small model (~10 us a batch)
        try:
            x = torch.from_numpy(x)
        except TypeError:  # a dtype torch has no tensor for: converted (or refused) per batch
            pass
    for start in range(0, int(x.shape[0]), batch_size):
        yield start, x[start:start + batch_size]


def _logits_of(out: Any) -> torch.Tensor:
    """The logits tensor of a model's output: a tensor, or a Hugging Face style output or
    dict with `logits`, or a tuple whose first item is the logits."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if logits is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"the model returned a {type(out).__name__}, not a tensor of logits (nor an output "
                         f"with `logits`, nor a tuple whose first item is the logits)")
    return logits


class _HeadCapture:
    """Collects, per top-level forward call, the input of the last output layer that ran."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None
        self.parts: list[torch.Tensor] = []
        self.available = False

    def result(self, n: int) -> np.ndarray | None:
        if not self.available or not self.parts:
            return None
        out = torch.cat(self.parts).float().cpu().numpy()
        return out if out.shape[0] == n else None


@contextlib.contextmanager
def _capture_head(module: torch.nn.Module, n_classes: int, *, enabled: bool = True) -> Iterator[_HeadCapture]:
    """Forward hooks that take the penultimate activations of `module`: the input of the
    last `nn.Linear` with one output per class (or one, for a binary sigmoid head) that
    runs in each forward call."""
    grab = _HeadCapture()
    widths = {n_classes} | ({1} if n_classes == 2 else set())
    heads = [m for m in module.modules() if isinstance(m, torch.nn.Linear) and m.out_features in widths] \
        if enabled and not isinstance(module, torch.jit.ScriptModule) else []
    if not heads:
        yield grab
        return

    def take(mod: torch.nn.Module, args: tuple, out: Any) -> None:
        h = args[0].detach()
        grab.last = h if h.ndim <= 2 else h.mean(dim=tuple(range(1, h.ndim - 1)))

    def collect(mod: torch.nn.Module, args: tuple, out: Any) -> None:
        if grab.last is not None:
            grab.parts.append(grab.last.reshape(grab.last.shape[0], -1))
        grab.last = None

    handles = [m.register_forward_hook(take) for m in heads]
    handles.append(module.register_forward_hook(collect))
    grab.available = True
    try:
        yield grab
    finally:
        for h in handles:
            h.remove()
