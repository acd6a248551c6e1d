"""The explain.attribution check: declaration, parameter rules, and the run that puts the
analyses of this package together (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from audit.check import Check, Flag, Measurement, Metric, MetricSpec, higher, lower, text
from audit.context import Context
from audit.dataset import Dataset
from audit.errors import DataError, SkipCheck
from audit.registry import register_check
from audit.stats import bootstrap_mean
from checks.explain import explainers as ex
from checks.explain.attribution import figures, inputs
from checks.explain.attribution.agreement import method_agreement
from checks.explain.attribution.cost import Phases
from checks.explain.attribution.faithfulness import (baseline_logits, completeness_gap, completeness_report,
                                                      deletion_curves)
from checks.explain.attribution.params import AttributionParams
from checks.explain.attribution.randomization import cascade, cascade_table
from checks.explain.attribution.sensitive import sensitive_columns, sensitive_share
from checks.explain.attribution.units import Units, feature_units

MAX_AGNOSTIC_FEATURES = 1024  # Kernel/Permutation SHAP over more raw features is impractical


@register_check
class Attribution(Check):
    name = "explain.attribution"
    version = 1
    area = "explainability"
    requires = ("data",)
    kinds = ("image", "tabular", "text", "tokens")
    # None is a proportion (a share of samples): each is a mean of per-sample values.
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
        if ds.kind in ("text", "tokens"):
            from checks.explain.attribution.text import check_params

            check_params(params, ds)
            return
        if "shap_text" in (params.method, params.compare_with):
            raise DataError(f"shap_text explains text classification (SHAP's Text masker); dataset '{ds.name}' is "
                            f"{ds.kind}")
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
                if sensitive_columns(ds, attr) is None:
                    known = sorted(set(ds.feature_groups or {}) | set(ds.sensitive))
                    raise DataError(f"sensitive feature '{attr}' is neither an input feature nor a "
                                    f"sensitive attribute of dataset '{ds.name}' (known: {', '.join(known)})")

    def _skip_if_impractical(self, ds: Dataset, params: AttributionParams) -> None:
        n_flat = int(np.prod(ds.x.shape[1:]))
        for m in (params.method, params.compare_with):
            if m in ex.MODEL_AGNOSTIC and n_flat > MAX_AGNOSTIC_FEATURES and self.explainer is None:
                raise SkipCheck(f"{m} over {n_flat} raw input features is impractical; "
                                f"use a gradient method (integrated_gradients, gradient_shap, ...)")

    # ---- run ---------------------------------------------------------------------------
    def run(self, ctx: Context, params: AttributionParams) -> Measurement:
        ds = ctx.dataset(params.data)
        self.preflight(ctx, params)
        if ds.kind in ("text", "tokens"):  # integrated gradients on the token-embedding layer
            from checks.explain.attribution.text import run_text

            return run_text(ctx, params, ds, self.name)
        self._skip_if_impractical(ds, params)
        key = f"{self.name}:{params.data}"
        e = inputs.select(ctx, params, ds, key)
        phases = Phases(ctx, len(e.idx))
        with phases("set-up (baseline, background, k-means)", per_sample=False):
            bg = inputs.background_dataset(ctx, ds)
            bg_name = "train" if ctx.has_dataset("train") and bg is ctx.dataset("train") else params.data
            mean = ctx.input_stats(bg_name).mean if params.baseline == "mean" else None
            baseline = inputs.baseline(params, e.x, bg, mean)
            setup = inputs.explain_setup(ctx, params, ds, bg, key)
        units = feature_units(ds)
        chunk = params.batch_size or ctx.batch_size
        fn = self.explainer or ex.method(params.method, params.implementation)
        model = ex.TwoClassLogits(ctx.counting())  # every pass Captum or SHAP makes is counted

        def attribute(f: ex.ExplainFn, module: torch.nn.Module, xs: np.ndarray = e.x, ts: np.ndarray = e.target,
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

        with phases("baseline outputs", per_sample=False):
            # f(baseline): shared by the completeness check and the last deletion step
            # (every unit removed is the baseline itself); one row when it is the same for all
            f_base = baseline_logits(ctx, baseline, chunk)
        with phases("deletion curves"):
            curves = deletion_curves(ctx, params, ds, e.x, baseline, attr, e.target, e.p0, key, f_base)
        metrics["deletion_faithfulness"] = bootstrap_mean(
            curves.per_sample, confidence=params.confidence, rng=ctx.rng(f"{key}:ci:deletion"))

        randomization: list[dict[str, Any]] = []
        if params.randomization:
            with phases("randomization cascade"):
                c = cascade(ctx, params, lambda module: attribute(fn, module), u, units, key)
            if c.metric is not None:
                metrics["randomization_similarity"] = c.metric
                randomization.append(figures.cascade_chart(c))
            randomization.append(cascade_table(c, params))

        if params.sensitive:
            metrics["sensitive_attribution_share"], ev = sensitive_share(ctx, params, ds, units, u, key)
            evidence.append(ev)

        if params.compare_with:
            with phases(f"comparison: {params.compare_with}"):
                other = attribute(self.compare_explainer or ex.method(params.compare_with, params.implementation),
                                  model)
            metrics["method_agreement"], ev = method_agreement(params, units, u, units.reduce(other),
                                                               ctx.rng(f"{key}:ci:agreement"))
            evidence.append(ev)

        if params.method == "integrated_gradients" and self.explainer is None:
            # IG's completeness axiom: a sanity check on n_steps
            with phases("completeness check", per_sample=False):
                gap = completeness_gap(ctx, e.x, baseline, attr, e.target, chunk, f_base,
                                       fx=inputs.cached_float32_logits(ctx, params.data, e.idx))
            note, flag = completeness_report(gap, params.n_steps)
            notes.append(note)
            if flag:
                flags.append(flag)

        if ds.kind == "image":
            pictures = self._maps(ctx, params, ds, key, e, u, units, bg, phases,
                                  lambda xs, ts, bs: attribute(fn, model, xs, ts, bs))
        else:
            pictures = figures.importance_charts(params, e.x, u, units, ctx.rng(f"{key}:ci:importance"))
        evidence[:0] = pictures + [figures.deletion_chart(curves, params.confidence)] + randomization
        evidence.append(phases.table(f"{len(e.idx)} samples of '{ds.name}' explained towards the {params.target} "
                                     f"class, baseline '{params.baseline}', on {ctx.device}."))
        if notes:
            evidence.append(text("Notes", " ".join(notes)))
        return Measurement(metrics=metrics, evidence=evidence, flags=flags)

    @staticmethod
    def _maps(ctx: Context, params: AttributionParams, ds: Dataset, key: str, e: inputs.Explained, u: np.ndarray,
              units: Units, bg: Dataset, phases: Phases, attribute: Any) -> list[dict[str, Any]]:
        """The heat-map grid shows misclassified samples too: when the explained subset holds
        fewer than six, a few more are explained for the figure only (not in any metric)."""
        mis_in, extra = inputs.misclassified(ctx, key, ds, e)
        maps = {int(i): u[k].reshape(units.shape) for k, i in enumerate(e.idx)}
        if len(extra):
            with phases("misclassified examples for the figure", per_sample=False):
                xe = np.ascontiguousarray(ds.x[extra], dtype=np.float32)
                ae = attribute(xe, inputs.targets(params, ds, extra, e.pred_all), inputs.baseline(params, xe, bg))
            maps.update({int(i): m.reshape(units.shape) for i, m in zip(extra, units.reduce(ae))})
        return figures.attribution_maps(ds, params, e.idx[e.pred_all[e.idx] == ds.y[e.idx]][:6],
                                        np.concatenate([mis_in, extra])[:6], maps, e.pred_all, e.proba_all)
