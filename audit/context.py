"""The audit context: loads the model and datasets once, holds device and seed, and
caches logits per dataset (and per transformed input) so that every check shares one
forward pass per sample. It counts every sample the model was run on."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from audit.dataset import Dataset, LoadedModel
from audit.errors import DataError, ModelError
from audit.spec import AuditSpec


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device '{name}' requested but CUDA is not available", where="device")
    return dev


def predict_logits(module: torch.nn.Module, x: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                   batch_size: int = 256, *, autocast: Any = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Batched float32 logits (N, K) of `module` on `x` under inference mode. Outputs stay
    on the device until one host transfer at the end: no sync inside the loop."""
    device = torch.device(device)
    n = int(x.shape[0])
    outs: list[torch.Tensor] = []
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        for start in range(0, n, batch_size):
            xb = torch.as_tensor(x[start:start + batch_size]).to(device, non_blocking=True)
            outs.append(module(xb).float())
            if progress:
                progress(min(start + batch_size, n), n)
    out = torch.cat(outs).cpu().numpy() if outs else np.zeros((0, 1), np.float32)
    return out[:, None] if out.ndim == 1 else out


def logits_to_proba(logits: np.ndarray) -> np.ndarray:
    """(N, K) softmax, or (N, 1) sigmoid expanded to (N, 2) with class 1 positive."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Context:
    def __init__(self, spec: AuditSpec, *, device: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.spec = spec
        self.seed = spec.seed
        self.device = resolve_device(device or spec.device)
        self.batch_size = spec.model.batch_size
        self.progress = progress
        self.forward_samples = 0
        self.backward_samples = 0
        self._datasets: dict[str, Dataset] = {}
        self._model: LoadedModel | None = None
        self._logits: dict[str, np.ndarray] = {}
        self.timings: dict[str, float] = {}

    # ---- randomness ----------------------------------------------------------------
    def rng(self, purpose: str) -> np.random.Generator:
        """A generator seeded by the audit seed and a purpose string: independent streams
        per use, identical across runs."""
        digest = hashlib.sha256(f"{self.seed}:{purpose}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def torch_generator(self, purpose: str, device: torch.device | None = None) -> torch.Generator:
        g = torch.Generator(device=device or self.device)
        g.manual_seed(int(self.rng(purpose).integers(2**62)))
        return g

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    def from_objects(cls, datasets: dict[str, Dataset], model: LoadedModel, *, seed: int = 0,
                     device: str = "cpu", batch_size: int = 256) -> Context:
        """A context over in-memory datasets and a model (tests, notebooks, pytest fixtures)."""
        from audit.spec import parse_spec

        spec = parse_spec({"name": "in-memory audit", "seed": seed, "device": device,
                           "model": {"fixture": "in-memory", "batch_size": batch_size},
                           "data": {name: {"fixture": "in-memory"} for name in datasets},
                           "checks": []}, check_registry=False)
        ctx = cls(spec)
        ctx._datasets = dict(datasets)
        model.module.to(ctx.device).eval()
        _freeze(model)
        ctx._model = model
        return ctx

    def has_dataset(self, name: str) -> bool:
        return name in self._datasets or name in self.spec.data or name in self.spec.domains

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            from audit.loading import load_dataset

            if not self.has_dataset(name):
                raise DataError(f"the spec defines no dataset '{name}'")
            t0 = time.perf_counter()
            self._datasets[name] = load_dataset(self, name)
            self.timings[f"load:{name}"] = time.perf_counter() - t0
        return self._datasets[name]

    @property
    def loaded_datasets(self) -> dict[str, Dataset]:
        return dict(self._datasets)

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            from audit.loading import load_model

            t0 = time.perf_counter()
            loaded = load_model(self)
            loaded.module.to(self.device).eval()
            _freeze(loaded)
            self._model = loaded
            self.timings["load:model"] = time.perf_counter() - t0
        return self._model

    # ---- inference ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass on the device (autograd allowed); counts the samples."""
        self.forward_samples += int(x.shape[0])
        return self.model.module(x)

    def count_backward(self, n: int) -> None:
        self.backward_samples += int(n)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return torch.autocast(device_type="cpu", enabled=False)

    def infer(self, x: np.ndarray | torch.Tensor, *, what: str = "inference") -> np.ndarray:
        """Batched logits for an arbitrary input array, float32 (N, K). Not cached: use
        `logits(name)` or `cached_logits(key, ...)` for data that other checks may reuse."""
        progress = (lambda done, total: self.progress(what, done, total)) if self.progress else None
        out = predict_logits(self.model.module, x, self.device, self.batch_size,
                             autocast=self._autocast(), progress=progress)
        self.forward_samples += int(x.shape[0])
        return out

    def cached_logits(self, key: str, make_input: Callable[[], np.ndarray]) -> np.ndarray:
        """Logits for a derived input (a corruption, an attack's result), computed once per key."""
        if key not in self._logits:
            self._logits[key] = self.infer(make_input(), what=key)
        return self._logits[key]

    def logits(self, name: str) -> np.ndarray:
        if name not in self._logits:
            ds = self.dataset(name)
            try:
                out = self.infer(ds.x, what=f"predict {name}")
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                # a shape or dtype mismatch surfaces in the first batch: one clear message
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"the model cannot take dataset '{name}' (input shape "
                                 f"{tuple(ds.x.shape[1:])}, dtype {ds.x.dtype}): {first}") from None
            self._validate_output(ds, out)
            self._logits[name] = out
        return self._logits[name]

    def probabilities(self, name: str) -> np.ndarray:
        return logits_to_proba(self.logits(name))

    def predictions(self, name: str) -> np.ndarray:
        return self.probabilities(name).argmax(axis=1)

    def losses(self, name: str) -> np.ndarray:
        """Per-sample cross-entropy of the true class."""
        proba = self.probabilities(name)
        y = self.dataset(name).y
        return -np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0))

    def _validate_output(self, ds: Dataset, out: np.ndarray) -> None:
        k = out.shape[1]
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(axis=1).sum())
            raise ModelError(f"the model produced NaN or infinite outputs for {bad} of {len(ds)} "
                             f"samples of dataset '{ds.name}'")
        expected = ds.n_classes
        if not (k == expected or (k == 1 and expected == 2)):
            raise ModelError(f"the model outputs {k} values per sample but dataset '{ds.name}' "
                             f"has {expected} classes ({', '.join(ds.classes[:10])})")

    def preflight(self, name: str) -> None:
        """Turn a shape mismatch or bad outputs into a clear error before any check runs.
        It is the same cached pass the checks share, so nothing is computed twice."""
        self.logits(name)

    def compute(self) -> dict[str, int]:
        return {"forward_samples": self.forward_samples, "backward_samples": self.backward_samples}

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "seed": self.seed, "batch_size": self.batch_size}


def _freeze(model: LoadedModel) -> None:
    """Attacks and attributions take input gradients only: no weight gradients."""
    if model.trainable_params is None:
        model.trainable_params = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    for p in model.module.parameters():
        p.requires_grad_(False)
