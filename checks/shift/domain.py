"""`shift.domain`: the audited metric on each domain of `data.domains` and its drop from
the in-domain dataset, with bootstrap CIs.

Metrics are functions of confusion matrices, so they are resampled with the count
bootstrap. A domain derived from the in-domain data by a transform holds the same rows
in the same order: its predictions are paired with the in-domain ones, and the pair is
resampled jointly as cells of (label, in-domain prediction, domain predictions), which
gives the drop its proper, narrower paired interval. Any other domain (a separate data
set) is resampled independently of the in-domain draws; the drop is the difference of
the two draws of the same resample index. max_drop and mean_drop are taken per resample
over the domains, so their CIs account for all domains at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from audit.check import Check, Measurement, Metric, Params, cell, chart, lower, table
from audit.context import Context
from audit.errors import DataError, SkipCheck, did_you_mean
from audit.registry import register_check
from audit.stats import (COUNT_RESAMPLES, cm_accuracy, cm_balanced_accuracy, cm_f1_macro, confusion_counts,
                         from_draws, resample_counts)

METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": cm_accuracy, "balanced_accuracy": cm_balanced_accuracy, "f1_macro": cm_f1_macro,
}
_CHUNK_ELEMENTS = 4_000_000


TOKEN_METRICS = ("entity_f1", "token_accuracy")


class DomainParams(Params):
    domains: list[str] | None = Field(None, min_length=1)  # default: every domain of the spec
    # token classification: entity_f1 (the default there) or token_accuracy
    metric: Literal["accuracy", "balanced_accuracy", "f1_macro", "entity_f1", "token_accuracy"] = "accuracy"


@register_check
class DomainShift(Check):
    name = "shift.domain"
    version = 1
    requires = ("data", "domains")
    kinds = ("image", "tabular", "text", "tokens")
    area = "evaluation"
    metrics = {
        "max_drop": lower("Largest drop of the metric from the in-domain data to any domain (in-domain minus "
                          "domain).", bounds=(-1.0, 1.0)),
        "mean_drop": lower("Mean drop of the metric over the domains.", bounds=(-1.0, 1.0)),
    }
    summary = "Held-out metric on each shifted domain and its drop from in-domain, with confidence intervals."
    Params = DomainParams

    @classmethod
    def validate_params(cls, params: DomainParams, spec: Any) -> None:
        for name in params.domains or []:
            if name not in spec.domains:
                known = list(spec.domains)
                hint = did_you_mean(name, known) if known else " The spec defines no data.domains."
                raise ValueError(f"domains: '{name}' is not a domain of the spec.{hint}")
            if name == params.data:
                raise ValueError(f"domains: '{name}' is the in-domain dataset itself")

    @classmethod
    def preflight(cls, ctx: Context, params: DomainParams) -> None:
        ref = ctx.dataset(params.data)
        _metric(ref.kind, params)
        for name in _domains(ctx, params):
            ds = ctx.dataset(name)
            if list(ds.classes) != list(ref.classes):
                raise DataError(f"domain '{name}' has classes {ds.classes[:10]} but dataset "
                                f"'{params.data}' has {ref.classes[:10]}: a domain must share the label set")

    def run(self, ctx: Context, params: DomainParams) -> Measurement:
        names = _domains(ctx, params)
        if not names:
            raise SkipCheck("no domains to evaluate")
        self.preflight(ctx, params)
        ref = ctx.dataset(params.data)
        if ref.kind == "tokens":
            return self._run_tokens(ctx, params, names)
        stat = METRICS[params.metric]
        k = ref.n_classes
        y_in, p_in = ref.y, ctx.predictions(params.data)
        paired = [n for n in names if _is_paired(ctx, params.data, n)]
        independent = [n for n in names if n not in paired]
        rng = ctx.rng(f"{self.name}:{params.data}:{params.metric}:{','.join(names)}")

        # Column 0 of the paired group is the in-domain data.
        group = _joint_draws(y_in, [p_in] + [ctx.predictions(n) for n in paired], k, stat, rng)
        draws: dict[str, np.ndarray] = {params.data: group[0]}
        draws.update(zip(paired, group[1:]))
        for n in independent:
            ds = ctx.dataset(n)
            draws[n] = _joint_draws(ds.y, [ctx.predictions(n)], k, stat, rng)[0]

        value = {n: float(stat(confusion_counts(ctx.dataset(n).y, ctx.predictions(n), k)[None].astype(float))[0])
                 for n in [params.data, *names]}
        conf = params.confidence
        size = {n: len(ctx.dataset(n)) for n in value}
        level = {n: from_draws(value[n], draws[n], conf, n=size[n], bounds=(0.0, 1.0)) for n in value}
        drop_draws = {n: draws[params.data] - draws[n] for n in names}
        drop = {n: from_draws(value[params.data] - value[n], drop_draws[n], conf,
                              n=min(size[params.data], size[n]), bounds=(-1.0, 1.0)) for n in names}
        stacked = np.stack([drop_draws[n] for n in names])
        smallest = min(size.values())
        with np.errstate(invalid="ignore"):
            max_drop = from_draws(max(drop[n].value for n in names), stacked.max(axis=0), conf, n=smallest,
                                  bounds=(-1.0, 1.0))
            mean_drop = from_draws(float(np.mean([drop[n].value for n in names])), stacked.mean(axis=0), conf,
                                   n=smallest, bounds=(-1.0, 1.0))

        evidence = self._evidence(ctx, params, names, paired, level, drop)
        return Measurement(metrics={"max_drop": max_drop, "mean_drop": mean_drop}, evidence=evidence)

    def _run_tokens(self, ctx: Context, params: DomainParams, names: list[str]) -> Measurement:
        """Token classification: entity F1 (or token accuracy) per domain from per-sentence
        counts; the bootstrap resamples sentences, jointly for a domain that is a transform
        of the in-domain sentences (paired), independently otherwise."""
        from audit.stats import WEIGHT_RESAMPLES, resample_weights
        from audit.tokens import entity_counts, entity_types, f1_from, ratio

        metric = _metric("tokens", params)
        ref = ctx.dataset(params.data)
        types = entity_types(ref.classes)
        counts = {n: entity_counts(ctx.dataset(n).y, ctx.predictions(n), ref.classes, list(types))
                  for n in [params.data, *names]}

        def stat(c: Any, w: np.ndarray) -> np.ndarray:
            if metric == "token_accuracy":
                return ratio(w @ c.correct, w @ c.words)
            return f1_from(w @ c.tp.sum(1), w @ c.pred.sum(1), w @ c.gold.sum(1))

        paired = [n for n in names if _is_paired(ctx, params.data, n)]
        rng = ctx.rng(f"{self.name}:{params.data}:{metric}:{','.join(names)}")
        draws: dict[str, list[np.ndarray]] = {n: [] for n in [params.data, *names]}
        for w in resample_weights(counts[params.data].n, WEIGHT_RESAMPLES, rng):
            w = w.astype(np.float64)
            for n in [params.data, *paired]:
                draws[n].append(stat(counts[n], w))
        for n in names:
            if n not in paired:
                for w in resample_weights(counts[n].n, WEIGHT_RESAMPLES, rng):
                    draws[n].append(stat(counts[n], w.astype(np.float64)))
        d = {n: np.concatenate(v) for n, v in draws.items()}
        value = {n: float(stat(c, np.ones((1, c.n)))[0]) for n, c in counts.items()}
        conf = params.confidence
        size = {n: counts[n].n for n in value}
        level = {n: from_draws(value[n], d[n], conf, n=size[n], bounds=(0.0, 1.0)) for n in value}
        drop_draws = {n: d[params.data] - d[n] for n in names}
        drop = {n: from_draws(value[params.data] - value[n], drop_draws[n], conf,
                              n=min(size[params.data], size[n]), bounds=(-1.0, 1.0)) for n in names}
        stacked = np.stack([drop_draws[n] for n in names])
        smallest = min(size.values())
        max_drop = from_draws(max(drop[n].value for n in names), stacked.max(axis=0), conf, n=smallest,
                              bounds=(-1.0, 1.0))
        mean_drop = from_draws(float(np.mean([drop[n].value for n in names])), stacked.mean(axis=0), conf,
                               n=smallest, bounds=(-1.0, 1.0))
        evidence = self._evidence(ctx, params, names, paired, level, drop, metric=metric,
                                  resampled=f"sentence-bootstrap CIs ({WEIGHT_RESAMPLES} resamples)")
        return Measurement(metrics={"max_drop": max_drop, "mean_drop": mean_drop}, evidence=evidence)

    @staticmethod
    def _evidence(ctx: Context, params: DomainParams, names: list[str], paired: list[str],
                  level: dict[str, Metric], drop: dict[str, Metric], metric: str | None = None,
                  resampled: str = f"count-bootstrap CIs ({COUNT_RESAMPLES} resamples)") -> list[dict[str, Any]]:
        metric = (metric or params.metric).replace("_", " ")
        rows = [[params.data, "in-domain", len(ctx.dataset(params.data)),
                 cell(level[params.data].value, level[params.data].ci), None]]
        for n in names:
            rows.append([n, _source(ctx, n), len(ctx.dataset(n)), cell(level[n].value, level[n].ci),
                         cell(drop[n].value, drop[n].ci)])
        pct = int(round(100 * params.confidence))
        note = (f"drop = in-domain {metric} minus the domain's; {pct}% {resampled}."
                + (f" Paired with the in-domain rows (same samples, transformed): {', '.join(paired)}."
                   if paired else ""))
        labels = [params.data] + names
        significant = [False] + [bool(drop[n].ci and drop[n].ci[0] > 0) for n in names]
        bars = {"labels": labels, "values": [level[n].value for n in labels],
                "ci_lo": [level[n].ci[0] if level[n].ci else None for n in labels],
                "ci_hi": [level[n].ci[1] if level[n].ci else None for n in labels],
                "title": f"{metric.capitalize()} per domain", "ylabel": metric, "ylim": [0.0, 1.02],
                "highlight": significant}
        return [table(f"{metric.capitalize()} per domain", ["domain", "source", "n", metric, "drop"], rows, note=note),
                chart("bar", f"{metric.capitalize()} per domain", bars,
                      caption=f"In-domain '{params.data}' first; bars in the warning colour drop "
                              f"significantly (the drop's {pct}% CI is above 0). Whiskers: {pct}% CIs.")]


def _metric(kind: str, params: DomainParams) -> str:
    """The metric compared: the parameter, or entity F1 by default on token data; a
    metric of the other task is an input error."""
    if kind == "tokens":
        if "metric" not in params.model_fields_set:
            return "entity_f1"
        if params.metric not in TOKEN_METRICS:
            raise DataError(f"metric '{params.metric}' applies to one label per sample; dataset '{params.data}' is "
                            f"token classification: use {' or '.join(TOKEN_METRICS)}")
    elif params.metric in TOKEN_METRICS:
        raise DataError(f"metric '{params.metric}' applies to token classification; dataset '{params.data}' holds "
                        f"one label per sample: use accuracy, balanced_accuracy or f1_macro")
    return params.metric


def _domains(ctx: Context, params: DomainParams) -> list[str]:
    names = list(params.domains) if params.domains else list(ctx.spec.domains)
    return [n for n in names if n != params.data]


def _derived_from(ctx: Context, name: str) -> str | None:
    entry = ctx.spec.domains.get(name)
    if entry is not None and entry.from_:
        return entry.from_
    return ctx.dataset(name).meta.get("from")


def _is_paired(ctx: Context, data: str, name: str) -> bool:
    """Same rows as the in-domain data (a transform of it): paired resampling is valid."""
    if _derived_from(ctx, name) != data:
        return False
    a, b = ctx.dataset(data), ctx.dataset(name)
    return len(a) == len(b) and np.array_equal(a.y, b.y)


def _source(ctx: Context, name: str) -> str:
    entry = ctx.spec.domains.get(name)
    if entry is not None and entry.from_:
        return f"{entry.transform} (severity {entry.severity}) of {entry.from_}"
    meta = ctx.dataset(name).meta
    if meta.get("transform"):
        return f"{meta['transform']} (severity {meta.get('severity', '?')}) of {meta.get('from', '?')}"
    return ctx.dataset(name).source or "dataset"


def _joint_draws(y: np.ndarray, preds: list[np.ndarray], k: int, stat: Callable[[np.ndarray], np.ndarray],
                 rng: np.random.Generator, n_resamples: int = COUNT_RESAMPLES) -> list[np.ndarray]:
    """Bootstrap draws of `stat` for each prediction column, resampling the rows jointly.

    Rows are compressed to their distinct (label, pred_1, ..., pred_m) cells with counts, so
    one multinomial over at most min(N, K^(m+1)) cells resamples every column at once."""
    cells, counts = np.unique(np.stack([y, *preds], axis=1), axis=0, return_counts=True)
    cells = cells.astype(np.int64)  # streamed labels and predictions are compact: no int8 overflow below
    u = cells.shape[0]
    onehots = []
    for j in range(len(preds)):
        m = np.zeros((u, k * k))
        m[np.arange(u), cells[:, 0] * k + cells[:, j + 1]] = 1.0
        onehots.append(m)
    out = [np.empty(n_resamples) for _ in preds]
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(k * k, u)))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w = resample_counts(counts, b, rng).astype(np.float64)  # (b, u)
        with np.errstate(divide="ignore", invalid="ignore"):
            for j, m in enumerate(onehots):
                out[j][start:start + b] = stat((w @ m).reshape(b, k, k))
    return out
