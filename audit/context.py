"""The audit context: the only door to any model.

It loads the model and datasets once, holds device and seed, and caches per dataset
(and per derived input) the logits, probabilities, predictions and losses, so that every
check shares one forward pass per sample. Every pass of every module a check runs — the
audited model, a quantized copy, a retrained twin, an exported runtime — goes through a
counted call here (`run_model`, `forward`, `time_calls`, `counting`), and ends up in
`forward_samples` / `backward_samples`.

Loaders do not see the Context: they take the spec entry and a `get_dataset` callable,
so data and model loading never call back into it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from audit.data import DatasetStore
from audit.dataset import Dataset, LoadedModel
from audit.device import resolve_device
from audit.errors import ModelError
from audit.seeding import seeded_rng
from audit.spec import AuditSpec

# A model a check may run: a torch module (run under inference mode, batched on the
# device), or any callable from a numpy batch to numpy logits (an ONNX Runtime session).
Runnable = torch.nn.Module | Callable[[np.ndarray], np.ndarray]


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
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        for start in range(0, n, batch_size):
            xb = torch.as_tensor(x[start:start + batch_size]).to(device, non_blocking=True)
            outs.append(_logits_of(module(xb)).float())
            if progress:
                progress(min(start + batch_size, n), n)
    out = torch.cat(outs).cpu().numpy() if outs else np.zeros((0, 1), np.float32)
    return out[:, None] if out.ndim == 1 else out


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
                 progress: Callable[..., None] | None = None) -> None:
        self.spec = spec
        self.seed = spec.seed
        self.device = resolve_device(device or spec.device)
        self.batch_size = spec.model.batch_size
        self.progress = progress
        self.forward_samples = 0
        self.backward_samples = 0
        self.timings: dict[str, float] = {}
        self._data = DatasetStore(spec, timings=self.timings)
        self._model: LoadedModel | None = None
        self._logits: dict[str, np.ndarray] = {}
        self._derived: dict[tuple[str, str], np.ndarray] = {}
        # rows of a dataset predicted so far by `logits_rows`: (done mask, logits)
        self._partial: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._rows = _RowCache()
        self._memo: dict[tuple[Any, ...], Any] = {}

    # ---- randomness ----------------------------------------------------------------
    def rng(self, purpose: str) -> np.random.Generator:
        """A generator seeded by the audit seed and a purpose string: independent streams
        per use, identical across runs."""
        return seeded_rng(self.seed, purpose)

    def torch_generator(self, purpose: str, device: torch.device | None = None) -> torch.Generator:
        g = torch.Generator(device=device or self.device)
        g.manual_seed(int(self.rng(purpose).integers(2**62)))
        return g

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    def from_objects(cls, datasets: dict[str, Dataset], model: LoadedModel, *, seed: int = 0,
                     device: str = "cpu", batch_size: int = 256,
                     domains: dict[str, Dataset] | None = None) -> Context:
        """A context over in-memory datasets (and cross-domain datasets) and a model (tests,
        notebooks, pytest fixtures)."""
        from audit.spec import parse_spec

        domains = domains or {}
        spec = parse_spec({"name": "in-memory audit", "seed": seed, "device": device,
                           "model": {"fixture": "in-memory", "batch_size": batch_size},
                           "data": {name: {"fixture": "in-memory"} for name in datasets},
                           "domains": {name: {"fixture": "in-memory"} for name in domains},
                           "checks": []}, check_registry=False)
        ctx = cls(spec)
        ctx._data.add({**datasets, **domains})
        ctx._model = _prepared(model, ctx.device)
        return ctx

    def has_dataset(self, name: str) -> bool:
        return self._data.has(name)

    def dataset(self, name: str) -> Dataset:
        return self._data.get(name)

    @property
    def loaded_datasets(self) -> dict[str, Dataset]:
        return self._data.loaded

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            from audit.models import load_model

            t0 = time.perf_counter()
            loaded = load_model(self.spec, device=self.device, get_dataset=self.dataset, progress=self.progress)
            self._model = _prepared(loaded, self.device)
            self.timings["load:model"] = time.perf_counter() - t0
        return self._model

    def retrain(self) -> LoadedModel:
        """Train the spec's model again (same data, seed and device), without saving. Its
        training passes are counted like any other pass a check causes."""
        from audit.training import retrain

        loaded = retrain(self.spec, self.dataset, device=self.device, progress=self.progress,
                         count=self._count)
        return _prepared(loaded, self.device)

    def train(self, ds: Dataset, train: Any, *, seed: int, factory: Callable[[], torch.nn.Module] | None = None,
              what: str | None = None) -> LoadedModel:
        """Train a model of recipe `train` (a TrainSpec; `factory` builds the module instead
        of the recipe's zoo architecture) on `ds` with `seed`, on the audit's device, without
        saving: reference models of a membership attack. Every pass is counted."""
        from audit.training import fit

        progress = (lambda _w, done, total, **kw: self.progress(what, done, total)) if self.progress and what else None
        loaded = fit(ds, train, device=self.device, seed=seed, progress=progress, count=self._count,
                     factory=factory, input_range=self.model.input_range, classes=self.model.classes)
        return _prepared(loaded, self.device)

    def auxiliary_model(self, entry: Any) -> LoadedModel:
        """A second model named like the audited one (`model:` entry: a fixture or a file,
        same safe-loading rules), e.g. a transfer-attack surrogate; loaded once per audit,
        on the device with frozen weights. Run it through `run_model` or `counting`."""
        from audit.models import load_model

        def make() -> LoadedModel:
            spec = self.spec.model_copy(update={"model": entry})
            return _prepared(load_model(spec, device=self.device, get_dataset=self.dataset), self.device)

        return self.cached(("auxiliary-model", entry.model_dump_json()), make)

    # ---- counted model calls -------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision of the audit's own inference: bf16 autocast on CUDA, float32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass of the audited model on the device, autograd allowed (attacks,
        attributions); counts the samples. Pair a backward pass with `count_backward`."""
        self.forward_samples += int(x.shape[0])
        return _logits_of(self.model.module(x))

    def count_backward(self, n: int) -> None:
        self.backward_samples += int(n)

    def _count(self, forward: int, backward: int = 0) -> None:
        self.forward_samples += int(forward)
        self.backward_samples += int(backward)

    def counting(self, module: torch.nn.Module | None = None) -> torch.nn.Module:
        """`module` (default: the audited model) wrapped so that every forward, and every
        backward through its output, is counted: for libraries (Captum, SHAP) that call
        the model themselves."""
        return _Counting(self.model.module if module is None else module, self)

    def run_model(self, module: Runnable | None, x: np.ndarray | torch.Tensor, *, what: str = "inference",
                  device: torch.device | str | None = None, batch_size: int | None = None,
                  precision: str = "audit") -> np.ndarray:
        """Counted, batched float32 logits (N, K) of `module` (None: the audited model) on `x`.

        A torch module runs under inference mode on `device` (default: the audit's) with
        the audit's autocast (`precision="float32"` turns it off); any other callable gets
        numpy batches and returns numpy logits (e.g. an ONNX Runtime session)."""
        module = self.model.module if module is None else module
        bs = batch_size or self.batch_size
        n = int(x.shape[0])
        progress = (lambda done, total: self.progress(what, done, total)) if self.progress else None
        if isinstance(module, torch.nn.Module):
            dev = torch.device(device) if device is not None else self.device
            cast = self.autocast() if precision == "audit" and dev == self.device else \
                torch.autocast(device_type=dev.type, enabled=False)
            out = predict_logits(module, x, dev, bs, autocast=cast, progress=progress)
        else:
            parts = [np.asarray(module(np.asarray(x[s:s + bs])), dtype=np.float32) for s in range(0, n, bs)]
            out = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
            out = out[:, None] if out.ndim == 1 else out
        self.forward_samples += n
        return out

    def infer(self, x: np.ndarray | torch.Tensor, *, what: str = "inference") -> np.ndarray:
        """Counted logits of the audited model on an arbitrary input, not cached: use
        `logits(name)` or `cached_logits(key, ...)` for data other checks may reuse."""
        return self.run_model(None, x, what=what)

    def time_calls(self, module: Runnable | None, x: Any, *, warmup: int, repeats: int,
                   precision: str = "audit") -> np.ndarray:
        """Seconds per call of `module` (None: the audited model) on one batch `x` (a tensor
        on the module's device, or a numpy batch for a non-torch runtime): `warmup`
        untimed calls, then `repeats` timed ones. On CUDA the device is synchronised only
        around each timed call. Every call is counted."""
        module = self.model.module if module is None else module
        times = np.empty(repeats)
        if isinstance(module, torch.nn.Module):
            cuda = x.device.type == "cuda"
            cast = self.autocast() if precision == "audit" and x.device == self.device else \
                torch.autocast(device_type=x.device.type, enabled=False)
            with torch.inference_mode(), cast:
                for _ in range(warmup):
                    module(x)
                for i in range(repeats):
                    if cuda:
                        torch.cuda.synchronize(x.device)
                    t0 = time.perf_counter()
                    module(x)
                    if cuda:
                        torch.cuda.synchronize(x.device)
                    times[i] = time.perf_counter() - t0
        else:
            for _ in range(warmup):
                module(x)
            for i in range(repeats):
                t0 = time.perf_counter()
                module(x)
                times[i] = time.perf_counter() - t0
        self.forward_samples += int(x.shape[0]) * (warmup + repeats)
        return times

    # ---- cached outputs per dataset --------------------------------------------------------
    def cached_logits(self, key: str, make_input: Callable[[], np.ndarray], label: str | None = None) -> np.ndarray:
        """Logits for a derived input (a corruption, an attack's result), computed once per
        key; `label` is what the progress display calls it. Rows whose exact bytes were run
        before (a row of a predicted dataset, of an earlier derived input: an image a
        corruption left unchanged, two severities that coincide) are not run again."""
        if key not in self._logits:
            self._logits[key] = self.infer_once(make_input(), what=label or key)
        return self._logits[key]

    def infer_once(self, x: np.ndarray | torch.Tensor, *, what: str = "inference") -> np.ndarray:
        """Counted logits of the audited model on an input, running only the rows whose exact
        bytes it has not run before (in a predicted dataset, an earlier derived input, or
        this input): no pass twice."""
        return self._rows.infer(self, x, what=what)

    def logits(self, name: str) -> np.ndarray:
        if name not in self._logits:
            ds = self.dataset(name)
            if name in self._partial:  # rows an earlier `logits_rows` computed are not run again
                self.logits_rows(name, np.flatnonzero(~self._partial[name][0]))
                self._logits[name] = self._partial.pop(name)[1]
                return self._logits[name]
            out = self._predict_rows(name, ds, None)
            self._validate_output(ds, out)
            self._logits[name] = out
        return self._logits[name]

    def logits_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Logits of some rows of a dataset (e.g. the members a check samples from 'train'):
        sliced from the cache when the whole dataset was predicted, else only the rows no
        earlier call ran are run, and kept for later calls and for `logits(name)`."""
        rows = np.asarray(rows, dtype=np.int64)
        if name in self._logits:
            return self._logits[name][rows]
        ds = self.dataset(name)
        done, values = self._partial.get(name, (None, None))
        need = np.unique(rows if done is None else rows[~done[rows]])
        if len(need):
            out = self._predict_rows(name, ds, need)
            self._validate_output(ds, out)
            if done is None:
                done, values = np.zeros(len(ds), bool), np.zeros((len(ds), out.shape[1]), out.dtype)
                self._partial[name] = (done, values)
            values[need], done[need] = out, True
        return values[rows]

    def _predict_rows(self, name: str, ds: Dataset, rows: np.ndarray | None) -> np.ndarray:
        """Counted logits of a dataset's rows (all when None); a model that cannot take them
        is one clear ModelError."""
        x = ds.x if rows is None else ds.x[rows]
        try:
            out = self.infer(x, what=f"Predicting '{name}' ({len(x):,} samples)")
        except ModelError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            # a shape or dtype mismatch surfaces in the first batch: one clear message
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"the model cannot take dataset '{name}' (input shape "
                             f"{tuple(ds.x.shape[1:])}, dtype {ds.x.dtype}): {first}") from None
        except Exception as exc:  # noqa: BLE001 - the model's own code raised: its error, in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(f"the model raised {type(exc).__name__} on dataset '{name}'"
                             + (f": {first}" if first else "")) from None
        return out

    def _derive(self, what: str, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        key = (what, name)
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """Per-audit memo for data derived from a dataset (e.g. group codes), so that a
        check's preflight and run, or two checks, compute it once."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def probabilities(self, name: str) -> np.ndarray:
        """(N, K) float64 class probabilities (softmax; sigmoid expanded to two columns)."""
        return self._derive("proba", name, lambda: logits_to_proba(self.logits(name)))

    def predictions(self, name: str) -> np.ndarray:
        return self._derive("pred", name, lambda: self.probabilities(name).argmax(axis=1))

    def losses(self, name: str) -> np.ndarray:
        """Per-sample cross-entropy of the true class."""
        def make() -> np.ndarray:
            proba = self.probabilities(name)
            y = self.dataset(name).y
            return -np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0))

        return self._derive("loss", name, make)

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

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, int]]:
        """Passes counted inside the block: `with ctx.measure() as m: ...; m["forward_samples"]`."""
        out = {"forward_samples": 0, "backward_samples": 0}
        f0, b0 = self.forward_samples, self.backward_samples
        try:
            yield out
        finally:
            out["forward_samples"] = self.forward_samples - f0
            out["backward_samples"] = self.backward_samples - b0

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "seed": self.seed, "batch_size": self.batch_size}


