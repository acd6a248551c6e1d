"""Differentially private training (model.train.dp, DP-SGD through Opacus): the
accountant's epsilon is recorded and within the target, BatchNorm is replaced with a note,
every pass is counted, and a digits CNN trained
with epsilon 1 leaks less to the membership attack than the same recipe without DP."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("opacus")

from audit.context import Context  # noqa: E402
from audit.spec import TrainSpec, parse_spec  # noqa: E402
from audit.training import fit  # noqa: E402
from checks.privacy.membership_inference import MembershipInference  # noqa: E402
from tests.check_contract import _observed_passes  # noqa: E402

OPTIONS = {"widths": [8, 16], "hidden": 32, "dropout": 0.0}


@pytest.fixture(scope="module")
def digits():
    from fixtures.datasets import load_fixture_dataset

    return load_fixture_dataset("digits", "train"), load_fixture_dataset("digits", "test")


def _recipe(**dp) -> TrainSpec:
    return TrainSpec.model_validate({"architecture": "cnn", "epochs": 8, "batch_size": 64, "lr": 5e-3,
                                     "scheduler": "none", "options": OPTIONS, **({"dp": dp} if dp else {})})


def test_spec_takes_a_dp_section() -> None:
    spec = parse_spec({"name": "dp", "model": {"train": {"architecture": "cnn", "dp": {"epsilon": 8}}},
                       "data": {"train": {"fixture": "digits", "split": "train"}}, "checks": []},
                      check_registry=False)
    assert spec.model.train.dp.epsilon == 8 and spec.model.train.dp.delta == 1e-5
    assert spec.model.train.dp.max_grad_norm == 1.0
    with pytest.raises(Exception, match="epsilon"):
        parse_spec({"name": "dp", "model": {"train": {"architecture": "cnn", "dp": {"epsilon": -1}}},
                    "data": {}, "checks": []}, check_registry=False)


@pytest.fixture(scope="module")
def private_and_plain(digits):
    train, _ = digits
    seen = []
    with _observed_passes() as passes:
        counted = {"forward": 0, "backward": 0}

        def count(f: int, b: int) -> None:
            counted["forward"] += f
            counted["backward"] += b

        private = fit(train, _recipe(epsilon=1.0), seed=0, count=count)
        seen.append((dict(passes), dict(counted)))
    plain = fit(train, _recipe(), seed=0)
    return private, plain, seen[0]


def test_dp_training_records_the_accountants_epsilon(private_and_plain) -> None:
    private, plain, (observed, counted) = private_and_plain
    rec = private.training["privacy"]
    assert rec["target_epsilon"] == 1.0 and rec["delta"] == 1e-5 and rec["accountant"] == "RDP"
    assert 0.5 < rec["epsilon"] <= 1.0 + 1e-3       # the budget is spent, not exceeded
    assert rec["noise_multiplier"] > 0.5
    assert "BatchNorm2d replaced by GroupNorm" in rec["layers_replaced"][0]
    assert any(isinstance(m, torch.nn.GroupNorm) for m in private.module.modules())
    assert private.training["epochs"][-1]["epsilon_spent"] == pytest.approx(rec["epsilon"], abs=1e-3)
    assert "privacy" not in plain.training
    # the recipe (with dp) is in the record, so reference models can be trained the same way
    assert private.training["recipe"]["dp"]["epsilon"] == 1.0
    assert {"forward_samples": counted["forward"], "backward_samples": counted["backward"]} == observed
    # a fresh module from the record's factory takes the weights (GroupNorm in place of BatchNorm)
    private.factory().load_state_dict(private.module.state_dict())


def test_dp_costs_accuracy_and_lowers_membership_leak(digits, private_and_plain) -> None:
    """Digits CNN with dp epsilon 1 vs the same recipe without: accuracy and RMIA TPR at
    low FPR for both (reference models trained with each model's own recipe)."""
    train, test = digits
    private, plain, _ = private_and_plain
    out = {}
    for name, model in (("dp", private), ("plain", plain)):
        ctx = Context.from_objects({"train": train, "test": test}, model)
        m = MembershipInference().run(ctx, MembershipInference.Params(n_samples=300, reference_models=2))
        acc = float((ctx.predictions("test") == test.y).mean())
        out[name] = (acc, m)
        how = next(e for e in m.evidence if e["type"] == "text")["text"]
        if name == "dp":
            assert "differential privacy: epsilon" in how and "DP-SGD epsilon 1" in how
    for name, (acc, m) in out.items():
        t1, t01 = m.metrics["tpr_at_fpr_1pct"], m.metrics["tpr_at_fpr_0.1pct"]
        eps = private.training["privacy"]["epsilon"] if name == "dp" else float("inf")
        print(f"{name}: epsilon {eps:.3g}, test accuracy {acc:.3f}, MIA AUC {m.metrics['mia_auc'].value:.3f}, "
              f"TPR@1%FPR {t1.value:.3f} [{t1.ci[0]:.3f}, {t1.ci[1]:.3f}], TPR@0.1%FPR {t01.value:.3f}")
    assert out["dp"][0] < out["plain"][0]                        # the accuracy cost
    assert out["dp"][0] > 0.25                                    # ... but far above chance (0.1)
    dp_tpr = out["dp"][1].metrics["tpr_at_fpr_1pct"]
    assert dp_tpr.ci[0] <= 0.01 <= dp_tpr.ci[1] or dp_tpr.value <= 0.02   # epsilon 1: no detectable leak
