"""`privacy.membership_inference`: can an attacker tell training members from unseen data?

Headline attack (`attack: rmia`, the default): RMIA, the reference-model attack of
Zarifzadeh et al. (ICML 2024), offline. `reference_models` (default 4) models are
trained with the audited model's own recipe (the spec's `model.train`, a fixture's
recipe, or a saved model's recipe; `reference_train` overrides hyper-parameters) on
random halves of population data that excludes every scored sample: the `population`
dataset when named, else the rows of `train` and of the check's dataset that are not
scored. A sample x scores the share of population samples z with
`[p(x|target) / p(x)] / [p(z|target) / p(z)] > gamma`, where p(.|target) is the target
model's probability of the true label and p(.) its mean over the reference models,
corrected for them all being OUT models: p(x) = ((1 + a) mean_out + (1 - a)) / 2 (offline
`a`, 0.3 as in ML Privacy Meter). Ties in that share are broken by the likelihood ratio.

Why RMIA and not offline LiRA: with the few reference models an audit can afford (4 by
default), LiRA's per-sample Gaussians are estimated from 4 OUT losses and it falls back
to a global variance, while RMIA needs only the mean, compares each sample with many
population samples at once, and is the stronger attack at small k in both papers.

The threshold attacks on the model's own outputs (Yeom et al. 2018; `attack: loss` or
`confidence`) are also computed, as the baseline beside RMIA; they become the headline
when `attack` names them, or when no recipe is available to train reference models.

Metrics: ROC AUC and advantage (bootstrap: members and non-members resampled apart), and
the true-positive rate at a false-positive rate of 1% and 0.1%. The TPR is a proportion
of members: the threshold is the lowest score that flags at most floor(alpha * n) of the
non-members, and the TPR gets the exact Clopper-Pearson interval of the count of members
above it. That interval is exact for the TPR *of that threshold* (members and non-members
are independent samples); the realized FPR of the threshold on unseen non-members is
itself uncertain, and is reported with its own exact interval beside it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field
from sklearn.metrics import roc_auc_score, roc_curve

from audit.check import Check, Measurement, Metric, Params, cell, chart, lower, table, text
from audit.context import Context
from audit.errors import SkipCheck
from audit.registry import register_check
from audit.spec import ModelSpec, TrainSpec
from audit.stats import WEIGHT_RESAMPLES, from_draws, proportion, resample_weights

FPRS = {"tpr_at_fpr_1pct": 0.01, "tpr_at_fpr_0.1pct": 0.001}


class MIAParams(Params):
    attack: Literal["rmia", "loss", "confidence"] = Field(
        "rmia", description="rmia: reference-model attack; loss / confidence: threshold attacks on the outputs")
    n_samples: int = Field(1000, ge=10, description="members and non-members each (balanced)")
    reference_models: int = Field(4, ge=1, le=64, description="reference models RMIA trains")
    population: str | None = Field(None, description="dataset the reference models train on (default: the rows "
                                                     "of 'train' and of the check's data that are not scored)")
    reference_train: dict[str, Any] = Field(default_factory=dict,
                                            description="overrides of the recipe the reference models train with")
    reference: list[ModelSpec] | None = Field(None, description="user-given reference models (fixtures or files) "
                                                                "that never saw the scored samples")
    n_population: int = Field(1000, ge=10, description="population samples z RMIA compares each sample with")
    offline_a: float = Field(0.3, ge=0.0, le=1.0)
    gamma: float = Field(1.0, gt=0.0)


def rows_proba(ctx: Context, name: str, rows: np.ndarray) -> np.ndarray:
    """Class probabilities of some rows of a dataset: only the rows the check uses are run
    (the members sampled from 'train'), or sliced from the cached predictions."""
    from audit.context import logits_to_proba

    return logits_to_proba(ctx.logits_rows(name, rows))


def rows_true_proba(ctx: Context, name: str, rows: np.ndarray) -> np.ndarray:
    """Probability of the true class of some rows."""
    return rows_proba(ctx, name, rows)[np.arange(len(rows)), ctx.dataset(name).y[rows]]


def rows_loss(ctx: Context, name: str, rows: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy of the true class (as `Context.losses`) of some rows."""
    return -np.log(np.clip(rows_true_proba(ctx, name, rows), 1e-15, 1.0))


