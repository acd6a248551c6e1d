"""performance.token_classification: entity-level precision, recall and F1 of a token
classifier (named-entity recognition), with confidence intervals from resampling
sentences.

Entities are exact spans as seqeval finds them (`seqeval.metrics.sequence_labeling.
get_entities`, conlleval rules): a predicted entity counts when its type, first word and
last word all match a true one. Micro precision / recall / F1 pool every entity;
`entity_f1_macro` is the unweighted mean of the per-type F1 over the types present in
the truth or the predictions (seqeval's `average="macro"`); `token_accuracy` is the share
of words whose tag is right (seqeval's `accuracy_score`). Point estimates equal seqeval's
on the same predictions (tests/test_ner.py).

A word's prediction is its first sub-token's (the Hugging Face convention); a word lost
to truncation has none and counts as `O`. Every metric is a function of per-sentence
counts (entity matches, predicted and true entities per type; words and right words), so
the bootstrap resamples sentences (words of one sentence are not independent) as
multinomial weights over those counts: no per-resample Python work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from audit import stats
from audit.check import Check, Measurement, Metric, Params, cell, chart, higher, table, text
from audit.context import Context
from audit.registry import register_check
from audit.tokens import EntityCounts, entity_counts, f1_from, ratio, spans, tag_names


class TokenClassificationParams(Params):
    resamples: int = Field(stats.WEIGHT_RESAMPLES, ge=200, le=20_000,
                           description="sentence-bootstrap resamples")
    n_examples: int = Field(6, ge=0, le=100, description="sentences shown with their true and predicted entities")


def entity_metrics(c: EntityCounts, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric under a batch of sentence weights w (B, N) -> (B,) arrays."""
    tp, pred, gold = (w @ a for a in (c.tp, c.pred, c.gold))  # (B, T)
    t_tp, t_pred, t_gold = tp.sum(1), pred.sum(1), gold.sum(1)
    per_type_f1 = f1_from(tp, pred, gold)
    present = (pred + gold) > 0
    with np.errstate(invalid="ignore"):
        macro = np.where(present.any(1), (per_type_f1 * present).sum(1) / np.maximum(present.sum(1), 1), np.nan)
    return {
        "entity_f1": f1_from(t_tp, t_pred, t_gold),
        "entity_precision": ratio(t_tp, t_pred),
        "entity_recall": ratio(t_tp, t_gold),
        "entity_f1_macro": macro,
        "token_accuracy": ratio(w @ c.correct, w @ c.words),
    }


def sentence_bootstrap(c: EntityCounts, *, confidence: float, rng: np.random.Generator,
                       n_resamples: int) -> dict[str, Metric]:
    """The five metrics with sentence-bootstrap intervals (one set of resamples)."""
    n = c.n
    point = {k: float(v[0]) for k, v in entity_metrics(c, np.ones((1, n))).items()}
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for w in stats.resample_weights(n, n_resamples, rng):
        for k, v in entity_metrics(c, w.astype(np.float64)).items():
            draws[k].append(v)
    return {k: stats.from_draws(point[k], np.concatenate(draws[k]), confidence, n=n, bounds=(0.0, 1.0))
            for k in point}


def per_type_rows(c: EntityCounts, confidence: float, rng: np.random.Generator, n_resamples: int
                  ) -> list[list[Any]]:
    """type, support, predicted, precision, recall, F1 (with sentence-bootstrap CIs)."""
    n = c.n
    tp, pred, gold = c.tp.sum(0), c.pred.sum(0), c.gold.sum(0)
    draws: list[np.ndarray] = []
    for w in stats.resample_weights(n, n_resamples, rng):
        w = w.astype(np.float64)
        draws.append(np.stack([ratio(w @ c.tp, w @ c.pred), ratio(w @ c.tp, w @ c.gold),
                               f1_from(w @ c.tp, w @ c.pred, w @ c.gold)], axis=-1))  # (B, T, 3)
    d = np.concatenate(draws)
    rows = []
    for j, t in enumerate(c.types):
        if pred[j] + gold[j] == 0:
            continue
        vals = [float(ratio(tp[j], pred[j])), float(ratio(tp[j], gold[j])), float(f1_from(tp[j], pred[j], gold[j]))]
        cis = [stats.percentile_ci(d[:, j, m], confidence) for m in range(3)]
        rows.append([t, int(gold[j]), int(pred[j]), int(tp[j]),
                     *[cell(v, ci) for v, ci in zip(vals, cis)]])
    return rows


