"""privacy.membership_inference: the vectorised AUC matches scikit-learn, an unseen model
leaks nothing (AUC ~ 0.5), an overfit model leaks clearly, no extra forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import SkipCheck
from audit.verdict import judge
from audit.spec import Threshold
from audit.spec import TrainSpec
from audit.training import fit
from checks.privacy.membership_inference import MembershipInference, rmia_scores, tpr_at_fpr, weighted_auc_advantage

N_FEAT = 20


def make_split(n: int, seed: int) -> Dataset:
    """A noisy task (20% flipped labels): memorising it shows as a loss gap."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEAT)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int64)
    flip = rng.random(n) < 0.2
    y[flip] = 1 - y[flip]
    return Dataset(f"split{seed}", x, y, "tabular", ["a", "b"])


def train_mlp(ds: Dataset, *, steps: int) -> LoadedModel:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(N_FEAT, 128), torch.nn.ReLU(), torch.nn.Linear(128, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only add contention
    try:
        for _ in range(steps):  # full batch: memorises a few hundred rows in well under a second
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return LoadedModel(module=net, sha256="t", source="t", architecture="mlp")


@pytest.fixture(scope="module")
def splits():
    return make_split(400, 1), make_split(400, 2), make_split(400, 3)


def mia(train: Dataset, test: Dataset, model: LoadedModel, **params):
    ctx = Context.from_objects({"train": train, "test": test}, model)
    return MembershipInference().run(ctx, MembershipInference.Params(**params)), ctx


def test_vectorised_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    members = (rng.random(300) < 0.5).astype(np.int64)
    scores[members == 1] += 0.4
    auc, adv = weighted_auc_advantage(scores, members, np.ones((1, 300), np.float32))
    fpr, tpr, _ = roc_curve(members, scores)
    assert auc[0] == pytest.approx(roc_auc_score(members, scores), abs=1e-6)
    assert adv[0] == pytest.approx((tpr - fpr).max(), abs=1e-6)
    # Integer weights = duplicated rows.
    w = rng.integers(0, 3, 300)
    rep = np.repeat(np.arange(300), w)
    auc_w, _ = weighted_auc_advantage(scores, members, w[None].astype(np.float32))
    assert auc_w[0] == pytest.approx(roc_auc_score(members[rep], scores[rep]), abs=1e-6)


@pytest.fixture(scope="module")
def unseen(splits) -> LoadedModel:
    return train_mlp(splits[0], steps=300)  # never saw splits[1] (the "members")


def test_unseen_members_give_chance_auc(splits, unseen) -> None:
    _, members, non_members = splits
    m, _ = mia(members, non_members, unseen, n_samples=400)
    auc = m.metrics["mia_auc"]
    assert abs(auc.value - 0.5) < 0.06
    assert auc.ci[0] < 0.5 < auc.ci[1]
    assert judge(auc, Threshold(max=0.6)) == "pass"


@pytest.fixture(scope="module")
def overfit(splits) -> LoadedModel:
    return train_mlp(splits[1], steps=300)  # memorises its 400 noisy rows


# The label-free confidence attack is weaker than the loss attack, but both see the leak.
@pytest.mark.parametrize(("attack", "min_auc"), [("loss", 0.7), ("confidence", 0.55)])
def test_overfit_model_leaks(splits, overfit, attack, min_auc) -> None:
    _, members, non_members = splits
    m, ctx = mia(members, non_members, overfit, n_samples=400, attack=attack)
    auc, adv = m.metrics["mia_auc"], m.metrics["mia_advantage"]
    assert auc.ci[0] > min_auc
    assert adv.ci[0] > 0.3
    assert judge(auc, Threshold(max=0.6)) == "fail"
    # One forward pass per sample: the attack reuses the cached outputs.
    assert ctx.forward_samples == len(members) + len(non_members)
    types = [e["type"] for e in m.evidence]
    assert "chart" in types and "table" in types


def test_balanced_subsample_and_seeded(splits, unseen) -> None:
    _, members, non_members = splits
    a, _ = mia(members, non_members, unseen, n_samples=100)
    b, _ = mia(members, non_members, unseen, n_samples=100)
    assert a.metrics == b.metrics
    table = next(e for e in a.evidence if e["type"] == "table" and e["title"] == "Members and non-members")
    assert [row[1] for row in table["rows"]] == [100, 100]  # members, non-members


def test_needs_train_and_heldout(splits) -> None:
    _, members, _ = splits
    ctx = Context.from_objects({"test": members}, train_mlp(members, steps=1))
    with pytest.raises(SkipCheck, match="no 'train'"):
        MembershipInference().run(ctx, MembershipInference.Params())
    with pytest.raises(ValueError, match="held-out"):
        MembershipInference.validate_params(MembershipInference.Params(data="train"), None)


# ---- RMIA: the reference-model attack --------------------------------------------------------
def test_rmia_scores_match_a_plain_reimplementation() -> None:
    """Offline RMIA written out as the paper states it, one pair (x, z) at a time."""
    rng = np.random.default_rng(0)
    k, nx, nz, a, gamma = 4, 30, 50, 0.3, 1.0
    p_tx, p_tz = rng.random(nx), rng.random(nz)
    p_rx, p_rz = rng.random((nx, k)), rng.random((nz, k))
    share, _ = rmia_scores(p_tx, p_rx, p_tz, p_rz, a, gamma)
    for i in range(nx):
        px = 0.5 * ((1 + a) * p_rx[i].mean() + (1 - a))
        hits = 0
        for j in range(nz):
            pz = 0.5 * ((1 + a) * p_rz[j].mean() + (1 - a))
            hits += (p_tx[i] / px) / (p_tz[j] / pz) > gamma
        assert share[i] == pytest.approx(hits / nz)


def test_tpr_at_fpr_calibrates_on_non_members() -> None:
    rng = np.random.default_rng(1)
    non, mem = rng.normal(size=500), rng.normal(size=400) + 1.0
    m, fp, tau = tpr_at_fpr(mem, non, 0.01, 0.95)
    assert fp == 5 and (non > tau).sum() == 5           # floor(1% of 500) non-members flagged
    assert m.successes == int((mem > tau).sum()) and m.n == 400
    assert m.ci[0] < m.value < m.ci[1]


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(N_FEAT, 128), torch.nn.ReLU(), torch.nn.Linear(128, 2))