class _RowCache:
    """The audited model's logits by input row content, for `Context.cached_logits`: blocks
    of rows already run (each derived input; a predicted dataset, registered on the first
    lookup of rows of its shape), each with two 64-bit hashes per row (pandas' row hash
    and a linear hash of the row's 8-byte words: both must match) sorted for lookup."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[Any, ...], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.datasets: set[str] = set()

    @staticmethod
    def keys(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import pandas as pd

        raw = np.ascontiguousarray(x).reshape(x.shape[0], -1).view(np.uint8)
        pad = (-raw.shape[1]) % 8
        if pad:
            raw = np.concatenate([raw, np.zeros((raw.shape[0], pad), np.uint8)], axis=1)
        words = np.ascontiguousarray(raw).view(np.uint64)
        h1 = pd.util.hash_pandas_object(pd.DataFrame(words, copy=False), index=False).to_numpy()
        mult = np.arange(1, 2 * words.shape[1], 2, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return h1, words @ mult

    def add(self, kind: tuple[Any, ...], h1: np.ndarray, h2: np.ndarray, logits: np.ndarray) -> None:
        order = np.argsort(h1, kind="stable")
        blocks = self.blocks.setdefault(kind, [])
        blocks.append((h1[order], h2[order], logits[order]))
        # A block no smaller than half the one before it is merged into it (size tiers, as a
        # binary counter): O(log) blocks to search per lookup however many inputs were run,
        # where one block per input makes a long run of small inputs quadratic.
        while len(blocks) > 1 and 2 * len(blocks[-1][0]) >= len(blocks[-2][0]):
            (a1, a2, al), (b1, b2, bl) = blocks[-2], blocks.pop()
            k1 = np.concatenate([a1, b1])
            order = np.argsort(k1, kind="stable")  # two sorted runs: a merge
            blocks[-1] = (k1[order], np.concatenate([a2, b2])[order], np.concatenate([al, bl])[order])

    def infer(self, ctx: Context, x: Any, what: str) -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        n = arr.shape[0]
        if n == 0 or arr.dtype == object:
            return ctx.infer(x, what=what)
        kind = (arr.dtype.str, arr.shape[1:])
        for name, lg in list(ctx._logits.items()):  # predicted datasets of this shape, once each
            if name not in self.datasets and ctx._data.has(name) and name in ctx._data.loaded:
                ds = ctx._data.loaded[name]
                if hasattr(ds.x, "dtype") and (ds.x.dtype.str, ds.x.shape[1:]) == kind:
                    self.add(kind, *self.keys(ds.x), lg)
                    self.datasets.add(name)
        h1, h2 = self.keys(arr)
        out: np.ndarray | None = None
        found = np.zeros(n, bool)
        for k1, k2, lg in self.blocks.get(kind, []):
            pos = np.minimum(np.searchsorted(k1, h1), len(k1) - 1)
            hit = ~found & (k1[pos] == h1) & (k2[pos] == h2)
            if hit.any():
                if out is None:
                    out = np.empty((n,) + lg.shape[1:], lg.dtype)
                out[hit] = lg[pos[hit]]
                found |= hit
        # rows repeated within this input run once
        _, first, inverse = np.unique(np.stack([h1, h2], axis=1), axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        run = np.zeros(n, bool)
        run[first] = True
        run &= ~found
        if run.any():
            rows = np.flatnonzero(run)
            if run.all():
                sub = x
            elif isinstance(x, torch.Tensor):
                sub = x[torch.as_tensor(rows, device=x.device)]
            else:
                sub = arr[rows]
            part = ctx.infer(sub, what=what)
            if out is None:
                out = np.empty((n,) + part.shape[1:], part.dtype)
            out[rows] = part
            found |= run
        rest = ~found  # repeats of a row run in this very call
        if rest.any():
            out[rest] = out[first[inverse[rest]]]
        self.add(kind, h1, h2, out)
        return out


class _Counting(torch.nn.Module):
    """Counts every forward into the context, and every backward through a hook on the output."""

    def __init__(self, module: torch.nn.Module, ctx: Context) -> None:
        super().__init__()
        self.module = module
        self._ctx = ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        out = _logits_of(self.module(x))
        self._ctx.forward_samples += n
        if out.requires_grad:
            ctx = self._ctx
            out.register_hook(lambda g: ctx.count_backward(n))
        return out


def _prepared(model: LoadedModel, device: torch.device) -> LoadedModel:
    """On the device, in eval mode, weights frozen: attacks and attributions take input
    gradients only. Trainable parameters are counted first, for the model card."""
    if model.trainable_params is None:
        model.trainable_params = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    model.module.to(device).eval()
    for p in model.module.parameters():
        p.requires_grad_(False)
    return model