@register_check
class TokenClassificationPerformance(Check):
    name = "performance.token_classification"
    version = 1
    requires = ("data",)
    kinds = ("tokens",)
    area = "evaluation"
    summary = ("Entity-level precision, recall and F1 of a token classifier (exact spans, as seqeval), per "
               "entity type, with sentence-bootstrap confidence intervals.")
    metrics = {
        "entity_f1": higher("Micro-averaged F1 over entities: an entity is right when its type and exact span "
                            "match (seqeval).", bounds=(0.0, 1.0)),
        "entity_precision": higher("Share of predicted entities that are right (type and exact span).",
                                   bounds=(0.0, 1.0)),
        "entity_recall": higher("Share of true entities found with the right type and exact span.",
                                bounds=(0.0, 1.0)),
        "entity_f1_macro": higher("Unweighted mean of the per-type entity F1 over the types present.",
                                  bounds=(0.0, 1.0)),
        "token_accuracy": higher("Share of words whose predicted tag is the true tag.", bounds=(0.0, 1.0)),
    }
    Params = TokenClassificationParams

    def run(self, ctx: Context, params: TokenClassificationParams) -> Measurement:
        ds = ctx.dataset(params.data)
        pred = ctx.predictions(params.data)  # cached: one forward pass per sentence
        counts = entity_counts(ds.y, pred, ds.classes)
        key = f"{self.name}:{params.data}"
        metrics = sentence_bootstrap(counts, confidence=params.confidence, rng=ctx.rng(f"{key}:ci"),
                                     n_resamples=params.resamples)
        rows = per_type_rows(counts, params.confidence, ctx.rng(f"{key}:types"), params.resamples)
        m = metrics
        n_words = int(counts.words.sum())
        trunc = ds.meta.get("truncation")
        lines = [
            f"Entity F1 {_ci(m['entity_f1'])}, precision {_ci(m['entity_precision'])}, recall "
            f"{_ci(m['entity_recall'])} on {len(ds)} sentences ({n_words} words, {int(counts.gold.sum())} entities) "
            f"of '{params.data}'; token accuracy {_ci(m['token_accuracy'])}.",
            "Entities are exact spans (type, first and last word), as seqeval counts them; a word's prediction is "
            "that of its first sub-token (the Hugging Face convention).",
            f"{params.confidence:.0%} intervals resample sentences ({params.resamples} resamples).",
        ]
        if trunc:
            lines.append(f"{trunc['rows']} of {trunc['of']} sentences were longer than the model's "
                         f"{trunc['max_len']} sub-tokens: {trunc.get('words_lost', 0)} words lost to truncation "
                         f"count as predicted O.")
        evidence = [
            text("Summary", " ".join(lines)),
            table("Per entity type", ["type", "support", "predicted", "exact matches", "precision", "recall", "F1"],
                  rows, note="Support: true entities of the type; precision and recall are exact-span."),
            chart("bar", "Entity F1 per type", {
                "labels": [r[0] for r in rows], "values": [r[6]["value"] for r in rows],
                "ci_lo": [r[6]["ci"][0] if r[6]["ci"] else None for r in rows],
                "ci_hi": [r[6]["ci"][1] if r[6]["ci"] else None for r in rows],
                "title": "Entity F1 per type", "ylabel": "F1", "ylim": [0.0, 1.02]},
                caption=f"Whiskers: {params.confidence:.0%} sentence-bootstrap intervals."),
            _tag_confusion(ds.y, pred, ds.classes),
        ]
        if params.n_examples:
            evidence.append(_examples(ds, pred, params.n_examples))
        return Measurement(metrics=metrics, evidence=evidence)


def _ci(m: Metric) -> str:
    return f"{m.value:.3f}" + (f" [{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m.ci else "")


def _tag_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    ok = y >= 0
    k = len(classes)
    cm = np.bincount(y[ok] * k + pred[ok], minlength=k * k).reshape(k, k)
    return chart("confusion_matrix", "Word-level tag confusion", {"cm": cm.tolist(), "classes": list(classes)},
                 caption="Rows: true tag; columns: predicted tag of each word (its first sub-token).")


def _entities(tags: list[str], words: list[str]) -> str:
    found = spans(tags)
    return "; ".join(f"{' '.join(words[a:b + 1])} [{t}]" for t, a, b in found) or "—"


def _examples(ds: Any, pred: np.ndarray, n: int) -> dict[str, Any]:
    """Sentences with their true and predicted entities: those with an error first."""
    words = ds.meta.get("words") or [[f"w{j}" for j in range(int((r >= 0).sum()))] for r in ds.y]
    wrong, right = [], []
    for i in range(len(ds)):
        (wrong if not np.array_equal(ds.y[i], pred[i]) else right).append(i)
    rows = []
    for i in (wrong[: max(1, n // 2)] + right)[:n]:
        ws = list(words[i])
        rows.append([i, " ".join(ws)[:300], _entities(tag_names(ds.y[i], ds.classes), ws),
                     _entities(tag_names(pred[i], ds.classes), ws)])
    return table("Example sentences", ["row", "sentence", "true entities", "predicted entities"], rows,
                 note=f"{len(wrong)} of {len(ds)} sentences have at least one wrong tag; they are listed first.")
