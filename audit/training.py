"""Training mode: `model.train` in the spec builds a zoo architecture and trains it.

One code path for CPU and GPU: the data are moved to the device once, batches are
gathered there with a seeded on-device permutation, losses and correct counts are
accumulated as device tensors, and the host reads them once per epoch (no host sync
inside the step loop). AMP `auto` means bf16 autocast on CUDA (fp16 with a GradScaler
where bf16 is not supported; the scaler's overflow test reads one flag per step) and full
precision on the CPU. The training split lives on the device for the whole run, which
suits the datasets an audit trains on (up to a few GB).

Reproducibility: weights are initialised on the CPU from the seed inside a forked RNG
(the caller's global RNG state is left alone), deterministic algorithms are requested
(enforced on the CPU; on CUDA a non-deterministic kernel only warns), and the
validation split is carved from the training data with the same seed. The same spec and
seed on the CPU give bit-identical weights.

`model.save` writes the weights as `.safetensors` and a JSON recipe beside them (same
stem, `.json`: architecture, its keyword arguments, classes, tokenizer, the training
spec and record), both atomically; the training record holds the weights' SHA-256.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audit import zoo
from audit.dataset import Dataset, LoadedModel
from audit.errors import AuditInputError, DataError, ModelError
from audit.outputs import atomic_write_bytes
from audit.spec import AuditSpec, TrainSpec

log = logging.getLogger("audit.training")
RECIPE_FORMAT = "audit-model/1"
Progress = Callable[..., None]
Counter = Callable[[int, int], None]  # (forward samples, backward samples) of a training step


# ---- pieces ------------------------------------------------------------------------------
def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full precision."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices; stratified by class where every class can be."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    n_val = int(np.ceil(fraction * len(y)))
    present = counts[counts > 0]
    stratify = y if present.min() >= 2 and n_val >= len(present) and len(y) - n_val >= len(present) else None
    train, val = train_test_split(idx, test_size=n_val, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(val)


def architecture_kwargs(train: TrainSpec, ds: Dataset) -> dict[str, Any]:
    """Keyword arguments for the zoo builder: implied by the data, overridden by `options`."""
    try:
        implied = zoo.dataset_kwargs(train.architecture, ds)
    except ValueError as exc:
        raise DataError(f"cannot train '{train.architecture}' on dataset '{ds.name}': {exc}") from None
    return {**implied, **train.options}


def state_bytes(module: torch.nn.Module) -> bytes:
    """The module's weights serialized as safetensors (deterministic: sorted keys, no metadata)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()})


def _input_range(ds: Dataset, given: tuple[float, float] | None) -> tuple[float, float] | None:
    if given is not None:
        return given
    if ds.kind != "image" or len(ds) == 0:
        return None
    lo, hi = float(ds.x.min()), float(ds.x.max())
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)


def _report(progress: Progress | None, what: str, done: int, total: int, detail: str) -> None:
    """Per-epoch progress; the loss and metric go in `detail` when the callback takes it."""
    if progress is None:
        return
    if _accepts_detail(progress):
        progress(what, done, total, detail=detail)
    else:
        progress(what, done, total)


