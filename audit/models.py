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


def _model_path(spec: AuditSpec) -> Path:
    """`model.path` resolved: a model file, or a Hugging Face folder (one with config.json);
    anything else is one ModelError. Loading and `audit validate` read it the same way."""
    path = spec.resolve(spec.model.path or "")
    if not path.exists():
        raise ModelError(f"model file not found: {path}", where="model.path")
    if path.is_dir() and not (path / "config.json").exists():
        raise ModelError(f"{path} is a folder, not a model file", where="model.path")
    return path


def _load_model_path(spec: AuditSpec) -> LoadedModel:
    ms = spec.model
    path, where = _model_path(spec), "model.path"
    if path.is_dir():
        from audit.hf import load_hf_model

        return load_hf_model(path, spec)
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


def _stdlib_root(module_name: str) -> str | None:
    """The top-level name when `module_name` is the standard library or builtins, else None."""
    root = module_name.split(".")[0]
    if root in sys.stdlib_module_names or root in sys.builtin_module_names or root in ("builtins", "__main__"):
        return root
    return None


def _import_factory(spec: AuditSpec) -> Callable[..., Any]:
    """The spec's factory callable, imported. A factory is user code by nature, but a spec
    must never reach the standard library or builtins (`os:system`, `builtins:eval`) nor
    torch's loaders (`torch:load`, `torch.hub:load`) through it: refused by module name
    before anything is imported, and by the callable's own module after (a user module
    re-exporting `os.system`)."""
    ms = spec.model
    where = "model.factory"
    if not ms.factory:
        raise ModelError("the file holds weights only: give `factory: package.module:callable` that builds the "
                         "model (and `factory_kwargs`)", where=where)
    mod_name, _, attr = ms.factory.partition(":")
    own = "a factory must be your own callable that returns a torch.nn.Module (e.g. my_models:build)"
    root = _stdlib_root(mod_name)
    if root is not None:
        raise ModelError(f"'{ms.factory}' is in the Python standard library ({root}), which a spec may not "
                         f"call: {own}", where=where)
    if not mod_name or not attr or mod_name.startswith("."):
        raise ModelError(f"'{ms.factory}' must look like 'package.module:callable'", where=where)
    # a factory module beside the spec file is importable, like a test's conftest
    base = str(Path(spec.base_dir).resolve())
    _forget_other_copy(Path(base), mod_name)
    added = base not in sys.path
    if added:
        sys.path.insert(0, base)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ModelError(f"cannot import factory module '{mod_name}': {exc}", where=where) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: report it
        raise ModelError(f"importing factory module '{mod_name}' failed: {type(exc).__name__}: {exc}",
                         where=where) from None
    finally:
        if added:
            sys.path.remove(base)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ModelError(f"module '{mod_name}' has no callable '{attr}'.{did_you_mean(attr, public)}", where=where)
    owner = str(getattr(fn, "__module__", None) or "")
    root = _stdlib_root(owner)
    if root is not None:
        raise ModelError(f"'{ms.factory}' is {owner}.{getattr(fn, '__name__', attr)} from the Python standard "
                         f"library, which a spec may not call: {own}", where=where)
    is_module_class = isinstance(fn, type) and issubclass(fn, torch.nn.Module)
    if owner.split(".")[0] == "torch" and not is_module_class:
        raise ModelError(f"'{ms.factory}' is a torch function, not a model class: torch's callables load files or "
                         f"run code (torch.load, torch.hub.load); only torch.nn.Module classes are factories", where=where)
    if isinstance(fn, type) and not is_module_class:
        raise ModelError(f"'{ms.factory}' is the class {fn.__name__}, not a torch.nn.Module: {own}", where=where)
    return fn


