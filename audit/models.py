"""Loading the model a spec names. Every user mistake becomes a ModelError that names the
file and the problem; nothing here executes code from a model file unless the spec says
`trust_pickle: true`.

Models: a fixture, `.safetensors` or a state-dict `.pt` plus `factory`, a TorchScript
archive, a full pickle (only with `trust_pickle`), a local Hugging Face folder, or a
training recipe (`model.train`, trained on the datasets `get_dataset` returns).
"""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from audit.data import file_sha256
from audit.dataset import Dataset, LoadedModel
from audit.errors import ModelError, did_you_mean
from audit.spec import AuditSpec

TORCH_SUFFIXES = (".pt", ".pth", ".zip", ".bin", ".ckpt", ".ts", ".jit", ".torchscript")


def load_model(spec: AuditSpec, *, device: torch.device | str = "cpu",
               get_dataset: Callable[[str], Dataset] | None = None,
               progress: Callable[..., None] | None = None) -> LoadedModel:
    """The spec's model, on the CPU unless training ran on `device`. `get_dataset` gives
    the training data when the spec trains the model."""
    ms = spec.model
    if ms.train is not None:
        from audit.training import train_model

        if get_dataset is None:
            raise ModelError("the spec trains its model: loading it needs the datasets", where="model.train")
        return train_model(spec, get_dataset, device=device, progress=progress)
    if ms.fixture is not None:
        from fixtures.models import load_fixture_model

        loaded = load_fixture_model(ms.fixture, device="cpu")
    else:
        loaded = _load_model_path(spec)
    if ms.input_range is not None:
        loaded.input_range = (float(ms.input_range[0]), float(ms.input_range[1]))
    if ms.classes:
        loaded.classes = list(ms.classes)
    return loaded


def _load_model_path(spec: AuditSpec) -> LoadedModel:
    ms = spec.model
    path = spec.resolve(ms.path or "")
    where = "model.path"
    if not path.exists():
        raise ModelError(f"model file not found: {path}", where=where)
    if path.is_dir():
        if (path / "config.json").exists():
            from audit.hf import load_hf_model

            return load_hf_model(path, spec)
        raise ModelError(f"{path} is a folder, not a model file", where=where)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from audit.training import is_saved_recipe, load_saved

        if not ms.factory and is_saved_recipe(path):  # written by `audit train`: the recipe rebuilds it
            return load_saved(path)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"cannot read {path}: {exc}", where=where) from None
        return _from_state_dict(spec, state, path)
    if suffix in TORCH_SUFFIXES:
        if _is_torchscript(path):
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError as exc:
                raise ModelError(f"cannot load TorchScript archive {path}: {str(exc).splitlines()[0]}", where=where) from None
            return LoadedModel(module=module, sha256=file_sha256(path), source=f"TorchScript {path}",
                               architecture=str(getattr(module, "original_name", "TorchScript")),
                               input_range=ms.input_range, classes=ms.classes)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch says "Weights only load failed" both for a pickle of objects (an
            # "Unsupported global") and for bytes that are no pickle at all
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            if found is None:
                raise ModelError(f"cannot read {path}: not a PyTorch state_dict, checkpoint or TorchScript archive "
                                 f"(the file is corrupt or of another format)", where=where) from None
            if not ms.trust_pickle:
                raise ModelError(
                    f"{path} is a full pickle (it holds {found.group(1)}), and loading it can run arbitrary code. "
                    f"If you trust its source set `model.trust_pickle: true`; better, save a state_dict "
                    f"(torch.save(model.state_dict(), path)) or safetensors and give `factory`", where=where) from None
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the spec
            except Exception as exc2:  # noqa: BLE001 - unpickling runs the file's own code
                raise ModelError(f"cannot unpickle {path}: {type(exc2).__name__}: {_first_line(exc2)}",
                                 where=where) from None
        except (RuntimeError, OSError, EOFError) as exc:
            raise ModelError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                             where=where) from None
        if isinstance(obj, torch.nn.Module):
            return LoadedModel(module=obj, sha256=file_sha256(path), source=f"pickled module {path} (trusted)",
                               architecture=type(obj).__name__, input_range=ms.input_range, classes=ms.classes)
        return _from_state_dict(spec, _state_dict_of(obj, path), path)
    raise ModelError(f"unsupported model file type '{path.suffix}': use .safetensors or a .pt state_dict (with "
                     f"`factory`), a TorchScript .pt, or a Hugging Face model folder", where=where)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with `code/` and `constants.pkl`; torch.save zips have neither."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):  # corrupt: torch.load says so, with the path
        return False


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the mapping itself or a usual nested key."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        keys = ", ".join(map(str, list(obj)[:10]))
        raise ModelError(f"{path} holds a dict (keys: {keys}) but no state_dict of tensors", where="model.path")
    raise ModelError(f"{path} holds a {type(obj).__name__}, not a state_dict or a module", where="model.path")


def _import_factory(spec: AuditSpec) -> Callable[..., Any]:
    ms = spec.model
    where = "model.factory"
    if not ms.factory:
        raise ModelError("the file holds weights only: give `factory: package.module:callable` that builds the "
                         "model (and `factory_kwargs`)", where=where)
    mod_name, _, attr = ms.factory.partition(":")
    # a factory module beside the spec file is importable, like a test's conftest
    base = str(Path(spec.base_dir).resolve())
    added = base not in sys.path
    if added:
        sys.path.insert(0, base)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ModelError(f"cannot import factory module '{mod_name}': {exc}", where=where) from None
    finally:
        if added:
            sys.path.remove(base)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ModelError(f"module '{mod_name}' has no callable '{attr}'.{did_you_mean(attr, public)}", where=where)
    return fn


def _from_state_dict(spec: AuditSpec, state: dict[str, torch.Tensor], path: Path) -> LoadedModel:
    ms = spec.model
    fn = _import_factory(spec)
    kwargs = dict(ms.factory_kwargs)

    def factory() -> torch.nn.Module:
        return fn(**kwargs)

    try:
        module = factory()
    except Exception as exc:  # the user's code: report, don't crash
        raise ModelError(f"factory {ms.factory}(**{kwargs}) failed: {type(exc).__name__}: {exc}",
                         where="model.factory") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"factory {ms.factory} returned a {type(module).__name__}, not a torch.nn.Module",
                         where="model.factory")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        raise ModelError(f"the weights in {path} do not fit the model built by {ms.factory}: "
                         f"{'; '.join(parts)} keys", where="model.path")
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if shapes:
        raise ModelError(f"the weights in {path} do not fit the model built by {ms.factory}: "
                         f"shape mismatch {'; '.join(shapes[:3])}", where="model.path")
    module.load_state_dict(state, strict=True)
    return LoadedModel(module=module.eval(), sha256=file_sha256(path), source=f"{path} + {ms.factory}",
                       architecture=type(module).__name__, input_range=ms.input_range, classes=ms.classes,
                       factory=factory)