def _accepts_detail(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "detail" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    import torch.utils.deterministic as det

    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    before_fill = det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    # filling every torch.empty with NaN guards reads of uninitialised memory, at a large
    # cost (60% on a small Transformer step); no training op here reads it
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
        det.fill_uninitialized_memory = before_fill


def make_optimizer(train: TrainSpec, module: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer: AdamW, or SGD with Nesterov momentum 0.9."""
    if train.optimizer == "adamw":
        return torch.optim.AdamW(module.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(module.parameters(), lr=train.lr, momentum=0.9, nesterov=True,
                           weight_decay=train.weight_decay)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    # a last batch of one sample breaks BatchNorm in training mode; it joins the next epoch's shuffle
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        spans.pop()
    return spans


# ---- the training loop ---------------------------------------------------------------------
def fit(ds: Dataset, train: TrainSpec, *, device: torch.device | str = "cpu", seed: int = 0,
        progress: Progress | None = None, input_range: tuple[float, float] | None = None,
        classes: list[str] | None = None, count: Counter | None = None,
        factory: Callable[[], torch.nn.Module] | None = None) -> LoadedModel:
    """Train `train.architecture` on `ds` (a validation split carved with `seed`); returns the
    trained model in eval mode with its training record in `.training`. `count` is told
    the samples of every forward and backward pass (an audit counts a retraining's).
    `factory` builds the module instead of the zoo architecture (a user's model retrained
    with the recipe's hyper-parameters, e.g. reference models of a membership attack).
    With `train.dp`, training is differentially private (DP-SGD through Opacus, see
    `fit_private`)."""
    device = torch.device(device)
    if len(ds) < 4:
        raise DataError(f"dataset '{ds.name}' has {len(ds)} rows: too few to train on")
    if classes is not None and len(classes) != ds.n_classes:
        raise DataError(f"model.classes names {len(classes)} classes but dataset '{ds.name}' has {ds.n_classes}")
    if factory is None:
        kwargs = architecture_kwargs(train, ds)
        factory = functools.partial(zoo.build, train.architecture, **kwargs)
    else:
        kwargs = {}
    if getattr(train, "dp", None) is not None:
        return fit_private(ds, train, factory, kwargs, device=device, seed=seed, progress=progress,
                           input_range=input_range, classes=classes, count=count)
    dtype = amp_dtype(train.amp, device)
    tr_idx, va_idx = validation_split(ds.y, train.val_fraction, seed)
    t_start = time.perf_counter()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), _deterministic(device):
        torch.manual_seed(seed)
        try:
            module = factory()  # initialised on the CPU: the same weights whatever the device
        except (TypeError, ValueError) as exc:
            raise ModelError(f"cannot build '{train.architecture}' with {kwargs}: {exc}") from None
        module.to(device)
        x_tr = torch.from_numpy(np.ascontiguousarray(ds.x[tr_idx])).to(device)
        y_tr = torch.from_numpy(ds.y[tr_idx].astype(np.int64)).to(device)
        x_va = torch.from_numpy(np.ascontiguousarray(ds.x[va_idx])).to(device)
        y_va = torch.from_numpy(ds.y[va_idx].astype(np.int64)).to(device)
        gen = torch.Generator(device=device).manual_seed(seed)
        spans = _batches(len(y_tr), train.batch_size)
        steps = train.epochs * len(spans)

        opt = make_optimizer(train, module)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
                 if train.scheduler == "cosine" else None)
        # fp16 needs loss scaling; bf16 has fp32's range and does not
        scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

        epochs: list[dict[str, Any]] = []
        best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
        patience = train.early_stopping.patience if train.early_stopping else None
        what = f"train {train.architecture}"
        for epoch in range(1, train.epochs + 1):
            t_epoch = time.perf_counter()
            module.train()
            loss_sum = torch.zeros((), device=device)
            seen = 0
            perm = torch.randperm(len(y_tr), generator=gen, device=device)
            for start, stop in spans:
                b = perm[start:stop]
                xb, yb = x_tr[b], y_tr[b]
                with _autocast(device, dtype):
                    loss = F.cross_entropy(module(xb).float(), yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if sched is not None:
                    sched.step()
                loss_sum += loss.detach() * (stop - start)  # stays on the device
                seen += stop - start
            val_loss, val_correct = _evaluate(module, x_va, y_va, train.batch_size, device, dtype)
            if count is not None:
                count(seen + len(y_va), seen)
            # the one host read of the epoch
            tl, vl, vc = torch.stack([loss_sum / max(seen, 1), val_loss, val_correct]).tolist()
            if not (np.isfinite(tl) and np.isfinite(vl)):
                raise ModelError(f"training {train.architecture} diverged in epoch {epoch} (training loss {tl}, "
                                 f"validation loss {vl}): lower model.train.lr (now {train.lr})",
                                 where="model.train")
            row = {"epoch": epoch, "train_loss": round(tl, 6), "val_loss": round(vl, 6),
                   "val_accuracy": round(vc / max(len(y_va), 1), 6), "lr": opt.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - t_epoch, 4)}
            epochs.append(row)
            if vl < best_loss:
                best_loss, best_epoch, stale = vl, epoch, 0
                if patience is not None:
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                stale += 1
            log.info("%s epoch %d/%d: train loss %.4f, val loss %.4f, val accuracy %.4f", what, epoch,
                     train.epochs, tl, vl, row["val_accuracy"])
            _report(progress, what, epoch, train.epochs,
                    f"loss {tl:.3f} · val loss {vl:.3f} · val acc {row['val_accuracy']:.3f}")
            if patience is not None and stale >= patience:
                break
        if best_state is not None:  # early stopping restores the best epoch's weights
            module.load_state_dict(best_state)
    module.eval()
    wall = time.perf_counter() - t_start
    weights = state_bytes(module)
    sha = hashlib.sha256(weights).hexdigest()
    best = epochs[best_epoch - 1]
    record: dict[str, Any] = {
        "architecture": train.architecture,
        "architecture_kwargs": _jsonable(kwargs),
        "recipe": {**train.model_dump(mode="json"), "seed": seed, "loss": "cross-entropy", "metric": "accuracy"},
        "loss": "cross-entropy",
        "optimizer": ({"name": "AdamW", "lr": train.lr, "weight_decay": train.weight_decay}
                      if train.optimizer == "adamw" else
                      {"name": "SGD", "lr": train.lr, "momentum": 0.9, "nesterov": True,
                       "weight_decay": train.weight_decay}),
        "scheduler": "cosine annealing per step" if sched is not None else "none",
        "data": {"dataset": train.data, "name": ds.name, "sha256": ds.sha256, "n_train": int(len(tr_idx)),
                 "n_val": int(len(va_idx)), "val_fraction": train.val_fraction, "split_seed": seed},
        "epochs": epochs,
        "epochs_run": len(epochs),
        "best_epoch": best_epoch,
        "best_val_loss": best["val_loss"],
        "best_val_accuracy": best["val_accuracy"],
        "stopped_early": len(epochs) < train.epochs,
        "restored_best": best_state is not None,
        "wall_s": round(wall, 3),
        "seconds_per_epoch": round(sum(e["seconds"] for e in epochs) / len(epochs), 4),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "amp": {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
        "seed": seed,
        "deterministic": device.type == "cpu",
        "params": int(sum(p.numel() for p in module.parameters())),
        "model_sha256": sha,
        "saved_to": None,
        "versions": {"torch": torch.__version__},
    }
    tok = ds.meta.get("tokenizer")
    if tok:
        record["tokenizer"] = {"type": tok.get("type"), "vocab_size": len(tok.get("vocab", ())),
                               "max_len": tok.get("max_len"),
                               "sha256": hashlib.sha256(json.dumps(tok, sort_keys=True).encode()).hexdigest()}
    loaded = LoadedModel(module=module, sha256=sha, architecture=train.architecture,
                         source=f"trained {train.architecture} on {ds.name} ({len(epochs)} epochs, seed {seed})",
                         input_range=_input_range(ds, input_range), classes=classes or list(ds.classes),
                         training=record, factory=factory)
    return loaded


class _OpacusReady:
    """A factory whose modules Opacus can train: the original factory's module with the
    layers Opacus cannot handle replaced (BatchNorm -> GroupNorm), as `fit_private` trained it."""

    def __init__(self, factory: Callable[[], torch.nn.Module]) -> None:
        self.factory = factory

    def __call__(self) -> torch.nn.Module:
        from opacus.validators import ModuleValidator

        module = self.factory()
        return ModuleValidator.fix(module) if ModuleValidator.validate(module, strict=False) else module


def _opacus_supports(module: torch.nn.Module) -> bool:
    from opacus.grad_sample import GradSampleModule

    return type(module) in GradSampleModule.GRAD_SAMPLERS


def fit_private(ds: Dataset, train: TrainSpec, factory: Callable[[], torch.nn.Module], kwargs: dict[str, Any], *,
                device: torch.device, seed: int = 0, progress: Progress | None = None,
                input_range: tuple[float, float] | None = None, classes: list[str] | None = None,
                count: Counter | None = None) -> LoadedModel:
    """DP-SGD (Abadi et al. 2016) through Opacus: Poisson-sampled batches (expected size
    `batch_size`), per-sample gradients clipped to `dp.max_grad_norm`, Gaussian noise
    calibrated by the RDP accountant so that `epochs` epochs spend at most `dp.epsilon` at
    `dp.delta`. Layers Opacus cannot train are replaced where Opacus has a replacement
    (BatchNorm -> GroupNorm, noted in the record), else named in a ModelError. The
    accountant's (epsilon, delta) goes into the record under `privacy`. Full precision;
    early stopping is not applied (the budget is spent on the planned epochs)."""
    try:
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator
    except ImportError:
        raise ModelError("model.train.dp trains with Opacus, which is not installed: "
                         "pip install 'audit-suite[privacy]'", where="model.train.dp") from None
    dp = train.dp
    assert dp is not None
    tr_idx, va_idx = validation_split(ds.y, train.val_fraction, seed)
    t_start = time.perf_counter()
    replaced: list[str] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            module = factory()
        except (TypeError, ValueError) as exc:
            raise ModelError(f"cannot build '{train.architecture}' with {kwargs}: {exc}") from None
        problems = ModuleValidator.validate(module, strict=False)
        if problems:
            fixed = ModuleValidator.fix(module)
            left = ModuleValidator.validate(fixed, strict=False)
            if left:
                raise ModelError("differentially private training cannot handle these layers: "
                                 + "; ".join(str(e) for e in left), where="model.train.dp")
            before = {type(m).__name__ for m in module.modules()}
            after = {type(m).__name__ for m in fixed.modules()}
            replaced = [f"{', '.join(sorted(before - after))} replaced by {', '.join(sorted(after - before))} "
                        "(Opacus cannot compute per-sample gradients through batch statistics)"]
            module = fixed
            factory = _OpacusReady(factory)
        module.to(device)
        x_tr = torch.from_numpy(np.ascontiguousarray(ds.x[tr_idx]))
        y_tr = torch.from_numpy(ds.y[tr_idx].astype(np.int64))
        x_va = torch.from_numpy(np.ascontiguousarray(ds.x[va_idx])).to(device)
        y_va = torch.from_numpy(ds.y[va_idx].astype(np.int64)).to(device)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_tr, y_tr), batch_size=train.batch_size,
                                             generator=torch.Generator().manual_seed(seed))
        opt = make_optimizer(train, module)
        engine = PrivacyEngine(accountant="rdp")
        noise_gen = torch.Generator(device=device).manual_seed(seed)
        try:
            private, opt, loader = engine.make_private_with_epsilon(
                module=module, optimizer=opt, data_loader=loader, target_epsilon=dp.epsilon, target_delta=dp.delta,
                epochs=train.epochs, max_grad_norm=dp.max_grad_norm, noise_generator=noise_gen)
        except (NotImplementedError, ValueError) as exc:
            layers = sorted({type(m).__name__ for m in module.modules()
                             if any(p.requires_grad for p in m.parameters(recurse=False))
                             and not _opacus_supports(m)})
            raise ModelError("differentially private training cannot compute per-sample gradients for "
                             f"{', '.join(layers) or 'a layer of this model'} ({str(exc).splitlines()[0]})",
                             where="model.train.dp") from None
        steps = train.epochs * max(len(loader), 1)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
                 if train.scheduler == "cosine" else None)
        epochs: list[dict[str, Any]] = []
        what = f"train {train.architecture} (DP, epsilon {dp.epsilon:g})"
        for epoch in range(1, train.epochs + 1):
            t_epoch = time.perf_counter()
            private.train()
            loss_sum = torch.zeros((), device=device)
            seen = 0
            for xb, yb in loader:
                if len(yb) == 0:
                    continue  # Poisson sampling can draw an empty batch
                xb, yb = xb.to(device), yb.to(device)
                loss = F.cross_entropy(private(xb).float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                loss_sum += loss.detach() * len(yb)
                seen += len(yb)
            val_loss, val_correct = _evaluate(private, x_va, y_va, train.batch_size, device, None)
            if count is not None:
                count(seen + len(y_va), seen)
            tl, vl, vc = torch.stack([loss_sum / max(seen, 1), val_loss, val_correct]).tolist()
            if not (np.isfinite(tl) and np.isfinite(vl)):
                raise ModelError(f"DP training of {train.architecture} diverged in epoch {epoch}: lower "
                                 f"model.train.lr (now {train.lr})", where="model.train")
            row = {"epoch": epoch, "train_loss": round(tl, 6), "val_loss": round(vl, 6),
                   "val_accuracy": round(vc / max(len(y_va), 1), 6), "lr": opt.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - t_epoch, 4),
                   "epsilon_spent": round(float(engine.get_epsilon(dp.delta)), 4)}
            epochs.append(row)
            _report(progress, what, epoch, train.epochs,
                    f"loss {tl:.3f} · val acc {row['val_accuracy']:.3f} · epsilon {row['epsilon_spent']:.2f}")
        noise = float(opt.noise_multiplier)
        sample_rate = 1.0 / max(len(loader), 1)
        trained = private._module
    # a clean module (no Opacus hooks) with the trained weights
    with torch.random.fork_rng(devices=[]):
        module = factory()
    module.load_state_dict(trained.state_dict())
    module.to(device).eval()
    wall = time.perf_counter() - t_start
    weights = state_bytes(module)
    sha = hashlib.sha256(weights).hexdigest()
    best_epoch = len(epochs)
    last = epochs[-1]
    eps_spent = float(engine.get_epsilon(dp.delta))
    record: dict[str, Any] = {
        "architecture": train.architecture,
        "architecture_kwargs": _jsonable(kwargs),
        "recipe": {**train.model_dump(mode="json"), "seed": seed, "loss": "cross-entropy", "metric": "accuracy"},
        "loss": "cross-entropy",
        "optimizer": {"name": f"DP-{'AdamW' if train.optimizer == 'adamw' else 'SGD'} (Opacus)", "lr": train.lr,
                      "weight_decay": train.weight_decay},
        "scheduler": "cosine annealing per step" if sched is not None else "none",
        "data": {"dataset": train.data, "name": ds.name, "sha256": ds.sha256, "n_train": int(len(tr_idx)),
                 "n_val": int(len(va_idx)), "val_fraction": train.val_fraction, "split_seed": seed},
        "epochs": epochs, "epochs_run": len(epochs), "best_epoch": best_epoch,
        "best_val_loss": last["val_loss"], "best_val_accuracy": last["val_accuracy"],
        "stopped_early": False, "restored_best": False,
        "wall_s": round(wall, 3), "seconds_per_epoch": round(sum(e["seconds"] for e in epochs) / len(epochs), 4),
        "device": str(device), "cpu_threads": torch.get_num_threads(), "amp": "off", "seed": seed,
        "deterministic": False, "params": int(sum(p.numel() for p in module.parameters())),
        "model_sha256": sha, "saved_to": None, "versions": {"torch": torch.__version__},
        "privacy": {"mechanism": "DP-SGD (Opacus, Poisson sampling, per-sample clipping, Gaussian noise)",
                    "epsilon": round(eps_spent, 4), "target_epsilon": dp.epsilon, "delta": dp.delta,
                    "max_grad_norm": dp.max_grad_norm, "noise_multiplier": round(noise, 6),
                    "sample_rate": round(sample_rate, 6), "accountant": "RDP",
                    "layers_replaced": replaced,
                    "note": "epsilon counts the training split only; the validation carve-out is not protected "
                            "and not used for anything but the curves"},
    }
    return LoadedModel(module=module, sha256=sha, architecture=train.architecture,
                       source=(f"trained {train.architecture} on {ds.name} with DP-SGD (epsilon {eps_spent:.3g}, "
                               f"delta {dp.delta:g}; {len(epochs)} epochs, seed {seed})"),
                       input_range=_input_range(ds, input_range), classes=classes or list(ds.classes),
                       training=record, factory=factory)


def _evaluate(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
              device: torch.device, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed validation loss and correct count, as device tensors (no host read)."""
    module.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    with torch.no_grad(), _autocast(device, dtype):
        for start in range(0, len(y), batch_size):
            out = module(x[start:start + batch_size]).float()
            yb = y[start:start + batch_size]
            loss += F.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
    return loss / max(len(y), 1), correct


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


# ---- spec entry points ----------------------------------------------------------------------
def train_seed(spec: AuditSpec) -> int:
    train = spec.model.train
    return spec.seed if train is None or train.seed is None else train.seed


def retrain(spec: AuditSpec, get_dataset: Callable[[str], Dataset], *, device: torch.device | str = "cpu",
            progress: Progress | None = None, count: Counter | None = None) -> LoadedModel:
    """Train the spec's model again (same data, seed and device), without saving."""
    if spec.model.train is None:
        raise ModelError("the spec has no model.train section to retrain", where=f"{spec.source}: model")
    ds = get_dataset(spec.model.train.data)
    return fit(ds, spec.model.train, device=device, seed=train_seed(spec), progress=progress,
               input_range=spec.model.input_range, classes=spec.model.classes, count=count)


def train_model(spec: AuditSpec, get_dataset: Callable[[str], Dataset], *, device: torch.device | str = "cpu",
                progress: Progress | None = None) -> LoadedModel:
    """The model of a spec with `model.train`: trained on the spec's data and `device`, saved
    when `model.save` is set. Called by the model loader."""
    if spec.model.save:  # an unwritable destination is known now, not after training
        check_save_path(spec.resolve(spec.model.save))
    loaded = retrain(spec, get_dataset, device=device, progress=progress)
    if spec.model.save:
        tokenizer = get_dataset(spec.model.train.data).meta.get("tokenizer")  # type: ignore[union-attr]
        save_model(loaded, spec.resolve(spec.model.save), tokenizer=tokenizer)
    return loaded


def train_and_save(spec: AuditSpec, device: str | None = None, progress: Progress | None = None) -> LoadedModel:
    """`audit train SPEC`: train the spec's model and save it, without auditing."""
    from audit.data import DatasetStore
    from audit.device import resolve_device

    if spec.model.train is None:
        raise AuditInputError("the spec has no model.train section", where=f"{spec.source}: model")
    if not spec.model.save:
        raise AuditInputError("`audit train` needs model.save: where to write the trained weights",
                              where=f"{spec.source}: model.save")
    return train_model(spec, DatasetStore(spec).get, device=resolve_device(device or spec.device), progress=progress)


# ---- saving and loading -----------------------------------------------------------------------
def recipe_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def check_save_path(path: Path) -> None:
    """Raise AuditInputError (naming the path) when `model.save` cannot be written there."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise AuditInputError(f"model.save must name a .safetensors file, not '{path.name}'", where="model.save")
    if path.is_dir():
        raise AuditInputError(f"cannot save the trained model to {path}: it is a folder", where="model.save")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise AuditInputError(f"cannot save the trained model to {path}: {reason}", where="model.save") from None


def save_model(loaded: LoadedModel, path: str | Path, tokenizer: dict[str, Any] | None = None) -> Path:
    """Write `path` (.safetensors) and its JSON recipe beside it (with the data's tokenizer,
    if any), atomically; records `saved_to` and the file's SHA-256 in the training record
    (the same hash as `fit` recorded: the serialization is deterministic)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise AuditInputError(f"model.save must name a .safetensors file, not '{path.name}'", where="model.save")
    weights = state_bytes(loaded.module)
    sha = hashlib.sha256(weights).hexdigest()
    record = dict(loaded.training or {})
    record.update(model_sha256=sha, saved_to=str(path), recipe_path=str(recipe_path(path)))
    recipe = {
        "format": RECIPE_FORMAT, "architecture": loaded.architecture,
        "architecture_kwargs": record.get("architecture_kwargs", {}), "classes": loaded.classes,
        "input_range": list(loaded.input_range) if loaded.input_range else None,
        "tokenizer": tokenizer, "model_sha256": sha, "training": record,
    }
    try:
        atomic_write_bytes(path, weights)
        atomic_write_bytes(recipe_path(path), json.dumps(recipe, indent=2, sort_keys=True).encode())
    except OSError as exc:  # a read-only folder, a full disk: name the path, exit 2
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise AuditInputError(f"cannot save the trained model to {path}: {reason}", where="model.save") from None
    loaded.sha256 = sha
    loaded.training = record
    loaded.source += f"; saved to {path}"
    return path


def is_saved_recipe(path: Path) -> bool:
    """Whether `path` is a .safetensors file written by `save_model` (a recipe beside it)."""
    rp = recipe_path(path)
    if path.suffix != ".safetensors" or not rp.is_file():
        return False
    try:
        return json.loads(rp.read_text()).get("format") == RECIPE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def load_saved(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a model saved by `save_model` from its recipe (no factory needed, no pickle)."""
    from safetensors.torch import load

    path = Path(path)
    try:
        recipe = json.loads(recipe_path(path).read_text())
        data = path.read_bytes()
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read saved model {path} and its recipe: {exc}") from None
    factory = functools.partial(zoo.build, recipe["architecture"], **recipe["architecture_kwargs"])
    with torch.random.fork_rng(devices=[]):  # the fresh init is overwritten
        module = factory()
    try:
        module.load_state_dict(load(data), strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {path} do not fit the recipe's {recipe['architecture']}: "
                         f"{str(exc).splitlines()[0]}") from None
    ir = recipe.get("input_range")
    loaded = LoadedModel(module=module.to(device).eval(), sha256=hashlib.sha256(data).hexdigest(),
                         source=f"{path} ({recipe['architecture']} saved by audit train)",
                         architecture=recipe["architecture"], input_range=tuple(ir) if ir else None,
                         classes=recipe.get("classes"), training=recipe.get("training"), factory=factory)
    return loaded
