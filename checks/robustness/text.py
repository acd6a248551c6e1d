"""robustness.text: does the model keep its predictions under the perturbations a user's
text meets? CheckList's invariance (INV) tests are the model (Ribeiro et al., 2020).

For each perturbation (audit.perturb: typos, case, punctuation, whitespace,
contractions; for token classification also entity swaps, with the spans re-aligned) a
seeded subset of the data is perturbed, re-encoded with the model's own tokenizer, and
run through the model (counted Context passes). Per perturbation:

* flip rate: share of the perturbed samples whose prediction changed (text: the class;
  token classification: any word's tag, compared word for word through the alignment;
  a swapped entity must keep the type the model gave the original one);
* the metric under perturbation (accuracy, or entity F1 against the re-aligned tags)
  over the whole subset, perturbed where the perturbation applies, and its drop from the
  clean subset.

Headline metrics are the worst perturbation's. Intervals come from one bootstrap of the
subset's samples shared by every perturbation (paired: clean and perturbed are the same
samples), so the max and min over perturbations get proper intervals too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from audit import stats
from audit.check import Check, Measurement, Metric, Params, cell, chart, higher, lower, table, text
from audit.context import Context, logits_to_proba
from audit.errors import DataError, SkipCheck, did_you_mean
from audit.perturb import (PERTURBATIONS, TEXT_ONLY, WORDS_ONLY, WordEdit, entity_inventory, expected_tags,
                           perturb_text, perturb_words)
from audit.registry import register_check
from audit.tokens import entity_counts, f1_from, gather_words, tag_names, word_predictions


class TextRobustnessParams(Params):
    perturbations: list[str] | None = Field(
        None, min_length=1, description=f"any of {', '.join(PERTURBATIONS)} (default: all that apply to the data)")
    n_samples: int = Field(500, ge=2, le=1_000_000, description="samples perturbed (seeded random subset)")
    rate: float = Field(0.15, gt=0.0, le=1.0, description="share of the words a typo perturbation touches")
    resamples: int = Field(stats.WEIGHT_RESAMPLES, ge=200, le=20_000, description="bootstrap resamples")
    n_examples: int = Field(8, ge=0, le=100, description="prediction changes listed in the evidence")

    @field_validator("perturbations", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("perturbations")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in PERTURBATIONS:
                raise ValueError(f"unknown perturbation '{name}'.{did_you_mean(name, PERTURBATIONS)} "
                                 f"(known: {', '.join(PERTURBATIONS)})")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"perturbations are repeated: {v}")
        return v


@register_check
class TextRobustness(Check):
    name = "robustness.text"
    version = 1
    area = "robustness"
    requires = ("data",)
    kinds = ("text", "tokens")
    summary = ("Prediction flip rate and metric under realistic text perturbations (typos, case, punctuation, "
               "whitespace, contractions, entity swaps), CheckList-style invariance.")
    metrics = {
        "flip_rate": lower("Share of perturbed samples whose prediction changed, for the worst perturbation "
                           "(CheckList invariance failure rate).", bounds=(0.0, 1.0)),
        "mean_flip_rate": lower("Flip rate averaged over the perturbations.", bounds=(0.0, 1.0)),
        "perturbed_accuracy": higher("Text classification: accuracy on the perturbed subset, worst perturbation.",
                                     bounds=(0.0, 1.0)),
        "perturbed_entity_f1": higher("Token classification: entity F1 (exact spans) on the perturbed subset "
                                      "against the re-aligned tags, worst perturbation.", bounds=(0.0, 1.0)),
        "max_drop": lower("Largest drop of the metric (accuracy or entity F1) from the clean subset to a "
                          "perturbed one.", bounds=(-1.0, 1.0)),
    }
    Params = TextRobustnessParams

    @classmethod
    def preflight(cls, ctx: Context, params: TextRobustnessParams) -> None:
        ds = ctx.dataset(params.data)
        if ds.kind not in cls.kinds:
            return
        for name in params.perturbations or []:
            if ds.kind == "text" and name in WORDS_ONLY:
                raise DataError(f"perturbation '{name}' needs token-classification data (entity spans); dataset "
                                f"'{ds.name}' is text")

    def run(self, ctx: Context, params: TextRobustnessParams) -> Measurement:
        ds = ctx.dataset(params.data)
        self.preflight(ctx, params)
        raw = ds.meta.get("texts") if ds.kind == "text" else ds.meta.get("words")
        tok = ctx.tokenizer(params.data)
        if raw is None or tok is None:
            raise SkipCheck(f"dataset '{ds.name}' carries no raw text and tokenizer to perturb and re-encode "
                            f"(token ids given as they are)")
        names = list(params.perturbations or [p for p in PERTURBATIONS
                                              if not (ds.kind == "text" and p in WORDS_ONLY)])
        key = f"{self.name}:{params.data}"
        n = min(params.n_samples, len(ds))
        idx = np.sort(ctx.rng(f"{key}:samples").choice(len(ds), n, replace=False))
        runs = (self._tokens if ds.kind == "tokens" else self._text)(ctx, params, ds, raw, tok, names, idx, key)
        return self._measure(ctx, params, ds, runs, idx, key)

    # ---- text classification --------------------------------------------------------------
    @staticmethod
    def _text(ctx: Context, params: TextRobustnessParams, ds: Any, raw: list[str], tok: Any, names: list[str],
              idx: np.ndarray, key: str) -> dict[str, Any]:
        y = ds.y[idx]
        pred0 = ctx.predictions(params.data)[idx]
        out: dict[str, Any] = {"clean_ok": (pred0 == y).astype(np.float64), "per": {}, "kind": "text"}
        for name in names:
            rng = ctx.rng(f"{key}:{name}")
            if name in WORDS_ONLY:
                continue
            new = [perturb_text(name, raw[i], rng, params.rate) for i in idx]
            changed = np.array([t is not None for t in new])
            pred = pred0.copy()
            if changed.any():
                texts = [t for t in new if t is not None]
                logits = ctx.infer(tok.encode_texts(texts).x, what=f"Text robustness: {name}")
                pred[changed] = logits_to_proba(logits).argmax(axis=1)
            out["per"][name] = {
                "changed": changed, "flip": (pred != pred0) & changed, "ok": (pred == y).astype(np.float64),
                "examples": [(raw[idx[j]], new[j], ds.classes[pred0[j]], ds.classes[pred[j]], ds.classes[y[j]])
                             for j in np.flatnonzero((pred != pred0) & changed)[: params.n_examples]]}
        return out

    # ---- token classification -------------------------------------------------------------
    @staticmethod
    def _tokens(ctx: Context, params: TextRobustnessParams, ds: Any, raw: list[list[str]], tok: Any,
                names: list[str], idx: np.ndarray, key: str) -> dict[str, Any]:
        classes = list(ds.classes)
        pred_all = ctx.predictions(params.data)
        gold = [tag_names(ds.y[i], classes) for i in idx]
        pred0 = [tag_names(pred_all[i], classes) for i in idx]
        words = [list(raw[i]) for i in idx]
        clean = entity_counts(ds.y[idx], pred_all[idx], classes)
        types = list(clean.types)
        out: dict[str, Any] = {"clean": clean, "per": {}, "kind": "tokens", "types": types}
        inventory = entity_inventory([raw[i] for i in range(len(ds))],
                                     [tag_names(ds.y[i], classes) for i in range(len(ds))]) \
            if "entity_swap" in names else {}
        index = {c: i for i, c in enumerate(classes)}
        for name in names:
            if name in TEXT_ONLY:
                out["per"][name] = None  # pre-split words have no whitespace: not applicable
                continue
            rng = ctx.rng(f"{key}:{name}")
            edits: list[WordEdit | None] = [perturb_words(name, w, g, rng, params.rate, inventory)
                                            for w, g in zip(words, gold)]
            changed = np.array([e is not None for e in edits])
            n = len(idx)
            width = max([len(e.words) for e in edits if e is not None] + [ds.y.shape[1]])
            y_new = np.full((n, width), -1, np.int64)
            p_new = np.full((n, width), -1, np.int64)
            y_new[:, : ds.y.shape[1]] = ds.y[idx]
            p_new[:, : ds.y.shape[1]] = pred_all[idx]
            flip = np.zeros(n, bool)
            rows = np.flatnonzero(changed)
            examples = []
            if rows.size:
                sub = [edits[j] for j in rows]
                enc = tok.encode_words([e.words for e in sub])
                logits = ctx.infer(enc.x, what=f"Text robustness: {name}")
                yy = np.full(enc.word_starts.shape, -1, np.int64)
                for k, e in enumerate(sub):
                    yy[k, : len(e.tags)] = [index[t] for t in e.tags]
                pw = word_predictions(gather_words(logits, enc.word_starts), enc.word_starts, yy, classes)
                for k, (j, e) in enumerate(zip(rows, sub)):
                    m = len(e.tags)
                    y_new[j], p_new[j] = -1, -1
                    y_new[j, :m] = yy[k, :m]
                    p_new[j, :m] = pw[k, :m]
                    got = [classes[v] for v in pw[k, :m]]
                    expect = expected_tags(e, pred0[j])
                    flip[j] = any(x is not None and x != g for x, g in zip(expect, got))
                    if flip[j] and len(examples) < params.n_examples:
                        examples.append((" ".join(words[j]), " ".join(e.words), _ents(words[j], pred0[j]),
                                         _ents(e.words, got), _ents(e.words, e.tags)))
            counts = _copy_counts(clean)  # unchanged rows keep their clean counts
            if rows.size:
                part = entity_counts(y_new[rows], p_new[rows], classes, list(types))
                counts = _grow(counts, len(part.types))
                for a, b in ((counts.tp, part.tp), (counts.pred, part.pred), (counts.gold, part.gold)):
                    a[rows] = b
                counts.words[rows], counts.correct[rows] = part.words, part.correct
                counts.types = list(part.types)
            out["per"][name] = {"changed": changed, "flip": flip, "counts": counts, "examples": examples}
        return out

    # ---- metrics and evidence ------------------------------------------------------------------
    def _measure(self, ctx: Context, params: TextRobustnessParams, ds: Any, runs: dict[str, Any],
                 idx: np.ndarray, key: str) -> Measurement:
        per = {k: v for k, v in runs["per"].items() if v is not None and v["changed"].any()}
        skipped = [k for k, v in runs["per"].items() if v is None]
        unchanged = [k for k, v in runs["per"].items() if v is not None and not v["changed"].any()]
        if not per:
            raise SkipCheck(f"no perturbation applies to the {len(idx)} sampled rows of '{ds.name}'")
        names = list(per)
        n = len(idx)
        tokens = runs["kind"] == "tokens"

        # Every statistic is a ratio of weighted sums of per-sample columns: one matrix, one
        # product per chunk of resamples. Columns: the metric's sums for the clean subset and
        # each perturbation (tp, predicted, true entities; or right and 1), then flips and changed.
        def sums(name: str | None) -> list[np.ndarray]:
            if tokens:
                c = runs["clean"] if name is None else per[name]["counts"]
                return [c.tp.sum(1), c.pred.sum(1), c.gold.sum(1)]
            ok = runs["clean_ok"] if name is None else per[name]["ok"]
            return [ok, np.ones(n)]

        width = 3 if tokens else 2
        cols = sums(None) + [a for p in names for a in sums(p)]
        cols += [per[p][k].astype(np.float64) for p in names for k in ("flip", "changed")]
        mat = np.stack(cols, axis=1).astype(np.float64)
        n_p = len(names)

        def metric_of(block: np.ndarray) -> np.ndarray:  # (..., width) sums -> metric
            if tokens:
                return f1_from(block[..., 0], block[..., 1], block[..., 2])
            return block[..., 0] / block[..., 1]

        def stats_of(w: np.ndarray) -> dict[str, np.ndarray]:
            s = w @ mat
            clean = metric_of(s[:, :width])
            under = metric_of(s[:, width:width * (n_p + 1)].reshape(len(s), n_p, width))
            fl = s[:, width * (n_p + 1):].reshape(len(s), n_p, 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                flips = fl[..., 0] / fl[..., 1]
            return {"clean": clean, "flips": flips, "under": under}

        point = stats_of(np.ones((1, n)))
        draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
        for w in stats.resample_weights(n, params.resamples, ctx.rng(f"{key}:ci")):
            for k, v in stats_of(w.astype(np.float64)).items():
                draws[k].append(v)
        d = {k: np.concatenate(v) for k, v in draws.items()}
        conf = params.confidence
        with np.errstate(invalid="ignore"):
            metric_name = "perturbed_entity_f1" if tokens else "perturbed_accuracy"
            metrics: dict[str, Metric] = {
                "flip_rate": stats.from_draws(float(np.nanmax(point["flips"])), np.nanmax(d["flips"], axis=1), conf,
                                              n=n, bounds=(0.0, 1.0)),
                "mean_flip_rate": stats.from_draws(float(np.nanmean(point["flips"])), np.nanmean(d["flips"], axis=1),
                                                   conf, n=n, bounds=(0.0, 1.0)),
                metric_name: stats.from_draws(float(point["under"].min()), d["under"].min(axis=1), conf, n=n,
                                              bounds=(0.0, 1.0)),
                "max_drop": stats.from_draws(float((point["clean"][:, None] - point["under"]).max()),
                                             (d["clean"][:, None] - d["under"]).max(axis=1), conf, n=n,
                                             bounds=(-1.0, 1.0)),
            }
        label = "entity F1" if tokens else "accuracy"
        rows = []
        for j, p in enumerate(names):
            flip = stats.from_draws(float(point["flips"][0, j]), d["flips"][:, j], conf, n=int(per[p]["changed"].sum()),
                                    bounds=(0.0, 1.0))
            under = stats.from_draws(float(point["under"][0, j]), d["under"][:, j], conf, n=n, bounds=(0.0, 1.0))
            drop = stats.from_draws(float(point["clean"][0] - point["under"][0, j]),
                                    d["clean"] - d["under"][:, j], conf, n=n, bounds=(-1.0, 1.0))
            rows.append([p, PERTURBATIONS[p], int(per[p]["changed"].sum()), int(per[p]["flip"].sum()),
                         cell(flip.value, flip.ci), cell(under.value, under.ci), cell(drop.value, drop.ci)])
        clean_m = stats.from_draws(float(point["clean"][0]), d["clean"], conf, n=n, bounds=(0.0, 1.0))
        notes = []
        if skipped:
            notes.append(f"Not applicable to pre-split words: {', '.join(skipped)}.")
        if unchanged:
            notes.append(f"Changed no sampled row: {', '.join(unchanged)}.")
        worst = names[int(np.nanargmax(point["flips"][0]))]
        summary = (f"{n} samples of '{ds.name}' perturbed {len(names)} ways and re-encoded with the model's own "
                   f"tokenizer. Clean {label} on them {clean_m.value:.3f}. Worst flip rate: {worst} "
                   f"({np.nanmax(point['flips']):.3f}): that share of the rows it changed got another prediction"
                   + (" (any word's tag, compared through the re-alignment; a swapped entity must keep the type "
                      "the model gave the original)" if tokens else "") + ". " + " ".join(notes))
        evidence = [
            text("Summary", summary),
            table("Perturbations", ["perturbation", "what it does", "rows changed", "predictions changed",
                                    "flip rate", f"{label} under perturbation", f"{label} drop"], rows,
                  note=f"{conf:.0%} bootstrap CIs over the {n} sampled rows ({params.resamples} resamples), clean "
                       f"and perturbed paired. Clean {label}: {clean_m.value:.3f}"
                       + (f" [{clean_m.ci[0]:.3f}, {clean_m.ci[1]:.3f}]." if clean_m.ci else ".")),
            chart("bar", "Flip rate per perturbation", {
                "labels": names, "values": [r[4]["value"] for r in rows],
                "ci_lo": [r[4]["ci"][0] if r[4]["ci"] else None for r in rows],
                "ci_hi": [r[4]["ci"][1] if r[4]["ci"] else None for r in rows],
                "title": "Prediction flip rate", "ylabel": "flip rate", "ylim": [0.0, 1.02]},
                caption=f"Share of the perturbed rows whose prediction changed; whiskers {conf:.0%} CIs."),
        ]
        ex = [[p, *e] for p in names for e in per[p]["examples"]][: params.n_examples]
        if ex:
            cols = (["perturbation", "original", "perturbed", "entities before", "entities after", "true entities"]
                    if tokens else ["perturbation", "original", "perturbed", "prediction before",
                                    "prediction after", "true class"])
            evidence.append(table("Prediction changes (examples)", cols,
                                  [[str(c)[:240] for c in row] for row in ex]))
        return Measurement(metrics=metrics, evidence=evidence)


def _ents(words: list[str], tags: list[str]) -> str:
    from audit.tokens import spans

    return "; ".join(f"{' '.join(words[a:b + 1])} [{t}]" for t, a, b in spans(tags)) or "—"


def _copy_counts(c: Any) -> Any:
    from audit.tokens import EntityCounts

    return EntityCounts(list(c.types), c.tp.copy(), c.pred.copy(), c.gold.copy(), c.words.copy(), c.correct.copy())


def _grow(c: Any, n_types: int) -> Any:
    """Room for entity types first seen under a perturbation (columns of zeros)."""
    extra = n_types - c.tp.shape[1]
    if extra > 0:
        c.tp, c.pred, c.gold = (np.pad(a, ((0, 0), (0, extra))) for a in (c.tp, c.pred, c.gold))
    return c
