"""training.reproducibility: does the model give the same answer twice, and does its
recipe give the same model twice?

Repeated inference: the same rows are run through the model `repeats` more times with
`ctx.infer` (never the context's cache, which would compare a pass with itself), in the
same batches as the first pass. `prediction_agreement` is the share of rows whose
predicted class is identical in every pass (count-bootstrap CI); `max_logit_diff` is the
largest absolute logit difference between passes (0 for a deterministic model; tiny
non-zero values point at non-deterministic kernels, large ones at stochastic layers left
on, e.g. dropout at inference).

Retraining (`retrain: true`, for specs with `model.train`): the model is trained again
from the same recipe, data, seed and device, and its metrics on the check's data are
compared with the audited model's. `retrain_metric_diff` is the largest absolute change
in accuracy, balanced accuracy and macro-F1; a change above `tolerance` raises a flag
(the check becomes at most `warn`); for a hard limit set a threshold on
`retrain_metric_diff` (e.g. `{max: 0.01}`). `retrain_agreement` is the share of rows both
models classify alike.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from audit.check import Check, Flag, Measurement, Metric, Params, higher, lower, table, text
from audit.context import logits_to_proba
from audit.registry import register_check
from audit.stats import proportion


class ReproducibilityParams(Params):
    repeats: int = Field(2, ge=1, le=20, description="extra inference passes compared with the first")
    n_samples: int | None = Field(2048, ge=10, description="rows for repeated inference (seeded subset); all if unset")
    retrain: bool = Field(False, description="retrain from the spec's recipe with the same seed and compare")
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="largest metric change on retraining before a flag")


def _share(c: np.ndarray) -> np.ndarray:
    return c[..., 0] / c.sum(axis=-1)


@register_check
class Reproducibility(Check):
    name = "training.reproducibility"
    version = 1
    requires = ("data",)
    Params = ReproducibilityParams
    area = "training"
    metrics = {
        "prediction_agreement": higher("Share of samples with the same predicted class in every repeated "
                                       "inference pass.", proportion=True),
        "max_logit_diff": lower("Largest absolute logit difference between repeated inference passes.",
                                bounds=(0.0, None)),
        "retrain_metric_diff": lower("Largest absolute change in accuracy, balanced accuracy or macro-F1 after "
                                     "retraining with the same seed.", bounds=(0.0, 1.0)),
        "retrain_agreement": higher("Share of samples the retrained model classifies like the audited one.",
                                    proportion=True),
    }
    summary = "Repeated inference gives the same predictions; retraining with the same seed reproduces the metrics."

    @classmethod
    def validate_params(cls, params: ReproducibilityParams, spec) -> None:
        if params.retrain and spec.model.train is None:
            raise ValueError("retrain: true needs a spec that trains the model (a model.train section)")

    def run(self, ctx, params: ReproducibilityParams) -> Measurement:
        ds = ctx.dataset(params.data)
        idx = ctx.sample_rows(params.data, params.n_samples, f"{self.name}:{params.data}:subset")
        full = len(idx) == len(ds)
        if full:
            first = ctx.logits(params.data)  # the cached pass; repeats use the same batches
        else:
            first = ctx.infer(ds.x[idx], what="Repeated inference, pass 1")
        x = ds.rows(idx)  # all rows of a streamed dataset stay streamed
        pred0 = logits_to_proba(first).argmax(axis=1)
        same = np.ones(len(idx), dtype=bool)
        rows = []
        max_diff = 0.0
        for r in range(params.repeats):
            out = ctx.infer(x, what=f"Repeated inference, pass {r + 2}")
            pred = logits_to_proba(out).argmax(axis=1)
            diff = float(np.abs(out.astype(np.float64) - first).max()) if out.size else 0.0
            same &= pred == pred0
            max_diff = max(max_diff, diff)
            rows.append([r + 2, round(float((pred == pred0).mean()), 6), diff])
        counts = np.array([int(same.sum()), int((~same).sum())])
        rng = ctx.rng(f"{self.name}:{params.data}")
        metrics = {"prediction_agreement": proportion(int(counts[0]), int(counts.sum()), params.confidence),
                   "max_logit_diff": Metric(max_diff)}
        evidence = [table("Repeated inference", ["pass", "agreement with pass 1", "max |logit difference|"], rows,
                          note=f"{len(idx)} rows of '{params.data}', batch size {ctx.batch_size}, device {ctx.device}.")]
        if not same.all():
            evidence.append(text("Non-deterministic inference",
                                 f"{int((~same).sum())} of {len(idx)} samples changed class between identical "
                                 f"passes (largest logit change {max_diff:.4g}): a stochastic layer (dropout, "
                                 f"sampling) is active at inference, or kernels are non-deterministic."))
        flags: list[Flag] = []
        if params.retrain:
            m, ev, flags = self._retrain(ctx, params, rng)
            metrics.update(m)
            evidence.extend(ev)
        return Measurement(metrics=metrics, evidence=evidence, flags=flags)

    def _retrain(self, ctx, params: ReproducibilityParams, rng: np.random.Generator):
        ds = ctx.dataset(params.data)
        original = ctx.model
        again = ctx.retrain()
        module = again.module
        out = ctx.run_model(module, ds.x, what="Predicting with the retrained model")
        pred_a, pred_b, y = ctx.predictions(params.data), logits_to_proba(out).argmax(axis=1), ds.y
        labels = np.arange(ds.n_classes)
        scores = {
            "accuracy": (accuracy_score(y, pred_a), accuracy_score(y, pred_b)),
            "balanced_accuracy": (balanced_accuracy_score(y, pred_a), balanced_accuracy_score(y, pred_b)),
            "f1_macro": (f1_score(y, pred_a, labels=labels, average="macro", zero_division=0),
                         f1_score(y, pred_b, labels=labels, average="macro", zero_division=0)),
        }
        worst = max(abs(a - b) for a, b in scores.values())
        agree = np.array([int((pred_a == pred_b).sum()), int((pred_a != pred_b).sum())])
        sa, sb = original.module.state_dict(), module.state_dict()
        identical = sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
        wdiff = max((float((sa[k].float().cpu() - sb[k].float().cpu()).abs().max()) for k in sa
                     if k in sb and sa[k].shape == sb[k].shape and sa[k].numel()), default=0.0)
        metrics = {"retrain_metric_diff": Metric(float(worst)),
                   "retrain_agreement": proportion(int(agree[0]), int(agree.sum()), params.confidence)}
        rec_a, rec_b = original.training or {}, again.training or {}
        rows = [[k, round(float(a), 6), round(float(b), 6), round(float(b - a), 6)] for k, (a, b) in scores.items()]
        for key in ("best_epoch", "best_val_loss", "best_val_accuracy"):
            if key in rec_a and key in rec_b:
                rows.append([f"training {key}", rec_a[key], rec_b[key],
                             round(float(rec_b[key]) - float(rec_a[key]), 6)])
        evidence = [
            table("Retraining with the same seed", ["metric", "audited model", "retrained", "change"], rows,
                  note=f"seed {rec_b.get('seed')}, device {ctx.device}; weights "
                       f"{'bit-identical' if identical else f'differ (max |Δw| {wdiff:.3g})'}; "
                       f"audited sha256 {original.sha256[:12]}, retrained {again.sha256[:12]}."),
        ]
        flags = []
        if worst > params.tolerance:
            name = max(scores, key=lambda k: abs(scores[k][0] - scores[k][1]))
            flags.append(Flag("retraining did not reproduce the metrics",
                              f"{name} changed by {worst:.4f} on retraining with the same seed "
                              f"(tolerance {params.tolerance})"))
        return metrics, evidence, flags
