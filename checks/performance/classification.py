"""performance.classification: held-out classification metrics with bootstrap CIs.

Count metrics (accuracy, balanced accuracy, macro precision/recall/F1, worst-class
recall, per-class recall) are functions of the confusion matrix and are resampled as one
multinomial over its cells (10,000 resamples shared by all of them, cost independent of
N). ROC AUC gets DeLong's interval (each sample's structural component, one sort per
class; on the logit scale; one-vs-rest AUCs share samples, so the macro mean's variance
sums their components) and log loss, a mean of per-sample values, Student's t interval
from their variance: neither cost grows with resamples x N. `intervals: row_bootstrap`
uses the weight bootstrap instead (resamples x N; the weighted ROC AUC vectorised over
resamples: sort once, cumulative weighted negatives), the reference the tests hold the
fast intervals to.

Point estimates equal scikit-learn's on the same predictions: macro averages run over the
labels present in y_true or y_pred (sklearn's default), balanced accuracy and
worst-class recall over classes present in y_true, multiclass ROC AUC is the unweighted
mean of one-vs-rest AUCs (sklearn's multi_class="ovr", average="macro") over the classes
present in y_true, log loss clips probabilities to [eps, 1 - eps] like sklearn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field

from audit import stats
from audit.check import Check, Flag, Measurement, Metric, Params, cell, chart, higher, lower, table, text
from audit.context import Context
from audit.dataset import code_counts
from audit.registry import register_check


class ClassificationParams(Params):
    resamples: int = Field(stats.COUNT_RESAMPLES, ge=200, le=200_000,
                           description="count-bootstrap resamples (confusion-matrix metrics)")
    weight_resamples: int = Field(stats.WEIGHT_RESAMPLES, ge=200, le=20_000,
                                  description="weight-bootstrap resamples (ROC AUC, log loss; row_bootstrap only)")
    intervals: Literal["fast", "row_bootstrap"] = Field(
        "fast", description="fast: DeLong for ROC AUC, t interval for log loss (cost independent of N); "
                            "row_bootstrap: weight bootstrap (cost resamples x N)")


# confusion matrix -> batched statistic, in the order of `metrics`
_COUNT_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": stats.cm_accuracy,
    "balanced_accuracy": stats.cm_balanced_accuracy,
    "f1_macro": stats.cm_f1_macro,
    "precision_macro": stats.cm_precision_macro,
    "recall_macro": stats.cm_recall_macro,
    "worst_class_recall": stats.cm_worst_class_recall,
}
_CHUNK_CELLS = 4_000_000  # resampled confusion-matrix cells held at once


def count_bootstrap(cm: np.ndarray, statistics: dict[str, Callable[[np.ndarray], np.ndarray]],
                    *, confidence: float, rng: np.random.Generator, n_resamples: int
                    ) -> tuple[dict[str, Metric], list[tuple[float, float] | None]]:
    """stats.bootstrap_counts for several statistics over one shared set of resamples of the
    confusion matrix (one draw instead of one per metric), in chunks so memory stays
    bounded as the number of classes grows. Per-class recalls are proportions: their
    intervals are exact (Clopper-Pearson)."""
    k = cm.shape[0]
    unit = cm[None].astype(np.float64)
    chunk = max(1, min(n_resamples, _CHUNK_CELLS // (k * k)))
    draws: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {name: float(fn(unit)[0]) for name, fn in statistics.items()}
        for start in range(0, n_resamples, chunk):
            batch = stats.resample_counts(cm, min(chunk, n_resamples - start), rng).astype(np.float64)
            for name, fn in statistics.items():
                draws[name].append(fn(batch))
    n = int(cm.sum())
    metrics = {name: stats.from_draws(values[name], np.concatenate(d), confidence, n=n, bounds=(0.0, 1.0))
               for name, d in draws.items()}
    recall_ci = [stats.proportion(int(cm[c, c]), int(cm[c].sum()), confidence).ci if cm[c].sum() > 0 else None
                 for c in range(k)]
    return metrics, recall_ci


class RocAuc:
    """Binary ROC AUC under resampling weights, vectorised over a batch of weight rows.

    AUC = sum_{pos i, neg j} w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j]) / (W_pos W_neg),
    the Mann-Whitney form, equal to sklearn's trapezoidal AUC (ties get half credit).
    Negatives are sorted by score once and each positive's place among them found once
    (searchsorted, left and right for ties); per resample it is one cumulative sum of
    the negatives' weights and two gathers at the positives' places.
    """

    def __init__(self, score: np.ndarray, positive: np.ndarray) -> None:
        score = np.asarray(score, dtype=np.float64)
        positive = np.asarray(positive, dtype=bool)
        neg = np.flatnonzero(~positive)
        self.neg = neg[np.argsort(score[neg], kind="stable")]
        self.pos = np.flatnonzero(positive)
        neg_scores = score[self.neg]
        self.below = np.searchsorted(neg_scores, score[self.pos], side="left")  # negatives < s_i
        self.upto = np.searchsorted(neg_scores, score[self.pos], side="right")  # negatives <= s_i

    def __call__(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w)
        cum = np.zeros((w.shape[0], self.neg.size + 1))  # cum[:, j]: weight of the j lowest negatives
        np.cumsum(w[:, self.neg], axis=1, dtype=np.float64, out=cum[:, 1:])
        wpos = w[:, self.pos].astype(np.float64)
        num = 0.5 * np.einsum("bi,bi->b", wpos, cum[:, self.below] + cum[:, self.upto])
        return num / (wpos.sum(axis=1) * cum[:, -1])


def log_loss_per_sample(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p(true class), clipped to [eps, 1 - eps] as sklearn.metrics.log_loss does."""
    eps = np.finfo(proba.dtype).eps
    p = np.clip(proba[np.arange(len(y)), y], eps, 1.0 - eps)
    return -np.log(p)