def attack_scores(ctx: Context, name: str, attack: str, idx: np.ndarray) -> np.ndarray:
    """Higher = more likely a member."""
    if attack == "loss":
        return -rows_loss(ctx, name, idx)
    return rows_proba(ctx, name, idx).max(axis=1)


def weighted_auc_advantage(scores: np.ndarray, members: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and advantage (max TPR - FPR) of `scores` for the `members` labels under
    resampling weights `w` (B, n), vectorised over B. Ties count one half, as in sklearn."""
    order = np.argsort(-scores, kind="mergesort")
    s, lab, w = scores[order], members[order].astype(np.float32), w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s) != 0) + 1]  # one threshold per distinct score
    wp = np.add.reduceat(w * lab, starts, axis=1)
    wn = np.add.reduceat(w * (1.0 - lab), starts, axis=1)
    p_tot, n_tot = wp.sum(1), wn.sum(1)
    tp = np.cumsum(wp, axis=1)  # members at or above each threshold (scores descending)
    fp = np.cumsum(wn, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (wn * (tp - wp + 0.5 * wp)).sum(1) / (p_tot * n_tot)
        adv = np.maximum((tp / p_tot[:, None] - fp / n_tot[:, None]).max(1), 0.0)
    return auc, adv


def tpr_at_fpr(mem: np.ndarray, non: np.ndarray, alpha: float, confidence: float) -> tuple[Metric, int, float]:
    """TPR of the lowest threshold that flags at most floor(alpha * n_non) non-members (flag
    = score strictly above it), with its exact interval; also the non-members flagged and
    the threshold."""
    allowed = int(math.floor(alpha * len(non) + 1e-9))
    s = np.sort(non)[::-1]
    # flag iff score > tau; tau = the (allowed+1)-th largest non-member score
    tau = s[allowed] if allowed < len(s) else -np.inf
    fp = int((non > tau).sum())
    tp = int((mem > tau).sum())
    return proportion(tp, len(mem), confidence), fp, float(tau)


def rmia_scores(p_target_x: np.ndarray, p_ref_x: np.ndarray, p_target_z: np.ndarray, p_ref_z: np.ndarray,
                a: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Offline RMIA (Zarifzadeh et al. 2024): the share of population samples z that x
    dominates, `[p(x|t)/p(x)] / [p(z|t)/p(z)] > gamma`, with p(.) = ((1+a) mean over the
    OUT reference models + (1-a)) / 2. `p_ref_*`: (n, k) true-label probabilities.
    Returns (share, likelihood ratio of x)."""
    px = (1 + a) / 2 * p_ref_x.mean(axis=1) + (1 - a) / 2
    pz = (1 + a) / 2 * p_ref_z.mean(axis=1) + (1 - a) / 2
    ratio_x = p_target_x / px
    ratio_z = np.sort(p_target_z / pz)
    # z with ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma
    share = np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)
    return share, ratio_x