def _forget_other_copy(base: Path, mod_name: str) -> None:
    """When the factory's module lives beside the spec but a module of the same name was
    imported from elsewhere (another spec's folder, in the same process: pytest, notebooks),
    drop the cached one so that this spec gets its own file, not a stale namesake."""
    parts = mod_name.split(".")
    local = next((c for c in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py"))
                  if c.is_file()), None)
    cached = sys.modules.get(mod_name)
    if local is None or cached is None:
        importlib.invalidate_caches()  # a file written since the folder was last listed
        return
    if Path(getattr(cached, "__file__", None) or "").resolve() == local.resolve():
        return
    root = parts[0]
    for name in [m for m in sys.modules if m == root or m.startswith(root + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def factory_origin(spec: AuditSpec) -> str:
    """Where the factory's module was imported from (for `audit validate`)."""
    mod_name = (spec.model.factory or "").partition(":")[0]
    module = sys.modules.get(mod_name)
    origin = getattr(module, "__file__", None)
    return f"module '{mod_name}' from {origin}" if origin else f"module '{mod_name}'"


def _build(spec: AuditSpec, fn: Callable[..., Any], *, meta: bool = False) -> torch.nn.Module:
    """Call the factory; `meta`: on the meta device when it allows it (shapes, no memory)."""
    ms = spec.model
    kwargs = dict(ms.factory_kwargs)
    if meta:
        try:
            with torch.device("meta"):
                module = fn(**kwargs)
            if isinstance(module, torch.nn.Module):
                return module
        except Exception:  # noqa: BLE001 - some factories need real tensors: build it for real below
            pass
    try:
        module = fn(**kwargs)
    except Exception as exc:  # the user's code: report, don't crash
        raise ModelError(f"factory {ms.factory}(**{kwargs}) failed: {type(exc).__name__}: {exc}",
                         where="model.factory") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"factory {ms.factory} returned a {type(module).__name__}, not a torch.nn.Module",
                         where="model.factory")
    return module


def _fit_problem(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], path: Path,
                 factory: str | None) -> str | None:
    """Why the weights in a file (key -> shape) do not fit the factory's state dict, or None."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        return f"the weights in {path} do not fit the model built by {factory}: {'; '.join(parts)} keys"
    shapes = [f"{k}: file {tuple(found[k])} vs model {tuple(v)}" for k, v in expected.items()
              if tuple(found[k]) != tuple(v)]
    if shapes:
        return f"the weights in {path} do not fit the model built by {factory}: shape mismatch {'; '.join(shapes[:3])}"
    return None


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _from_state_dict(spec: AuditSpec, state: dict[str, torch.Tensor], path: Path) -> LoadedModel:
    ms = spec.model
    fn = _import_factory(spec)

    def factory() -> torch.nn.Module:
        return _build(spec, fn)

    module = factory()
    problem = _fit_problem(_shapes(module.state_dict()), _shapes(state), path, ms.factory)
    if problem:
        raise ModelError(problem, where="model.path")
    module.load_state_dict(state, strict=True)
    return LoadedModel(module=module.eval(), sha256=file_sha256(path), source=f"{path} + {ms.factory}",
                       architecture=type(module).__name__, input_range=ms.input_range, classes=ms.classes,
                       factory=factory)


# =======================================================================================
# `audit validate`: everything about the model that needs no forward pass
# =======================================================================================
def inspect_model(spec: AuditSpec) -> str:
    """One line saying what the spec's model is and what will be imported, after checking
    what can be checked without running it: the file exists and reads, the factory is
    importable, allowed, and returns a torch.nn.Module whose state dict has the file's
    keys and shapes. Raises the ModelError the audit would raise."""
    ms = spec.model
    if ms.train is not None:
        t = ms.train
        saved = f", saved to {ms.save}" if ms.save else ""
        return f"trained by the audit: {t.architecture} on dataset '{t.data}', {t.epochs} epochs{saved}"
    if ms.fixture is not None:
        from fixtures.models import fixture_names

        if ms.fixture not in fixture_names():
            raise ModelError(f"unknown model fixture '{ms.fixture}'.{did_you_mean(ms.fixture, fixture_names())}",
                             where="model.fixture")
        return f"built-in fixture {ms.fixture} (trained deterministically on first use, then cached)"
    path, where = _model_path(spec), "model.path"
    if path.is_dir():
        from audit.hf import inspect_hf_model

        return inspect_hf_model(path, spec)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:  # keys and shapes from the header: no tensor is read
            with safe_open(str(path), framework="pt") as f:
                found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"cannot read {path}: {exc}", where=where) from None
        from audit.training import is_saved_recipe

        if not ms.factory and is_saved_recipe(path):
            return _inspect_recipe(path, found)
        return _inspect_factory(spec, path, found)
    if suffix in TORCH_SUFFIXES:
        if _is_torchscript(path):
            return f"TorchScript archive {path} (loaded with torch.jit.load; no factory, no pickle)"
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError:
            if not ms.trust_pickle:
                raise ModelError(
                    f"{path} is a full pickle, and loading it can run arbitrary code. If you trust its source "
                    f"set `model.trust_pickle: true`; better, save a state_dict "
                    f"(torch.save(model.state_dict(), path)) or safetensors and give `factory`", where=where) from None
            return (f"full pickle {path}, unpickled when the audit runs (trust_pickle: true): it can run code, "
                    f"and validate does not open it")
        except (RuntimeError, OSError, EOFError) as exc:
            raise ModelError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                             where=where) from None
        return _inspect_factory(spec, path, _shapes(_state_dict_of(obj, path)))
    raise ModelError(f"unsupported model file type '{path.suffix}': use .safetensors or a .pt state_dict (with "
                     f"`factory`), a TorchScript .pt, or a Hugging Face model folder", where=where)


def _inspect_factory(spec: AuditSpec, path: Path, found: dict[str, tuple[int, ...]]) -> str:
    ms = spec.model
    fn = _import_factory(spec)
    module = _build(spec, fn, meta=True)
    problem = _fit_problem(_shapes(module.state_dict()), found, path, ms.factory)
    if problem:
        raise ModelError(problem, where="model.path")
    return (f"weights {path} ({len(found)} tensors) fit {type(module).__name__} built by "
            f"{ms.factory}(**{dict(ms.factory_kwargs)}); imports {factory_origin(spec)}")


def _inspect_recipe(path: Path, found: dict[str, tuple[int, ...]]) -> str:
    import json

    from audit import zoo

    try:
        recipe = json.loads(path.with_suffix(".json").read_text())
        arch, kwargs = recipe["architecture"], dict(recipe.get("architecture_kwargs") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the recipe saved with {path}: {exc}", where="model.path") from None
    try:
        with torch.device("meta"):  # shapes only
            module = zoo.build(arch, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the recipe saved with {path} does not build: {type(exc).__name__}: {exc}",
                         where="model.path") from None
    problem = _fit_problem(_shapes(module.state_dict()), found, path, f"its recipe ({arch})")
    if problem:
        raise ModelError(problem, where="model.path")
    return f"weights {path} saved by `audit train`, rebuilt from its recipe: {arch} ({len(found)} tensors); no factory"