@register_check
class ClassificationPerformance(Check):
    name = "performance.classification"
    version = 1
    requires = ("data",)
    summary = "Held-out classification metrics with bootstrap confidence intervals, per class."
    area = "evaluation"
    metrics = {
        "accuracy": higher("Fraction of samples whose predicted class (arg-max probability) is the true class.",
                           proportion=True),
        "balanced_accuracy": higher("Mean per-class recall over the classes present in the data.", bounds=(0.0, 1.0)),
        "f1_macro": higher("Unweighted mean of per-class F1 scores.", bounds=(0.0, 1.0)),
        "precision_macro": higher("Unweighted mean of per-class precision (0 for a class never predicted).",
                                  bounds=(0.0, 1.0)),
        "recall_macro": higher("Unweighted mean of per-class recall.", bounds=(0.0, 1.0)),
        "roc_auc": higher("Area under the ROC curve: positive-class score for binary tasks, "
                          "macro one-vs-rest mean for multiclass.", bounds=(0.0, 1.0)),
        "log_loss": lower("Mean cross-entropy of the true class (natural log); lower is better.", unit="nats",
                          bounds=(0.0, None)),
        "worst_class_recall": higher("Lowest recall of any class present in the data.", bounds=(0.0, 1.0)),
    }
    Params = ClassificationParams

    def run(self, ctx: Context, params: ClassificationParams) -> Measurement:
        ds = ctx.dataset(params.data)
        y = np.asarray(ds.y)
        k, n = ds.n_classes, len(y)
        pred = ctx.predictions(params.data)  # cached: one forward pass per sample
        cm = stats.confusion_counts(y, pred, k)
        support = cm.sum(axis=1)
        present = support > 0
        conf = params.confidence

        def rng(what: str) -> np.random.Generator:
            return ctx.rng(f"{self.name}:{params.data}:{what}")

        counted, recall_ci = count_bootstrap(cm, _COUNT_METRICS, confidence=conf, rng=rng("counts"),
                                             n_resamples=params.resamples)
        metrics = {name: counted[name] for name in _COUNT_METRICS if name != "worst_class_recall"}
        metrics["accuracy"] = stats.proportion(int(np.trace(cm)), n, conf)  # exact interval

        notes: list[str] = []
        flags: list[Flag] = []
        absent = [ds.classes[c] for c in range(k) if not present[c]]
        if absent:
            notes.append(f"{len(absent)} class(es) absent from '{params.data}' "
                         f"({', '.join(absent[:10])}): their recall is undefined; balanced accuracy, "
                         "worst-class recall and ROC AUC use the classes present.")
            flags.append(Flag(f"{len(absent)} of {k} classes absent from '{params.data}'",
                              f"no sample of {', '.join(repr(a) for a in absent[:10])}"
                              f"{' ...' if len(absent) > 10 else ''}: the model is not tested on them, so "
                              "per-class metrics (worst-class recall, balanced accuracy) say nothing about them"))

        if params.intervals == "fast":
            # per-sample values reduced chunk by chunk: memory bounded by a chunk, not N
            auc, losses = self._fast_reductions(ctx, params.data, y, present, conf)
            log_loss = stats.mean_interval_of(losses, confidence=conf)
        else:
            proba = ctx.probabilities(params.data)
            auc = self._roc_auc(proba, y, present, n, conf, rng("roc_auc"), params.weight_resamples)
            log_loss = stats.bootstrap_mean(log_loss_per_sample(proba, y), confidence=conf, rng=rng("log_loss"),
                                            n_resamples=params.weight_resamples)
        if auc is not None:
            metrics["roc_auc"] = auc
        else:
            notes.append("ROC AUC is undefined: fewer than two classes are present.")
        metrics["log_loss"] = log_loss
        metrics["worst_class_recall"] = counted["worst_class_recall"]

        evidence = self._evidence(ds.classes, cm, metrics, recall_ci, params, notes, n)
        if ds.kind == "text" and ds.meta.get("texts") is not None:
            evidence.append(_text_examples(ds, ctx.probabilities(params.data),
                                           ctx.rng(f"{self.name}:{params.data}:examples")))
        return Measurement(metrics=metrics, evidence=evidence, flags=flags)

    @staticmethod
    def _fast_reductions(ctx: Context, name: str, y: np.ndarray, present: np.ndarray,
                         conf: float) -> tuple[Metric | None, stats.Moments]:
        """ROC AUC with DeLong's interval, and the log losses' moments, in one pass over the
        probability chunks. Binary: the positives' and negatives' scores gathered and then
        placed among each other in sorted order (no per-row temporaries beyond the scores);
        multiclass one-vs-rest: per-sample components, whose sum over classes carries the
        covariances of AUCs that share samples."""
        losses = stats.Moments()
        measurable = present.sum() >= 2  # an AUC needs two classes present
        binary, multi = measurable and len(present) == 2, measurable and len(present) > 2
        if binary:
            m = int(code_counts(y, 2)[1])
            pos, neg = np.empty(m), np.empty(len(y) - m)
            i = j = 0
        elif multi:
            cls = np.flatnonzero(present)
            scores = np.empty((len(cls), len(y)))
        for rows, proba in ctx.probability_chunks(name):
            yc = y[rows]
            losses.add(log_loss_per_sample(proba, yc))
            if binary:
                p, score = yc == 1, proba[:, 1]
                a, b = score[p], score[~p]
                pos[i:i + a.size], neg[j:j + b.size] = a, b
                i, j = i + a.size, j + b.size
            elif multi:
                scores[:, rows] = proba[:, cls].T
        if binary:
            return stats.delong_binary(pos, neg, confidence=conf), losses
        if multi:
            return stats.delong_auc(list(scores), [y == c for c in cls], confidence=conf), losses
        return None, losses

    @staticmethod
    def _roc_auc(proba: np.ndarray, y: np.ndarray, present: np.ndarray, n: int, conf: float,
                 rng: np.random.Generator, resamples: int) -> Metric | None:
        """The weight bootstrap of ROC AUC (`intervals: row_bootstrap`)."""
        if present.sum() < 2:
            return None
        if proba.shape[1] == 2:
            aucs = [RocAuc(proba[:, 1], y == 1)]
        else:
            # one-vs-rest for each class present in y_true (an absent class has no positives)
            aucs = [RocAuc(proba[:, c], y == c) for c in np.flatnonzero(present)]

        def statistic(w: np.ndarray) -> np.ndarray:
            return np.mean([a(w) for a in aucs], axis=0)

        return stats.bootstrap_weighted(statistic, n, confidence=conf, rng=rng, n_resamples=resamples,
                                        bounds=(0.0, 1.0))

    def _evidence(self, classes: list[str], cm: np.ndarray, metrics: dict[str, Metric],
                  recall_ci: list[tuple[float, float] | None], params: ClassificationParams,
                  notes: list[str], n: int) -> list[dict]:
        k = len(classes)
        support = cm.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = stats.cm_recall(cm[None].astype(np.float64))[0]
        precision = stats.cm_precision(cm[None].astype(np.float64))[0]
        f1 = stats.cm_f1(cm[None].astype(np.float64))[0]
        rows = []
        for c in range(k):
            if support[c] == 0:
                rec_cell = None
            else:
                rec_cell = cell(recall[c], recall_ci[c])
            rows.append([classes[c], int(support[c]), float(precision[c]), rec_cell, float(f1[c])])
        per_class = table("Per-class metrics", ["class", "support", "precision", "recall", "F1"], rows,
                          note=" ".join(notes) or None)

        acc = metrics["accuracy"]
        lines = [f"Accuracy {_ci_str(acc)} on {n} samples of '{params.data}' "
                 f"({int(np.trace(cm))} correct, {params.confidence:.0%} bootstrap CI)."]
        rec_ok = np.where(support > 0, recall, np.inf)
        if np.isfinite(rec_ok).any():
            w = int(np.argmin(rec_ok))
            lines.append(f"Lowest recall: class '{classes[w]}' at {recall[w]:.3f} (support {int(support[w])}).")
        off = cm.copy()
        np.fill_diagonal(off, 0)
        if off.sum() > 0:
            t, p = np.unravel_index(int(np.argmax(off)), off.shape)
            lines.append(f"Most frequent confusion: true '{classes[t]}' predicted as '{classes[p]}' "
                         f"({int(off[t, p])} samples).")
        lines.extend(notes)
        return [
            text("Summary", " ".join(lines)),
            per_class,
            chart("confusion_matrix", "Confusion matrix", {"cm": cm.tolist(), "classes": list(classes)},
                  caption="Rows: true class; columns: predicted class (arg-max probability)."),
        ]


def _ci_str(m: Metric) -> str:
    return f"{m.value:.3f}" + (f" [{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m.ci else "")


def _text_examples(ds: Any, proba: np.ndarray, rng: np.random.Generator, k: int = 4) -> dict:
    """A few texts the model got right and a few it got wrong (seeded), with its confidence."""
    pred = proba.argmax(axis=1)
    texts = ds.meta["texts"]
    right = np.flatnonzero(pred == ds.y)
    wrong = np.flatnonzero(pred != ds.y)
    rows = []
    for pool, mark in ((wrong, "✗"), (right, "✓")):
        for i in np.sort(rng.permutation(pool)[:k]):
            rows.append([mark, int(i), str(texts[i])[:240], ds.classes[int(ds.y[i])], ds.classes[int(pred[i])],
                         float(proba[i, pred[i]])])
    return table("Example texts", ["", "row", "text", "true", "predicted", "probability"], rows,
                 note=f"{len(wrong)} of {len(ds)} texts misclassified; up to {k} of each shown (seeded), texts cut at "
                      f"240 characters.")