def recipe_for(ctx: Context, overrides: dict[str, Any]) -> tuple[TrainSpec | None, Any, str]:
    """The audited model's training recipe: (TrainSpec, factory or None, where it came from)."""
    spec = ctx.spec.model
    model = ctx.model
    base: dict[str, Any] | None = None
    factory = None
    where = ""
    if spec.train is not None:
        base, where = spec.train.model_dump(), "the spec's model.train"
    elif spec.fixture is not None and spec.fixture != "in-memory":
        from fixtures.models import MODEL_FIXTURES

        r = MODEL_FIXTURES.get(spec.fixture)
        if r is not None:
            base = {"architecture": r.architecture, "epochs": r.epochs, "lr": r.lr, "batch_size": r.batch_size,
                    "weight_decay": r.weight_decay, "options": dict(r.arch_kwargs), "val_fraction": 0.05}
            where = f"fixture '{spec.fixture}' (one-cycle schedule approximated by cosine; 5% validation carve-out)"
    if base is None and model.training and isinstance(model.training.get("recipe"), dict):
        rec = {k: v for k, v in model.training["recipe"].items() if k in TrainSpec.model_fields}
        base, where, factory = rec, "the model's saved training record", model.factory
    if base is None and model.factory is not None:
        # a model with a factory but no recipe: its own architecture, default hyper-parameters
        base, where, factory = {"architecture": "cnn"}, "the model's factory with default hyper-parameters", \
            model.factory
    if base is None:
        return None, None, ""
    merged = {**base, **overrides}
    merged.pop("seed", None)
    train = TrainSpec.model_validate(merged)
    return train, factory, where + (f", overridden by {sorted(overrides)}" if overrides else "")


