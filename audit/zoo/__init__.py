"""Model zoo: architectures the suite can build by name (fixtures and `model.train`).

Entries are lazy "module:builder" strings so that importing the zoo imports no
architecture code. A builder module may also define `dataset_kwargs(ds) -> dict`,
the keyword arguments that follow from a dataset (classes, channels, features), so
that fixtures and training derive them the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from audit.errors import ModelError, did_you_mean

if TYPE_CHECKING:
    import torch

    from audit.dataset import Dataset

ARCHITECTURES: dict[str, str] = {
    "cnn": "audit.zoo.cnn:build",
    "resnet": "audit.zoo.resnet:build",
    "vit": "audit.zoo.vit:build",
    "ft_transformer": "audit.zoo.ft_transformer:build",
    "text_transformer": "audit.zoo.text_transformer:build",
}


def _module(name: str) -> Any:
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture '{name}'.{did_you_mean(name, ARCHITECTURES)}")
    mod_name = ARCHITECTURES[name].split(":")[0]
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name != mod_name:
            raise  # a dependency of the module is missing: that is a real error
        raise ModelError(f"architecture '{name}' is not available in this version "
                         f"(module {mod_name} is missing)") from None


def builder(name: str) -> Callable[..., torch.nn.Module]:
    return getattr(_module(name), ARCHITECTURES[name].split(":")[1])


def build(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build architecture `name` with fresh weights."""
    return builder(name)(**kwargs)


def dataset_kwargs(name: str, ds: Dataset) -> dict[str, Any]:
    """Keyword arguments for `build(name, ...)` implied by a dataset."""
    fn = getattr(_module(name), "dataset_kwargs", None)
    return dict(fn(ds)) if fn is not None else {}
