"""The model-parameter randomization test (Adebayo et al., 2018, "Sanity Checks for
Saliency Maps"): layers of a copy of the model are re-initialised from the top down,
cascading; at each step the same samples are explained again and compared with the trained
model's attributions by Spearman rank correlation. An explanation that does not change
when the learned weights are destroyed does not explain the model."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from audit.check import Metric, cell, table
from audit.context import Context
from audit.errors import SkipCheck
from audit.stats import bootstrap_mean
from checks.explain import explainers as ex
from checks.explain.attribution.agreement import spearman_rows
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.units import Units


def parametrized_layers(module: torch.nn.Module) -> list[str]:
    """Names of modules that own parameters directly, in registration (≈ forward) order."""
    return [name for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


class Randomizer:
    """Re-initialises layers of a copy of the trained model. Fresh weights come from the
    model's factory (the same architecture, newly initialised) when it has one, else from
    each layer's own `reset_parameters`, else a normal draw with the tensor's own scale."""

    def __init__(self, module: torch.nn.Module, factory: Any, seed: int) -> None:
        self.model = copy.deepcopy(module)
        self.seed = seed
        self.fresh: dict[str, torch.Tensor] | None = None
        self.source = "reset_parameters"
        if factory is not None:
            try:
                with ex.seeded(seed):
                    state = factory().state_dict()
                own = self.model.state_dict()
                if set(state) >= set(own) and all(state[k].shape == own[k].shape for k in own):
                    self.fresh, self.source = state, "model factory"
            except Exception:  # noqa: BLE001 - a factory that needs arguments: fall back
                self.fresh = None

    def randomize(self, layer: str) -> None:
        mod = self.model.get_submodule(layer)
        prefix = f"{layer}." if layer else ""
        with torch.no_grad():
            if self.fresh is not None:
                for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                    if prefix + name in self.fresh:
                        t.copy_(self.fresh[prefix + name])
                return
            with ex.seeded(self.seed + len(layer)):
                if hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
                    return
                for p in mod.parameters(recurse=False):
                    std = float(p.std()) if p.numel() > 1 else 0.02
                    p.normal_(0.0, std or 0.02)


@dataclass
class Cascade:
    metric: Metric | None     # similarity with every layer re-initialised (None: too few finite values)
    rows: list[list[Any]]     # the cascade table's rows
    n_layers: int
    source: str               # where fresh weights came from
    # the curve: layers re-initialised, similarity, CI low, CI high (NaN where undefined)
    curve: tuple[list[int], list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], [], []))


def run_cascade(ctx: Context, params: AttributionParams, key: str,
                similarity: Callable[[torch.nn.Module], np.ndarray]) -> Cascade:
    """Re-initialise the model's layers top down in `randomization_steps` steps; after each,
    `similarity(model)` gives every explained sample's rank similarity between the trained
    model's attributions and those of the randomised copy `model`, and the step's mean
    with its CI becomes a table row and a point of the curve."""
    loaded = ctx.model
    layers = parametrized_layers(loaded.module)[::-1]  # top (output side) first
    if not layers:
        raise SkipCheck("the model has no parameters to randomise")
    n_layers = len(layers)
    points = sorted({int(v) for v in np.round(np.linspace(1, n_layers, min(params.randomization_steps, n_layers)))})
    rnd = Randomizer(loaded.module, loaded.factory, int(ctx.rng(f"{key}:randomization").integers(2**31)))
    done = 0
    out = Cascade(None, [], n_layers, rnd.source)
    xs, ys, los, his = out.curve
    for step, k in enumerate(points, 1):
        for layer in layers[done:k]:
            rnd.randomize(layer)
        done = k
        sim = similarity(rnd.model)
        ok = np.isfinite(sim)
        last = None
        if ok.sum() >= 2:
            last = bootstrap_mean(sim[ok], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:rand:{k}"))
        out.rows.append([step, k, layers[k - 1] or "(root)", None if last is None else cell(last.value, last.ci),
                         int(ok.sum())])
        xs.append(k)
        ys.append(np.nan if last is None else last.value)
        los.append(np.nan if last is None or last.ci is None else last.ci[0])
        his.append(np.nan if last is None or last.ci is None else last.ci[1])
        out.metric = last
    return out


def cascade(ctx: Context, params: AttributionParams, attribute: Callable[[torch.nn.Module], np.ndarray],
            u: np.ndarray, units: Units, key: str) -> Cascade:
    """The cascade for images and tables; `attribute(module)` explains the check's samples
    with `module`, and `u` holds the trained model's attributions per unit. The randomised
    copy runs only through the Context's counting wrapper (made once: the copy is changed
    in place)."""
    ref = np.abs(u) if params.randomization_abs else u

    @functools.cache
    def counted(model: torch.nn.Module) -> torch.nn.Module:
        return ex.TwoClassLogits(ctx.counting(model))

    def similarity(model: torch.nn.Module) -> np.ndarray:
        ur = units.reduce(attribute(counted(model)))
        return spearman_rows(ref, np.abs(ur) if params.randomization_abs else ur)

    return run_cascade(ctx, params, key, similarity)


def cascade_table(c: Cascade, params: AttributionParams) -> dict[str, Any]:
    ranked = "|attribution|" if params.randomization_abs else "signed attribution"
    return table("Model-parameter randomization cascade",
                 ["step", "layers re-initialised (top down)", "last layer", "similarity", "samples"], c.rows,
                 note=f"Spearman rank correlation ({ranked}) per explained sample between the trained model's "
                      f"and the randomised model's attributions; fresh weights from {c.source}. The metric is "
                      f"the last row (all layers re-initialised).")