# The audited model's recipe, which the reference models reuse (full batch: memorises 400 noisy rows).
RECIPE = TrainSpec(architecture="ft_transformer", epochs=300, batch_size=400, lr=0.01, scheduler="none",
                   weight_decay=0.0, val_fraction=0.01)


@pytest.fixture(scope="module")
def rmia_setup():
    members, non_members, population, other = make_split(400, 1), make_split(400, 2), make_split(1600, 3), \
        make_split(400, 4)
    target = fit(members, RECIPE, seed=0, factory=_mlp)  # a recipe in its record: RMIA can train references
    return members, non_members, population, other, target


def _rmia(train, test, population, model):
    ctx = Context.from_objects({"train": train, "test": test, "population": population}, model)
    return MembershipInference().run(ctx, MembershipInference.Params(n_samples=400, population="population")), ctx


def _attack_row(m, prefix):
    tab = next(e for e in m.evidence if e["type"] == "table" and e["title"].startswith("Attacks"))
    return next(r for r in tab["rows"] if r[0].startswith(prefix))


def test_rmia_finds_members_of_an_overfit_model_at_low_fpr(rmia_setup) -> None:
    members, non_members, population, _, target = rmia_setup
    m, ctx = _rmia(members, non_members, population, target)
    tpr = m.metrics["tpr_at_fpr_1pct"]
    loss_tpr = _attack_row(m, "loss")[2]
    print(f"overfit: RMIA TPR@1%FPR {tpr.value:.3f} {tpr.ci}, loss attack {loss_tpr['value']:.3f} "
          f"{loss_tpr['ci']}, AUC {m.metrics['mia_auc'].value:.3f}, TPR@0.1% {m.metrics['tpr_at_fpr_0.1pct'].value:.3f}")
    assert tpr.ci[0] > 0.03                       # clearly above guessing (0.01)
    assert tpr.value > loss_tpr["ci"][1]          # and above the loss-threshold attack
    assert m.metrics["mia_auc"].ci[0] > 0.65
    assert _attack_row(m, "RMIA")[0].endswith("headline")
    refs = next(e for e in m.evidence if e["type"] == "table" and e["title"] == "Reference models")
    assert len(refs["rows"]) == 4
    assert any(e["type"] == "chart" and e["data"].get("xlog") for e in m.evidence)  # the log-scale ROC
    # the reference models' training and inference passes are counted
    assert ctx.backward_samples > 0 and ctx.forward_samples > 2 * 400


def test_rmia_on_a_model_that_never_saw_the_members_is_guessing(rmia_setup) -> None:
    _, non_members, population, other, target = rmia_setup
    m, _ = _rmia(other, non_members, population, target)  # 'train' rows the model never saw
    tpr = m.metrics["tpr_at_fpr_1pct"]
    print(f"unseen: RMIA TPR@1%FPR {tpr.value:.3f} {tpr.ci}, AUC {m.metrics['mia_auc'].value:.3f}")
    assert tpr.ci[0] <= 0.01 <= tpr.ci[1]
    assert m.metrics["mia_auc"].ci[0] < 0.5 < m.metrics["mia_auc"].ci[1]


def test_without_a_recipe_the_loss_attack_is_the_headline(splits, overfit) -> None:
    _, members, non_members = splits
    m, ctx = mia(members, non_members, overfit, n_samples=400)
    assert "RMIA not run" in next(e for e in m.evidence if e["type"] == "text")["text"]
    assert _attack_row(m, "loss")[0].endswith("headline")
    assert m.metrics["tpr_at_fpr_1pct"].value == _attack_row(m, "loss")[2]["value"]
