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
from checks.privacy.membership_inference import MembershipInference, weighted_auc_advantage

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
    table = next(e for e in a.evidence if e["type"] == "table")
    assert [row[1] for row in table["rows"]] == [100, 100]  # members, non-members


def test_needs_train_and_heldout(splits) -> None:
    _, members, _ = splits
    ctx = Context.from_objects({"test": members}, train_mlp(members, steps=1))
    with pytest.raises(SkipCheck, match="no 'train'"):
        MembershipInference().run(ctx, MembershipInference.Params())
    with pytest.raises(ValueError, match="held-out"):
        MembershipInference.validate_params(MembershipInference.Params(data="train"), None)