@register_check
class MembershipInference(Check):
    name = "privacy.membership_inference"
    version = 2
    requires = ("data", "train")
    summary = ("Membership inference: the RMIA reference-model attack (and the loss-threshold baseline), "
               "with the true-positive rate at 1% and 0.1% false positives.")
    area = "privacy"
    metrics = {
        "mia_auc": lower("ROC AUC of the attack separating training members from unseen samples (0.5 = no leak, "
                         "1 = every member identified).", bounds=(0.0, 1.0)),
        "mia_advantage": lower("Best true-positive minus false-positive rate of the attack over all thresholds "
                               "(0 = no better than guessing).", bounds=(0.0, 1.0)),
        "tpr_at_fpr_1pct": lower("Share of members the attack flags at the threshold that flags at most 1% of "
                                 "non-members (0.01 = guessing).", proportion=True),
        "tpr_at_fpr_0.1pct": lower("Share of members the attack flags at the threshold that flags at most 0.1% "
                                   "of non-members (0.001 = guessing).", proportion=True),
    }
    Params = MIAParams

    @classmethod
    def validate_params(cls, params: MIAParams, spec: Any) -> None:
        if params.data == "train":
            raise ValueError("privacy.membership_inference compares 'train' members with non-members: "
                             "its data must be a held-out dataset, not 'train'")
        if spec is not None and params.population is not None and params.population not in spec.dataset_names():
            raise ValueError(f"population '{params.population}' is not a dataset of the spec")

    def run(self, ctx: Context, params: MIAParams) -> Measurement:
        if not ctx.has_dataset("train"):
            raise SkipCheck("the spec has no 'train' dataset (the members)")
        if params.data == "train":
            raise SkipCheck("non-members must come from a held-out dataset, not 'train'")
        train, held = ctx.dataset("train"), ctx.dataset(params.data)
        n = min(params.n_samples, len(train), len(held))
        rng = ctx.rng(f"{self.name}:{params.data}:{params.attack}")
        mem_idx = np.sort(rng.choice(len(train), n, replace=False))
        non_idx = np.sort(rng.choice(len(held), n, replace=False))
        members = np.r_[np.ones(n, np.int64), np.zeros(n, np.int64)]

        results: dict[str, dict[str, Any]] = {}
        for attack in ("loss", "confidence"):
            scores = np.concatenate([attack_scores(ctx, "train", attack, mem_idx),
                                     attack_scores(ctx, params.data, attack, non_idx)]).astype(np.float64)
            results[attack] = {"scores": scores}
        notes: list[str] = []
        ref_info: dict[str, Any] | None = None
        headline = params.attack
        if params.attack == "rmia":
            out = self._rmia(ctx, params, train, held, mem_idx, non_idx, rng)
            if isinstance(out, str):
                notes.append(out)
                headline = "loss"
            else:
                results["rmia"], ref_info = {"scores": out[0]}, out[1]
        for attack, r in results.items():
            s = r["scores"]
            r["auc"] = float(roc_auc_score(members, s))
            r["fpr"], r["tpr"], _ = roc_curve(members, s)
            r["adv"] = float(max(0.0, (r["tpr"] - r["fpr"]).max()))
            for key, alpha in FPRS.items():
                r[key] = tpr_at_fpr(s[:n], s[n:], alpha, params.confidence)
        main = results[headline]
        aucs, advs = [], []
        for w in resample_weights(2 * n, WEIGHT_RESAMPLES, rng, strata=[n, n]):  # keeps the balance
            a, d = weighted_auc_advantage(main["scores"], members, w)
            aucs.append(a)
            advs.append(d)
        metrics = {"mia_auc": from_draws(main["auc"], np.concatenate(aucs), params.confidence, n=2 * n,
                                         bounds=(0.0, 1.0)),
                   "mia_advantage": from_draws(main["adv"], np.concatenate(advs), params.confidence, n=2 * n,
                                               bounds=(0.0, 1.0))}
        for key in FPRS:
            metrics[key] = main[key][0]
        evidence = self._evidence(ctx, params, n, mem_idx, non_idx, results, headline, ref_info, notes)
        return Measurement(metrics, evidence)

    # ---- RMIA ---------------------------------------------------------------------------------
    def _rmia(self, ctx: Context, params: MIAParams, train: Any, held: Any, mem_idx: np.ndarray,
              non_idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]] | str:
        # population: never a scored sample
        if params.population is not None:
            pop = ctx.dataset(params.population)
            parts = [(params.population, np.arange(len(pop)))]
        else:
            parts = [(params.data, np.setdiff1d(np.arange(len(held)), non_idx)),
                     ("train", np.setdiff1d(np.arange(len(train)), mem_idx))]
        sizes = [len(p[1]) for p in parts]
        total = sum(sizes)
        if params.reference is None and total < 20:
            return (f"RMIA not run: only {total} population rows are left beside the {len(mem_idx)} scored "
                    "members and non-members (lower n_samples or name a `population` dataset); the headline "
                    "is the loss-threshold attack.")
        # z: held-out rows first (non-members of the target), the rest trains the reference models
        n_z = min(params.n_population, max(total // 3, 1))
        z_parts, r_parts, left = [], [], n_z
        for name, rows in parts:
            rows = rng.permutation(rows)
            take = min(left, len(rows))
            z_parts.append((name, np.sort(rows[:take])))
            r_parts.append((name, np.sort(rows[take:])))
            left -= take
        p_z = np.concatenate([rows_true_proba(ctx, name, rows) for name, rows in z_parts if len(rows)])
        x_targets = np.concatenate([train.x[mem_idx], held.x[non_idx]])
        y_targets = np.concatenate([train.y[mem_idx], held.y[non_idx]])
        x_z = np.concatenate([ctx.dataset(name).x[rows] for name, rows in z_parts if len(rows)])
        y_z = np.concatenate([ctx.dataset(name).y[rows] for name, rows in z_parts if len(rows)])
        p_x = np.concatenate([rows_true_proba(ctx, "train", mem_idx), rows_true_proba(ctx, params.data, non_idx)])

        refs: list[Any] = []
        info: dict[str, Any] = {"n_z": int(len(y_z)), "models": []}
        if params.reference is not None:
            for entry in params.reference:
                refs.append(ctx.auxiliary_model(entry).module)
                info["models"].append({"source": entry.fixture or entry.path, "n_train": None, "accuracy_z": None})
            info["recipe"] = "user-given reference models"
        else:
            recipe, factory, where = recipe_for(ctx, params.reference_train)
            if recipe is None:
                return ("RMIA not run: no training recipe for reference models (the model is neither trained by "
                        "the spec, nor a fixture, nor saved with its recipe, nor built by a factory); the "
                        "headline is the loss-threshold attack.")
            pool_x = np.concatenate([ctx.dataset(name).x[rows] for name, rows in r_parts if len(rows)])
            pool_y = np.concatenate([ctx.dataset(name).y[rows] for name, rows in r_parts if len(rows)])
            info["recipe"] = f"{recipe.architecture if factory is None else 'the model’s own architecture'}, " \
                             f"{recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr:g}, " \
                             f"{recipe.optimizer} (from {where})"
            if recipe.dp is not None:
                info["recipe"] += f", DP-SGD epsilon {recipe.dp.epsilon:g}"
            for i in range(params.reference_models):
                half = np.sort(rng.choice(len(pool_y), max(len(pool_y) // 2, 4), replace=False))
                ds_i = dataclasses.replace(train, name=f"reference-{i}", x=pool_x[half], y=pool_y[half],
                                           sensitive={}, meta=dict(train.meta), _sha256=None)
                seed = int(ctx.rng(f"{self.name}:reference:{i}").integers(2**31))
                ref = ctx.train(ds_i, recipe, seed=seed, factory=factory,
                                what=f"Reference model {i + 1}/{params.reference_models}")
                refs.append(ref.module)
                info["models"].append({"source": f"trained, seed {seed}", "n_train": int(len(half))})
        p_ref_x = np.stack([_true_proba(ctx.run_model(m, x_targets, what="Reference models"), y_targets)
                            for m in refs], axis=1)
        ref_z_logits = [ctx.run_model(m, x_z, what="Reference models") for m in refs]
        p_ref_z = np.stack([_true_proba(lg, y_z) for lg in ref_z_logits], axis=1)
        for rec, lg in zip(info["models"], ref_z_logits):
            rec["accuracy_z"] = float((_argmax(lg) == y_z).mean())
        share, ratio = rmia_scores(p_x, p_ref_x, p_z, p_ref_z, params.offline_a, params.gamma)
        # ties in the share (common at 0 and 1) broken by the likelihood ratio itself
        score = np.empty(len(share))
        score[np.lexsort((ratio, share))] = np.arange(len(share), dtype=np.float64)
        info["share"] = share
        return score, info

    # ---- evidence -----------------------------------------------------------------------------
    def _evidence(self, ctx: Context, params: MIAParams, n: int, mem_idx: np.ndarray, non_idx: np.ndarray,
                  results: dict[str, dict[str, Any]], headline: str, ref_info: dict[str, Any] | None,
                  notes: list[str]) -> list[dict[str, Any]]:
        train, held = ctx.dataset("train"), ctx.dataset(params.data)
        acc_m = float((rows_proba(ctx, "train", mem_idx).argmax(axis=1) == train.y[mem_idx]).mean())
        acc_n = float((rows_proba(ctx, params.data, non_idx).argmax(axis=1) == held.y[non_idx]).mean())
        loss_m = float(rows_loss(ctx, "train", mem_idx).mean())
        loss_n = float(rows_loss(ctx, params.data, non_idx).mean())
        names = {"rmia": "RMIA (reference models, offline)", "loss": "loss threshold (baseline)",
                 "confidence": "confidence threshold (label-free)"}
        order = [a for a in ("rmia", "loss", "confidence") if a in results]
        rows = []
        for a in order:
            r = results[a]
            row = [names[a] + (" — headline" if a == headline else ""), r["auc"]]
            for key in FPRS:
                m, fp, _ = r[key]
                fpr_ci = proportion(fp, n, params.confidence)
                row += [cell(m.value, m.ci), f"{fp}/{n} = {fp / n:.4f} [{fpr_ci.ci[0]:.4f}, {fpr_ci.ci[1]:.4f}]"]
            rows.append(row)
        resolution = (f"With {n} non-members the smallest FPR a threshold can have is 1/{n} = {1 / n:.4f}"
                      + ("; at 0.1% no non-member may be flagged, so that column is the TPR at FPR 0 on this "
                         "sample" if n < 1000 else "") + ".")
        how = [
            f"{n} training members (from 'train') and {n} unseen samples (from '{params.data}') were scored.",
        ]
        if "rmia" in results and ref_info is not None:
            how.append(
                f"RMIA (Zarifzadeh et al. 2024, offline): {len(ref_info['models'])} reference models ("
                f"{ref_info['recipe']}) trained on random halves of population data that holds none of the "
                f"scored samples; a sample's score is the share of {ref_info['n_z']} population samples z whose "
                f"likelihood ratio p(z|model)/p(z) it exceeds (gamma {params.gamma:g}), with p(.) the reference "
                f"models' mean corrected for their being OUT models (offline a = {params.offline_a:g}). RMIA, "
                "rather than offline LiRA, because with a handful of reference models LiRA's per-sample "
                "Gaussians cannot be estimated, while RMIA needs only their mean and calibrates each sample "
                "against many population samples at once.")
        how.append("The loss-threshold attack (members have a lower loss; Yeom et al. 2018) is the baseline "
                   "beside it. TPR at low FPR: the threshold flags at most 1% (0.1%) of the non-members; the "
                   "TPR's exact (Clopper-Pearson) interval holds for that threshold, and the FPR it realizes on "
                   "the non-members is shown with its own exact interval. " + resolution)
        how.append(f"AUC and advantage CIs: {WEIGHT_RESAMPLES} bootstrap resamples of members and non-members "
                   "separately. Every row of 'train' counts as a member: rows the model was not actually "
                   "fitted on (a validation carve-out) dilute the members and can only understate the leak.")
        training = ctx.model.training or {}
        dp = training.get("privacy")
        if dp:
            how.append(f"The audited model was trained with differential privacy: epsilon {dp.get('epsilon'):.3g} "
                       f"at delta {dp.get('delta'):g} (the accountant's guarantee; "
                       f"{dp.get('accountant', 'RDP')} accountant).")
        ev = [text("How to read this", " ".join(how + notes)),
              table("Attacks: AUC and true-positive rate at low false-positive rates",
                    ["attack", "AUC", "TPR at FPR 1%", "non-members flagged (FPR 1%)", "TPR at FPR 0.1%",
                     "non-members flagged (FPR 0.1%)"], rows,
                    note=f"TPR intervals: exact {int(100 * params.confidence)}% Clopper-Pearson on the members "
                         f"flagged. Guessing gives TPR = FPR."),
              table("Members and non-members", ["sample", "n", "mean loss", "accuracy"],
                    [["members (from 'train')", n, loss_m, acc_m],
                     [f"non-members (from '{params.data}')", n, loss_n, acc_n]])]
        floor = 1.0 / n
        series = {}
        for a in order:
            fpr, tpr = results[a]["fpr"], results[a]["tpr"]
            keep = fpr >= floor * 0.999
            series[names[a]] = (np.r_[fpr[keep]].tolist(), np.r_[tpr[keep]].tolist())
        grid = np.geomspace(floor, 1.0, 20).tolist()
        series["guessing (TPR = FPR)"] = (grid, grid)
        ev.append(chart("line", "Attack ROC, log-scale false-positive rate",
                        {"series": series, "xlabel": "false positive rate (log scale)",
                         "ylabel": "true positive rate", "title": "Membership inference ROC", "xlog": True,
                         "ylim": [0.0, 1.02]},
                        caption="The low-FPR end (left) is where a leak that singles out a few records shows; "
                                "the dashed diagonal is guessing."))
        if ref_info is not None:
            ev.append(table("Reference models", ["model", "source", "rows trained on", "accuracy on population z"],
                            [[i + 1, m["source"], m["n_train"], m["accuracy_z"]]
                             for i, m in enumerate(ref_info["models"])]))
        return ev


def _argmax(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=1)


def _true_proba(values: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Probability of the true label: from (N, K) probabilities (rows picked), or from logits."""
    from audit.context import logits_to_proba

    if rows is not None:
        p = values[rows]
        return p[np.arange(len(rows)), y[rows]]
    p = logits_to_proba(values)
    return p[np.arange(len(y)), y]
