"""`privacy.membership_inference`: can an attacker tell training members from unseen data?

Threshold attacks on the model's own outputs (Yeom et al. 2018): members tend to have a
lower loss (`attack: loss`, needs the true label) or a higher top-class confidence
(`attack: confidence`, label-free). A balanced sample of `n_samples` members from the
`train` dataset and as many non-members from the check's dataset is scored; the attack's
ROC AUC and advantage (max TPR - FPR over thresholds) measure the leak. Scores come from
the context's cached probabilities: no extra forward passes.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field
from sklearn.metrics import roc_auc_score, roc_curve

from audit.check import Check, Measurement, Metric, Params, chart, lower, table, text
from audit.context import Context
from audit.errors import SkipCheck
from audit.registry import register_check
from audit.stats import WEIGHT_RESAMPLES, from_draws, resample_weights


class MIAParams(Params):
    attack: Literal["loss", "confidence"] = Field(
        "loss", description="loss: members have lower loss; confidence: members get a higher top-class probability")
    n_samples: int = Field(1000, ge=10, description="members and non-members each (balanced)")


def attack_scores(ctx: Context, name: str, attack: str, idx: np.ndarray) -> np.ndarray:
    """Higher = more likely a member."""
    if attack == "loss":
        return -ctx.losses(name)[idx]
    return ctx.probabilities(name)[idx].max(axis=1)


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


@register_check
class MembershipInference(Check):
    name = "privacy.membership_inference"
    version = 1
    requires = ("data", "train")
    summary = "Threshold membership-inference attack: how well the model's outputs reveal its training members."
    area = "privacy"
    metrics = {
        "mia_auc": lower("ROC AUC of the attack separating training members from unseen samples (0.5 = no leak, "
                         "1 = every member identified).", bounds=(0.0, 1.0)),
        "mia_advantage": lower("Best true-positive minus false-positive rate of the attack over all thresholds "
                               "(0 = no better than guessing).", bounds=(0.0, 1.0)),
    }
    Params = MIAParams

    @classmethod
    def validate_params(cls, params: MIAParams, spec: Any) -> None:
        if params.data == "train":
            raise ValueError("privacy.membership_inference compares 'train' members with non-members: "
                             "its data must be a held-out dataset, not 'train'")

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
        scores = np.concatenate([attack_scores(ctx, "train", params.attack, mem_idx),
                                 attack_scores(ctx, params.data, params.attack, non_idx)]).astype(np.float64)
        members = np.r_[np.ones(n, np.int64), np.zeros(n, np.int64)]

        auc = float(roc_auc_score(members, scores))
        fpr, tpr, _ = roc_curve(members, scores)
        adv = float(max(0.0, (tpr - fpr).max()))
        aucs, advs = [], []
        for w in resample_weights(2 * n, WEIGHT_RESAMPLES, rng, strata=[n, n]):  # keeps the balance
            a, d = weighted_auc_advantage(scores, members, w)
            aucs.append(a)
            advs.append(d)
        metrics = {"mia_auc": from_draws(auc, np.concatenate(aucs), params.confidence, n=2 * n, bounds=(0.0, 1.0)),
                   "mia_advantage": from_draws(adv, np.concatenate(advs), params.confidence, n=2 * n,
                                               bounds=(0.0, 1.0))}
        return Measurement(metrics, self._evidence(ctx, params, n, mem_idx, non_idx, scores, fpr, tpr, metrics))

    def _evidence(self, ctx: Context, params: MIAParams, n: int, mem_idx: np.ndarray, non_idx: np.ndarray,
                  scores: np.ndarray, fpr: np.ndarray, tpr: np.ndarray, metrics: dict[str, Metric]) -> list[dict[str, Any]]:
        train, held = ctx.dataset("train"), ctx.dataset(params.data)
        acc_m = float((ctx.predictions("train")[mem_idx] == train.y[mem_idx]).mean())
        acc_n = float((ctx.predictions(params.data)[non_idx] == held.y[non_idx]).mean())
        score_name = "loss" if params.attack == "loss" else "top-class confidence"
        sign = -1.0 if params.attack == "loss" else 1.0  # report the loss itself, not its negative
        low_fpr = float(tpr[fpr <= 0.01].max()) if (fpr <= 0.01).any() else 0.0
        rows = [
            ["members (from 'train')", n, float(sign * scores[:n].mean()), acc_m],
            [f"non-members (from '{params.data}')", n, float(sign * scores[n:].mean()), acc_n],
        ]
        return [
            text("How to read this", (
                f"The attacker sees only the model's output for a sample and guesses 'member' when its "
                f"{score_name} is {'below' if params.attack == 'loss' else 'above'} a threshold. "
                f"{n} training members and {n} unseen samples from '{params.data}' were scored; an AUC "
                "near 0.5 and an advantage near 0 mean the outputs do not reveal membership, while a "
                "large train/held-out accuracy or loss gap (overfitting) usually shows up here as a leak. "
                f"CIs: {WEIGHT_RESAMPLES} bootstrap resamples of members and non-members separately. "
                "Every row of 'train' counts as a member: rows the model was not actually fitted on "
                "(a validation carve-out, a training subset) dilute the members and can only understate "
                "the leak.")),
            table(f"Membership-inference attack ({params.attack} threshold)",
                  ["sample", "n", f"mean {score_name}", "accuracy"], rows,
                  note=f"Members flagged when at most 1% of non-members are (TPR at FPR <= 1%): {low_fpr:.3f} "
                       "(0.01 = guessing); a leak that singles out a few records shows here first."),
            chart("roc", "Attack ROC curve",
                  {"fpr": fpr, "tpr": tpr, "title": f"Membership inference ({params.attack} attack)"},
                  caption="True positive rate (members flagged) against false positive rate (non-members flagged); "
                          "the diagonal is guessing."),
        ]
