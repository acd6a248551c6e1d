"""explain.attribution: Captum / SHAP attributions, and tests of the attributions themselves.

Every tool can draw a saliency map; this check also asks whether the map means anything:

* deletion_faithfulness: remove features (image patches, tabular feature groups) in
  attribution order, replacing them by the baseline, and compare how fast the target-class
  probability falls with removal in random order. Per sample: the area between the two
  curves, each normalised by the sample's starting probability. Positive = better than random.
* randomization_similarity: the model-parameter randomization test (Adebayo et al., 2018,
  "Sanity Checks for Saliency Maps"). Layers are re-initialised from the top down, cascading;
  at each step the same samples are explained again and compared with the trained model's
  attributions by Spearman rank correlation. The metric is the similarity once every layer is
  re-initialised; the cascade is evidence. High = the map does not depend on what was learned.
* sensitive_attribution_share (tabular, `sensitive` given): share of the total absolute
  attribution mass on the sensitive features.
* method_agreement (`compare_with` given): Spearman correlation of the two methods' global
  importances (mean |attribution| per feature).

Every metric is a mean of per-sample values, or a function of them, with a weight-bootstrap CI
over the explained samples. Attributions are computed by Captum and SHAP (`checks.explain.explainers`);
an explainer function can be injected (`Attribution(explainer=...)`) to test the tests.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from checks.explain import explainers as ex
from audit.check import Check, Flag, Measurement, Metric, MetricSpec, Params, cell, chart, higher, lower, table, text
from audit.context import Context, logits_to_proba
from audit.dataset import Dataset
from audit.errors import DataError, SkipCheck
from audit.registry import register_check
from audit.stats import bootstrap_mean, bootstrap_weighted, resample_weights

Method = Literal["integrated_gradients", "saliency", "deeplift", "gradient_shap", "occlusion",
                 "shap_gradient", "shap_deep", "shap_kernel", "shap_permutation"]

# Flag IG when the completeness gap (sum of attributions vs output difference) is this large.
COMPLETENESS_FLAG = 0.05
MAX_AGNOSTIC_FEATURES = 1024  # Kernel/Permutation SHAP over more raw features is impractical
_DELETION_ROWS_PER_CHUNK = 2**16 * 64  # perturbed input elements held at once (~16 MB float32)


class AttributionParams(Params):
    method: Method = "integrated_gradients"
    n_samples: int = Field(64, ge=2, le=100_000, description="explained samples (seeded random subset)")
    baseline: Literal["zeros", "mean", "blurred"] = "zeros"
    target: Literal["predicted", "true"] | int = "predicted"
    compare_with: Method | None = None
    sensitive: list[str] = Field(default_factory=list)
    batch_size: int | None = Field(None, ge=1, description="explained samples per chunk (default: model batch size)")
    n_steps: int = Field(32, ge=2, le=4096, description="IG steps; GradientSHAP / SHAP Gradient samples")
    n_background: int = Field(20, ge=1, le=2000, description="background rows (k-means centroids for Kernel/Permutation)")
    n_evals: int | None = Field(None, ge=8, description="model evaluations per sample (Kernel/Permutation SHAP)")
    occlusion_window: int | None = Field(None, ge=1, description="image occlusion patch side")
    blur_sigma: float | None = Field(None, gt=0, description="Gaussian sigma of the blurred baseline (pixels)")
    deletion_steps: int = Field(16, ge=2, le=512)
    deletion_patch: int | None = Field(None, ge=1, description="image patch side removed per deletion unit")
    deletion_random_orders: int = Field(2, ge=1, le=64)
    randomization: bool = True
    randomization_steps: int = Field(4, ge=1, le=256, description="cascade points evaluated (top layer ... all layers)")
    randomization_abs: bool = Field(False, description="rank |attribution| instead of signed attribution")

    @field_validator("sensitive", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


@dataclass
class Units:
    """How raw input elements aggregate into features: image pixels (channels summed) or
    tabular feature groups (one-hot columns of one original feature)."""

    index: np.ndarray  # (n_elements,) unit of each flat input element
    names: list[str]
    shape: tuple[int, ...] | None = None  # image (H, W)

    @property
    def n(self) -> int:
        return len(self.names)

    def reduce(self, a: np.ndarray) -> np.ndarray:
        """(N, ...) attributions -> (N, n_units) sums (signed)."""
        if self.shape is not None:  # image: sum the channels of each pixel
            return a.astype(np.float64).sum(axis=1).reshape(a.shape[0], -1)
        flat = a.reshape(a.shape[0], -1).astype(np.float64)
        out = np.zeros((a.shape[0], self.n))
        np.add.at(out.T, self.index, flat.T)
        return out


def _feature_units(ds: Dataset) -> Units:
    shape = ds.x.shape[1:]
    if ds.kind == "image":
        c, h, w = shape
        return Units(np.tile(np.arange(h * w), c), [f"({i // w},{i % w})" for i in range(h * w)], (h, w))
    n_cols = int(np.prod(shape))
    index = np.full(n_cols, -1)
    names: list[str] = []
    for name, cols in (ds.feature_groups or {}).items():
        free = [c for c in cols if index[c] < 0]
        if free:
            index[free] = len(names)
            names.append(name)
    for c in np.flatnonzero(index < 0):
        index[c] = len(names)
        names.append(ds.feature_names[c] if ds.feature_names else f"x{c}")
    return Units(index, names)


def _sensitive_columns(ds: Dataset, attr: str) -> list[int] | None:
    """Input columns encoding `attr`; [] when it is a sensitive attribute that is not a
    model input; None when the dataset knows no such name."""
    if ds.feature_groups and attr in ds.feature_groups:
        return sorted(int(c) for c in ds.feature_groups[attr])
    names = ds.feature_names or []
    if attr in names:
        return [names.index(attr)]
    cols = [i for i, n in enumerate(names) if n.startswith((f"{attr}=", f"{attr}_"))]
    if cols:
        return cols
    return [] if attr in ds.sensitive else None


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of a with the same row of b (NaN if constant)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _parametrized_layers(module: torch.nn.Module) -> list[str]:
    """Names of modules that own parameters directly, in registration (≈ forward) order."""
    return [name for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


class _Randomizer:
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


def _targets(params: AttributionParams, ds: Dataset, rows: np.ndarray, pred_all: np.ndarray) -> np.ndarray:
    if params.target == "predicted":
        return pred_all[rows].astype(np.int64)
    if params.target == "true":
        return ds.y[rows].astype(np.int64)
    return np.full(len(rows), int(params.target), dtype=np.int64)


class _Phases:
    """Wall time and counted forward/backward samples of each phase, for the cost table."""

    def __init__(self, ctx: Context, n: int) -> None:
        self.ctx, self.n = ctx, n
        self.rows: list[list[Any]] = []

    @contextlib.contextmanager
    def __call__(self, label: str, per_sample: bool = True) -> Iterator[None]:
        f0, t0 = self.ctx.compute(), time.perf_counter()
        yield
        dt, f1 = time.perf_counter() - t0, self.ctx.compute()
        self.rows.append([label, round(dt, 4), round(dt / self.n, 6) if per_sample else None,
                          f1["forward_samples"] - f0["forward_samples"],
                          f1["backward_samples"] - f0["backward_samples"]])

    def table(self, note: str) -> dict[str, Any]:
        total = ["total", round(sum(r[1] for r in self.rows), 4), None,
                 sum(r[3] for r in self.rows), sum(r[4] for r in self.rows)]
        return table("Attribution cost", ["phase", "seconds", "per explained sample (s)", "forward samples",
                                          "backward samples"], self.rows + [total], note=note)


@register_check
class Attribution(Check):
    name = "explain.attribution"
    version = 1
    area = "explainability"
    requires = ("data",)
    # None is a proportion (a share of samples): they are means of per-sample values.
    metrics: ClassVar[dict[str, MetricSpec]] = {
        "deletion_faithfulness": higher(
            "How much faster the explained class's probability falls when features are removed in "
            "attribution order than in random order (normalised area between the curves; > 0 means "
            "the attributions point at what the model uses)."),
        "randomization_similarity": lower(
            "Rank correlation between attributions of the trained model and of the same architecture "
            "with re-initialised weights (Adebayo et al., 2018); near 1 means the explanation does not "
            "depend on what the model learned.", bounds=(-1.0, 1.0)),
        "sensitive_attribution_share": lower(
            "Share of the total absolute attribution that falls on the sensitive features: how much "
            "the model leans on them directly, even when group rates look fine.", bounds=(0.0, 1.0)),
        "method_agreement": higher(
            "Rank correlation of the global feature importances of two attribution methods; low "
            "agreement means the explanations should not be trusted without further checks.",
            bounds=(-1.0, 1.0)),
    }
    summary = "Captum/SHAP attributions, with deletion faithfulness and the model-randomization sanity test"
    Params = AttributionParams

    def __init__(self, explainer: ex.ExplainFn | None = None,
                 compare_explainer: ex.ExplainFn | None = None) -> None:
        # Injected explainers replace the named methods (tests plant broken explainers).
        self.explainer = explainer
        self.compare_explainer = compare_explainer

    # ---- validation --------------------------------------------------------------------
    @classmethod
    def validate_params(cls, params: AttributionParams, spec: Any) -> None:
        if params.compare_with == params.method:
            raise ValueError(f"compare_with names the same method as method ('{params.method}')")

    @classmethod
    def preflight(cls, ctx: Context, params: AttributionParams) -> None:
        ds = ctx.dataset(params.data)
        if ds.kind == "text":
            return  # skipped at run time with the reason
        if params.baseline == "blurred" and ds.kind != "image":
            raise DataError(f"baseline 'blurred' needs image data; dataset '{ds.name}' is {ds.kind}")
        n_flat = int(np.prod(ds.x.shape[1:]))
        if (params.n_evals is not None and "shap_permutation" in (params.method, params.compare_with)
                and params.n_evals < 2 * n_flat + 1):
            raise DataError(f"n_evals={params.n_evals} is below one permutation of the {n_flat} input features "
                            f"of dataset '{ds.name}' (shap_permutation needs at least {2 * n_flat + 1})")
        if isinstance(params.target, int) and not 0 <= params.target < ds.n_classes:
            raise DataError(f"target {params.target} is not a class index of dataset '{ds.name}' "
                            f"({ds.n_classes} classes)")
        if params.sensitive:
            if ds.kind != "tabular":
                raise DataError(f"'sensitive' needs tabular data; dataset '{ds.name}' is {ds.kind}")
            for attr in params.sensitive:
                if _sensitive_columns(ds, attr) is None:
                    known = sorted(set(ds.feature_groups or {}) | set(ds.sensitive))
                    raise DataError(f"sensitive feature '{attr}' is neither an input feature nor a "
                                    f"sensitive attribute of dataset '{ds.name}' (known: {', '.join(known)})")

    # ---- run ---------------------------------------------------------------------------
    def run(self, ctx: Context, params: AttributionParams) -> Measurement:
        ds = ctx.dataset(params.data)
        if ds.kind == "text":
            raise SkipCheck("attributions over token ids need embedding-level methods; "
                            "explain.attribution supports image and tabular data")
        self.preflight(ctx, params)
        n_flat = int(np.prod(ds.x.shape[1:]))
        for m in (params.method, params.compare_with):
            if m in ex.MODEL_AGNOSTIC and n_flat > MAX_AGNOSTIC_FEATURES and self.explainer is None:
                raise SkipCheck(f"{m} over {n_flat} raw input features is impractical; "
                                f"use a gradient method (integrated_gradients, gradient_shap, ...)")
        key = f"{self.name}:{params.data}"
        n = min(params.n_samples, len(ds))
        idx = np.sort(ctx.rng(f"{key}:samples").choice(len(ds), n, replace=False))
        x = np.ascontiguousarray(ds.x[idx], dtype=np.float32)
        proba_all = ctx.probabilities(params.data)  # cached: no model call for predictions
        pred_all = proba_all.argmax(axis=1)
        target = _targets(params, ds, idx, pred_all)
        p0 = proba_all[idx, target]
        phases = _Phases(ctx, n)

        # ---- set-up: baseline, background rows, k-means summary (timed apart) ----------
        with phases("set-up (baseline, background, k-means)", per_sample=False):
            bg_ds = ds
            if ctx.has_dataset("train") and ctx.dataset("train").x.shape[1:] == ds.x.shape[1:]:
                bg_ds = ctx.dataset("train")  # backgrounds and mean baselines describe training data
            baseline = self._baseline(params, x, bg_ds)
            methods = [params.method] + ([params.compare_with] if params.compare_with else [])
            setup = ex.ExplainSetup(
                kind=ds.kind, n_steps=params.n_steps, n_evals=params.n_evals,
                internal_batch_size=ctx.batch_size,
                occlusion_window=(params.occlusion_window or max(1, ds.x.shape[-1] // 8)) if ds.kind == "image" else 1,
                seed=int(ctx.rng(f"{key}:explainer").integers(2**31)))
            if any(m in ex.USES_BACKGROUND for m in methods):
                rows = ctx.rng(f"{key}:background").choice(len(bg_ds), min(params.n_background, len(bg_ds)),
                                                            replace=False)
                setup.background = torch.tensor(np.ascontiguousarray(bg_ds.x[np.sort(rows)]),
                                                dtype=torch.float32, device=ctx.device)
            if any(m in ex.MODEL_AGNOSTIC for m in methods):
                setup.kmeans = ex.kmeans_background(bg_ds.x, params.n_background, setup.seed)

        units = _feature_units(ds)
        chunk = params.batch_size or ctx.batch_size
        fn = self.explainer or ex.METHODS[params.method]
        model = ex.TwoClassLogits(ctx.counting())

        def attribute(f: ex.ExplainFn, module: torch.nn.Module, xs: np.ndarray = x, ts: np.ndarray = target,
                      bs: np.ndarray = baseline) -> np.ndarray:
            return ex.explain(f, module, xs, ts, bs, setup, device=ctx.device, chunk=chunk)

        label = params.method if self.explainer is None else f"{params.method} (injected explainer)"
        with phases(f"attribution: {label}"):
            attr = attribute(fn, model)
        if not np.isfinite(attr).all():
            raise DataError(f"{params.method} produced non-finite attributions on dataset '{ds.name}'")
        u = units.reduce(attr)

        metrics: dict[str, Metric] = {}
        evidence: list[dict[str, Any]] = []
        flags: list[Flag] = []
        notes: list[str] = []

        # ---- deletion faithfulness ---------------------------------------------------------
        with phases("deletion curves"):
            dele = self._deletion(ctx, params, ds, x, baseline, attr, target, p0, key)
        metrics["deletion_faithfulness"] = bootstrap_mean(
            dele["per_sample"], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:deletion"))

        # ---- model-parameter randomization cascade ----------------------------------------
        cascade: list[dict[str, Any]] = []
        if params.randomization:
            with phases("randomization cascade"):
                metric, rows, fig, source = self._randomization(ctx, params, fn, attribute, u, units, key)
            if metric is not None:
                metrics["randomization_similarity"] = metric
                cascade.append(fig)
            cascade.append(table(
                "Model-parameter randomization cascade",
                ["step", "layers re-initialised (top down)", "last layer", "similarity", "samples"], rows,
                note=f"Spearman rank correlation ({'|attribution|' if params.randomization_abs else 'signed attribution'}) "
                     f"per explained sample between the trained model's and the randomised model's attributions; "
                     f"fresh weights from {source}. The metric is the last row (all layers re-initialised)."))

        # ---- sensitive attribution share ----------------------------------------------------
        if params.sensitive:
            metrics["sensitive_attribution_share"], rows, note = self._sensitive_share(ctx, params, ds, units, u, key)
            evidence.append(table("Attribution share of sensitive features",
                                  ["feature", "input columns", "share of |attribution|"], rows, note=note))

        # ---- method agreement ------------------------------------------------------------------
        if params.compare_with:
            with phases(f"comparison: {params.compare_with}"):
                other = attribute(self.compare_explainer or ex.METHODS[params.compare_with], model)
            metric, ev = self._agreement(params, units, u, units.reduce(other), ctx.rng(f"{key}:ci:agreement"))
            metrics["method_agreement"] = metric
            evidence.append(ev)

        # ---- completeness (IG's axiom; a sanity check on n_steps) ------------------------------
        if params.method == "integrated_gradients" and self.explainer is None:
            with phases("completeness check", per_sample=False):
                gap = self._completeness(ctx, x, baseline, attr, target, chunk)
            med = float(np.nanmedian(gap))
            notes.append(f"Integrated-gradients completeness: median |sum of attributions - (f(x) - f(baseline))| "
                         f"is {100 * med:.2f}% of |f(x) - f(baseline)| (max {100 * float(np.nanmax(gap)):.2f}%) "
                         f"with n_steps={params.n_steps}.")
            if med > COMPLETENESS_FLAG:
                flags.append(Flag("ig_not_converged",
                                  f"median completeness gap {100 * med:.1f}% > {100 * COMPLETENESS_FLAG:.0f}%: "
                                  f"raise n_steps"))

        # ---- pictures ------------------------------------------------------------------------------
        if ds.kind == "image":
            # The grid shows misclassified samples too: when the random subset holds fewer than
            # six, a few more are explained for the figure only (not in any metric).
            y = ds.y
            mis_in = idx[pred_all[idx] != y[idx]]
            extra = np.setdiff1d(np.flatnonzero(pred_all != y), idx)
            extra = np.sort(ctx.rng(f"{key}:figure").permutation(extra)[:max(0, 6 - len(mis_in))])
            maps = {int(i): u[k].reshape(units.shape) for k, i in enumerate(idx)}
            if len(extra):
                with phases("misclassified examples for the figure", per_sample=False):
                    xe = np.ascontiguousarray(ds.x[extra], dtype=np.float32)
                    ae = attribute(fn, model, xe, _targets(params, ds, extra, pred_all),
                                   self._baseline(params, xe, bg_ds))
                maps.update({int(i): m.reshape(units.shape) for i, m in zip(extra, units.reduce(ae))})
            pictures = self._image_figures(ds, params, idx[pred_all[idx] == y[idx]][:6],
                                           np.concatenate([mis_in, extra])[:6], maps, pred_all, proba_all)
        else:
            pictures = self._tabular_figures(ds, params, x, u, units, ctx.rng(f"{key}:ci:importance"))
        evidence[:0] = pictures + [dele["figure"]] + cascade
        evidence.append(phases.table(f"{n} samples of '{ds.name}' explained towards the {params.target} class, "
                                     f"baseline '{params.baseline}', on {ctx.device}."))
        if notes:
            evidence.append(text("Notes", " ".join(notes)))
        return Measurement(metrics=metrics, evidence=evidence, flags=flags)

    # ---- pieces --------------------------------------------------------------------------
    @staticmethod
    def _baseline(params: AttributionParams, x: np.ndarray, bg: Dataset) -> np.ndarray:
        if params.baseline == "zeros":
            return np.zeros_like(x)
        if params.baseline == "mean":
            return np.broadcast_to(bg.x.mean(axis=0, dtype=np.float64).astype(np.float32), x.shape).copy()
        sigma = params.blur_sigma or max(1.0, x.shape[-1] / 8)
        return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest").astype(np.float32)

    @staticmethod
    def _deletion(ctx: Context, params: AttributionParams, ds: Dataset, x: np.ndarray, baseline: np.ndarray,
                  attr: np.ndarray, target: np.ndarray, p0: np.ndarray, key: str) -> dict[str, Any]:
        """Deletion curves (attribution order vs random orders) through ctx.infer."""
        n = len(x)
        if ds.kind == "image":
            _, h, w = ds.x.shape[1:]
            p = params.deletion_patch or max(1, w // 8)
            ph, pw = -(-h // p), -(-w // p)
            pix = (np.arange(h)[:, None] // p) * pw + (np.arange(w)[None, :] // p)
            index = np.tile(pix.ravel(), ds.x.shape[1])
            n_units = ph * pw
            unit_word = f"{p}x{p} patch" + ("es" if p > 1 else "") if p > 1 else "pixels"
        else:
            fu = _feature_units(ds)
            index, n_units, unit_word = fu.index, fu.n, "features"
        flat = attr.reshape(n, -1).astype(np.float64)
        scores = np.zeros((n, n_units))
        np.add.at(scores.T, index, flat.T)
        steps = min(params.deletion_steps, n_units)
        counts = np.round(np.linspace(0, n_units, steps + 1)).astype(int)
        frac = counts / n_units
        # rank[i, u] = position of unit u in sample i's removal order (0 = removed first)
        order_rank = [np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)]
        r = ctx.rng(f"{key}:deletion")
        order_rank += [r.permuted(np.tile(np.arange(n_units), (n, 1)), axis=1)
                       for _ in range(params.deletion_random_orders)]
        xf, bf = x.reshape(n, -1), baseline.reshape(n, -1)
        curves = np.ones((len(order_rank), n, steps + 1))
        per_chunk = max(1, _DELETION_ROWS_PER_CHUNK // max(1, steps * len(order_rank) * xf.shape[1]))
        for s in range(0, n, per_chunk):
            sl = slice(s, min(n, s + per_chunk))
            m = sl.stop - sl.start
            batch = []
            for rank in order_rank:
                removed = rank[sl][:, None, :] < counts[None, 1:, None]          # (m, steps, units)
                mask = removed[:, :, index]                                        # (m, steps, elements)
                batch.append(np.where(mask, bf[sl][:, None], xf[sl][:, None]))
            pert = np.stack(batch).reshape((-1,) + x.shape[1:]).astype(np.float32)
            proba = logits_to_proba(ctx.infer(pert, what="deletion curves"))
            t = np.broadcast_to(target[sl][None, :, None], (len(order_rank), m, steps)).ravel()
            pt = proba[np.arange(len(t)), t].reshape(len(order_rank), m, steps)
            curves[:, sl, 1:] = pt / np.maximum(p0[sl], 1e-12)[None, :, None]
        area = np.trapezoid(curves, frac, axis=-1)                                 # (orders, n)
        per_sample = area[1:].mean(axis=0) - area[0]
        # Mean curves with a bootstrap band over samples, for the figure.
        series: dict[str, tuple[Any, ...]] = {}
        rb = ctx.rng(f"{key}:ci:deletion-curves")
        for label, c in (("attribution order", curves[0]), ("random order", curves[1:].mean(axis=0))):
            draws = np.concatenate([w @ c / n for w in resample_weights(n, 1000, rb)])
            lo = np.quantile(draws, (1 - params.confidence) / 2, axis=0)
            hi = np.quantile(draws, 1 - (1 - params.confidence) / 2, axis=0)
            series[label] = (frac, c.mean(axis=0), lo, hi)
        fig = chart("line", "Deletion curves", {
            "series": {k: [_json(v) for v in vs] for k, vs in series.items()},
            "xlabel": f"fraction of {unit_word} removed (replaced by the baseline)",
            "ylabel": "explained-class probability / initial", "title": "Deletion curves"},
            caption=f"Mean over {n} samples with a {int(100 * params.confidence)}% bootstrap band. "
                    f"Faster fall in attribution order than in random order means faithful attributions.")
        return {"per_sample": per_sample, "figure": fig}

    def _randomization(self, ctx: Context, params: AttributionParams, fn: ex.ExplainFn, attribute: Any,
                       u: np.ndarray, units: Units, key: str) -> tuple[Metric | None, list[list[Any]], dict[str, Any], str]:
        loaded = ctx.model
        layers = _parametrized_layers(loaded.module)[::-1]  # top (output side) first
        if not layers:
            raise SkipCheck("the model has no parameters to randomise")
        n_layers = len(layers)
        points = sorted({int(v) for v in np.round(np.linspace(1, n_layers, min(params.randomization_steps, n_layers)))})
        rnd = _Randomizer(loaded.module, loaded.factory, int(ctx.rng(f"{key}:randomization").integers(2**31)))
        wrapped = ex.TwoClassLogits(ctx.counting(rnd.model))
        ref = np.abs(u) if params.randomization_abs else u
        done = 0
        rows: list[list[Any]] = []
        xs, ys, los, his = [], [], [], []
        last: Metric | None = None
        for step, k in enumerate(points, 1):
            for layer in layers[done:k]:
                rnd.randomize(layer)
            done = k
            ur = units.reduce(attribute(fn, wrapped))
            sim = _spearman_rows(ref, np.abs(ur) if params.randomization_abs else ur)
            ok = np.isfinite(sim)
            if ok.sum() >= 2:
                last = bootstrap_mean(sim[ok], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:rand:{k}"))
                rows.append([step, k, layers[k - 1] or "(root)", cell(last.value, last.ci), int(ok.sum())])
            else:
                last = None
                rows.append([step, k, layers[k - 1] or "(root)", None, int(ok.sum())])
            xs.append(k)
            ys.append(np.nan if last is None else last.value)
            los.append(np.nan if last is None or last.ci is None else last.ci[0])
            his.append(np.nan if last is None or last.ci is None else last.ci[1])
        fig = chart("line", "Model-parameter randomization cascade", {
            "series": {"trained vs randomised": [xs, _json(ys), _json(los), _json(his)]},
            "xlabel": f"layers re-initialised, from the top (of {n_layers})", "ylabel": "Spearman similarity",
            "title": "Randomization cascade", "ylim": [-1.05, 1.05]},
            caption="An explanation that depends on the learned weights falls towards 0 as layers are "
                    "re-initialised; one that stays near 1 ignores the model.")
        return last, rows, fig, rnd.source

    @staticmethod
    def _sensitive_share(ctx: Context, params: AttributionParams, ds: Dataset, units: Units, u: np.ndarray,
                         key: str) -> tuple[Metric, list[list[Any]], str]:
        mass = np.abs(u)
        total = mass.sum(axis=1)
        rows: list[list[Any]] = []
        all_units: set[int] = set()
        absent: list[str] = []
        for attr in params.sensitive:
            cols = _sensitive_columns(ds, attr) or []
            us = sorted({int(units.index[c]) for c in cols})
            all_units |= set(us)
            if not cols:
                absent.append(attr)
            share = np.where(total > 0, mass[:, us].sum(axis=1) / np.where(total > 0, total, 1), np.nan)
            ok = np.isfinite(share)
            m = bootstrap_mean(share[ok], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:sensitive:{attr}"))
            rows.append([attr, ", ".join((ds.feature_names or [])[c] if ds.feature_names else str(c) for c in cols)
                         or "(not a model input)", cell(m.value, m.ci)])
        us = sorted(all_units)
        share = np.where(total > 0, mass[:, us].sum(axis=1) / np.where(total > 0, total, 1), np.nan)
        ok = np.isfinite(share)
        metric = bootstrap_mean(share[ok], confidence=params.confidence, rng=ctx.rng(f"{key}:ci:sensitive"))
        note = ("Per explained sample: |attribution| of the feature (one-hot columns summed first) over the "
                "total |attribution|; the metric pools all listed features.")
        if absent:
            note += f" Not model inputs (share 0 by construction; proxies are not measured): {', '.join(absent)}."
        if (~ok).any():
            note += f" {int((~ok).sum())} samples with all-zero attributions left out."
        return metric, rows, note

    @staticmethod
    def _agreement(params: AttributionParams, units: Units, u1: np.ndarray, u2: np.ndarray,
                   rng: np.random.Generator) -> tuple[Metric, dict[str, Any]]:
        a1, a2 = np.abs(u1), np.abs(u2)
        n = len(a1)

        def stat(w: np.ndarray) -> np.ndarray:
            return _spearman_rows(w @ a1 / n, w @ a2 / n)

        metric = bootstrap_weighted(stat, n, confidence=params.confidence, rng=rng)
        g1, g2 = a1.mean(axis=0), a2.mean(axis=0)
        top = np.argsort(-g1, kind="stable")[:25]
        r1, r2 = rankdata(-g1), rankdata(-g2)
        rows = [[units.names[i], float(g1[i]), int(r1[i]), float(g2[i]), int(r2[i])] for i in top]
        ev = table(f"Global importance: {params.method} vs {params.compare_with}",
                   ["feature", f"{params.method} mean |attr|", "rank", f"{params.compare_with} mean |attr|", "rank"],
                   rows, note=f"Spearman rank correlation of the two importance vectors over {len(g1)} features: "
                              f"{metric.value:.3f}" + (f" [{metric.ci[0]:.3f}, {metric.ci[1]:.3f}]" if metric.ci else "")
                              + (" (top 25 by the first method shown)" if len(g1) > 25 else ""))
        return metric, ev

    @staticmethod
    def _completeness(ctx: Context, x: np.ndarray, baseline: np.ndarray, attr: np.ndarray, target: np.ndarray,
                      chunk: int) -> np.ndarray:
        """|sum(attr) - (f(x)_t - f(b)_t)| / |f(x)_t - f(b)_t| per sample, f = the logits (two
        for a single-logit model, as explained). Counted passes through the Context, in float32
        (cached predictions may come from autocast), in the explained chunks."""
        rows = np.arange(len(x))
        fx, fb = (ex.class_logits(ctx.run_model(None, v, what="completeness", batch_size=chunk, precision="float32"))
                  for v in (x, baseline))
        diff = fx[rows, target] - fb[rows, target]
        total = attr.reshape(len(x), -1).astype(np.float64).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(total - diff) / np.abs(diff)

    @staticmethod
    def _image_figures(ds: Dataset, params: AttributionParams, correct: np.ndarray, wrong: np.ndarray,
                       maps: dict[int, np.ndarray], pred: np.ndarray, proba: np.ndarray) -> list[dict[str, Any]]:
        rows = np.concatenate([correct, wrong]).astype(int)
        if len(rows) == 0:
            return []
        titles = [f"{'✓' if k < len(correct) else '✗'} #{i} {ds.classes[ds.y[i]]}→{ds.classes[pred[i]]} "
                  f"({proba[i, pred[i]]:.2f})" for k, i in enumerate(rows)]
        caption = ("Heat map: |attribution| towards the explained class, channels summed, scaled per image. "
                   "✓ correctly classified, ✗ misclassified (true→predicted, probability).")
        if len(wrong) == 0:
            caption += f" No misclassified sample in dataset '{ds.name}'."
        # One grid (one layout pass): correct samples first, then misclassified ones.
        return [chart("image_grid", "Attribution maps", {
            "images": [_json(ds.x[i]) for i in rows], "titles": titles,
            "overlays": [_json(maps[int(i)]) for i in rows],
            "ncols": max(len(correct), len(wrong), 1), "title": f"{params.method}: correct, then misclassified"},
            caption=caption)]

    @staticmethod
    def _tabular_figures(ds: Dataset, params: AttributionParams, x: np.ndarray, u: np.ndarray, units: Units,
                         rng: np.random.Generator) -> list[dict[str, Any]]:
        g = np.abs(u)
        mean = g.mean(axis=0)
        draws = np.concatenate([w @ g / len(g) for w in resample_weights(len(g), 1000, rng)])
        lo = np.quantile(draws, (1 - params.confidence) / 2, axis=0)
        hi = np.quantile(draws, 1 - (1 - params.confidence) / 2, axis=0)
        order = np.argsort(-mean, kind="stable")[:20]
        names = [units.names[i] for i in order]
        values = _unit_values(x, units)
        return [
            chart("importance_bars", "Global feature importance", {
                "names": names, "values": _json(mean[order]), "lo": _json(lo[order]), "hi": _json(hi[order]),
                "title": f"{params.method}: mean |attribution|"},
                caption=f"Mean |attribution| over {len(x)} samples (one-hot groups summed), "
                        f"{int(100 * params.confidence)}% bootstrap intervals; top {len(order)} features."),
            chart("beeswarm", "Attribution summary", {
                "names": names, "attributions": _json(u[:, order]), "values": _json(values[:, order]),
                "title": f"{params.method}: per-sample attributions"},
                caption="One dot per explained sample; colour = the feature's value (numeric features; grey for "
                        "one-hot groups); right of 0 pushes towards the explained class."),
        ]


def _unit_values(x: np.ndarray, units: Units) -> np.ndarray:
    """Per-unit feature value for colouring: the column itself for single-column units, NaN
    for one-hot groups."""
    vals = np.full((len(x), units.n), np.nan)
    for un in range(units.n):
        cols = np.flatnonzero(units.index == un)
        if len(cols) == 1:
            vals[:, un] = x[:, cols[0]]
    return vals


def _json(a: Any, digits: int = 4) -> Any:
    """Chart data: an array as nested lists of floats rounded to `digits` significant digits
    (the report draws them; full precision would only swell results.json), NaN as None."""
    def rnd(v: Any) -> Any:
        if isinstance(v, list):
            return [rnd(w) for w in v]
        return float(f"{v:.{digits}g}") if np.isfinite(v) else None

    return rnd(np.asarray(a, dtype=np.float64).tolist())
