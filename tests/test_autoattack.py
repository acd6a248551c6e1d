"""AutoAttack in robustness.adversarial and audit.attacks_auto: the perturbation set is
respected, an undefended CNN falls to 0 at Linf 0.3, gradient-masked models (saturated
logits, input quantization) cannot look robust, an adversarially trained CNN matches
ART's AutoAttack on the same points, tabular attacks keep one-hot columns valid and
whole-number columns whole, every pass is counted, and runs are seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from audit import attacks_auto as aa
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.spec import ModelSpec
from checks.robustness.adversarial import AdversarialRobustness, _finalize, tabular_geometry
from tests.check_contract import _observed_passes

N = 60
# Budgets that keep the suite fast; the check's defaults are the standard version's
# (100 iterations, 9 target classes, 5000 queries).
FAST = dict(steps=20, n_target_classes=2, n_queries=300, noise_draws=2)


@pytest.fixture(scope="module")
def digits(digits_cnn):
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "test")
    return digits_cnn, dataclasses.replace(ds, x=ds.x[:N], y=ds.y[:N], _sha256=None)


class Saturated(torch.nn.Module):
    """Logits times 1e4: softmax saturates, the cross-entropy gradient is exactly zero."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) * 1e4


class Quantized(torch.nn.Module):
    """Input quantization to 5 levels: round() has zero gradient almost everywhere."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(torch.round(x * 4) / 4)


def _run(model: torch.nn.Module, ds: Dataset, **params):
    ctx = Context.from_objects({"test": ds}, LoadedModel(model, "m", "test", "cnn", input_range=(0.0, 1.0)))
    m = AdversarialRobustness().run(ctx, AdversarialRobustness.Params(n_samples=len(ds), **{**FAST, **params}))
    return ctx, m


def _sweep(m) -> dict[str, dict[float, float]]:
    """column -> eps -> robust accuracy, from the sweep table."""
    tab = next(e for e in m.evidence if e["type"] == "table" and e["title"] == "Attack sweep")
    out: dict[str, dict[float, float]] = {}
    for j, col in enumerate(tab["columns"][1:], start=1):
        out[col] = {row[0]: (row[j]["value"] if isinstance(row[j], dict) else row[j]) for row in tab["rows"]}
    return out


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_each_attack_stays_in_the_ball_and_box(digits, norm, eps) -> None:
    model, ds = digits
    x, y = torch.as_tensor(ds.x[:24]), torch.as_tensor(ds.y[:24])
    for attack in ("apgd-ce", "apgd-t", "fab-t", "square"):
        r = aa.run_attacks(model.module, x, y, aa.AttackConfig(norm, eps, steps=10, n_target_classes=2, n_queries=100),
                           attacks=(attack,), generator=torch.Generator().manual_seed(0))
        d = (r.x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5), attack
        assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
        with torch.no_grad():
            fooled = model.module(r.x_adv).argmax(1) != y
        assert torch.equal(fooled, ~r.robust), attack  # robust flags are the model's verdict on x_adv
        assert r.fooled_by[attack].any(), f"{attack} found nothing at {norm} {eps}"


def test_fab_finds_small_perturbations(digits) -> None:
    """FAB is a minimum-norm attack: on an undefended CNN its adversarial points are well
    inside a generous ball."""
    model, ds = digits
    x, y = torch.as_tensor(ds.x[:16]), torch.as_tensor(ds.y[:16])
    space = aa.Space(x, "linf", 0.5, 0.0, 1.0, None)
    target = aa._target_classes(model.module(x), y, 1)[0]
    out = aa.fab_targeted_batch(model.module, lambda n: None, space, y, target, steps=20)
    assert out.fooled.float().mean() > 0.8
    assert float(out.info["min_size"][out.fooled].median()) < 0.25


def test_undefended_cnn_is_not_robust_at_linf_0_3(digits) -> None:
    model, ds = digits
    ctx, m = _run(model.module, ds, attack="autoattack", eps=[0.1, 0.3])
    assert m.metrics["robust_accuracy"].value == 0.0
    assert not m.flags
    runs = next(e for e in m.evidence if e["type"] == "table" and e["title"] == "Attack runs")
    assert {r[1] for r in runs["rows"]} >= {"APGD-CE"}
    assert "Seeds" in runs["note"] and "Restarts: 1" in runs["note"]


@pytest.mark.parametrize("wrap", [Saturated, Quantized])
def test_masked_models_cannot_look_robust(digits, wrap) -> None:
    model, ds = digits
    masked = wrap(model.module)
    surrogate = ModelSpec(fixture="digits-cnn")  # the undefended twin
    _, pgd = _run(masked, ds, attack="pgd", eps=[0.1, 0.3], black_box="never")
    _, auto = _run(masked, ds, attack="autoattack", eps=[0.1, 0.3], surrogate=surrogate)
    _, square = _run(masked, ds, attack="square", eps=[0.1, 0.3])
    pgd_alone = _sweep(pgd)["PGD alone robust acc."][0.3]
    reported = auto.metrics["robust_accuracy"].value
    transfer = _sweep(auto)["transfer robust acc."][0.3]
    black_box = square.metrics["robust_accuracy"].value
    print(f"{wrap.__name__}: PGD alone {pgd_alone:.2f}, AutoAttack+transfer reported {reported:.2f}, "
          f"transfer {transfer:.2f}, Square alone {black_box:.2f}")
    assert pgd_alone > 0.8                       # the masked gradient fools PGD ...
    assert reported <= min(transfer, black_box) + 0.05   # ... and cannot fool the headline
    assert reported <= 0.1
    assert any("gradients" in f.flag for f in auto.flags)


def test_pgd_masked_runs_square_when_flagged(digits) -> None:
    model, ds = digits
    _, m = _run(Quantized(model.module), ds, attack="pgd", eps=[0.3])
    assert m.flags
    cols = _sweep(m)
    assert cols["PGD alone robust acc."][0.3] > 0.8
    assert m.metrics["robust_accuracy"].value == pytest.approx(cols["after Square robust acc."][0.3])
    assert m.metrics["robust_accuracy"].value < 0.2


# ---- adversarially trained CNN vs ART -------------------------------------------------------
class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.ReLU(),
                                       torch.nn.Flatten(), torch.nn.Linear(32 * 16, 64), torch.nn.ReLU(),
                                       torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


AT_EPS = 0.1


@pytest.fixture(scope="module")
def adv_trained():
    """PGD adversarial training (Madry et al.) on the digits train split: 3 steps of
    eps/2 at eps 0.1, 12 epochs (about 10 s of one CPU core)."""
    from fixtures.datasets import load_fixture_dataset

    tr = load_fixture_dataset("digits", "train")
    x, y = torch.as_tensor(tr.x), torch.as_tensor(tr.y)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SmallCNN()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(12):
            perm = torch.randperm(len(y), generator=g)
            for s in range(0, len(y), 64):
                b = perm[s:s + 64]
                xb, yb = x[b], y[b]
                d = (torch.rand(xb.shape, generator=g) * 2 - 1) * AT_EPS
                for _ in range(3):
                    d.requires_grad_(True)
                    (gd,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net((xb + d).clamp(0, 1)), yb), d)
                    d = (d.detach() + AT_EPS / 2 * gd.sign()).clamp(-AT_EPS, AT_EPS)
                loss = torch.nn.functional.cross_entropy(net((xb + d).clamp(0, 1)), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def test_adversarially_trained_cnn_matches_art_autoattack(digits, adv_trained) -> None:
    pytest.importorskip("art")
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import PyTorchClassifier

    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "test")
    n = 150
    x, y = ds.x[:n], ds.y[:n]
    clf = PyTorchClassifier(model=adv_trained, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=10, clip_values=(0.0, 1.0))
    steps, queries = 50, 500
    art_attacks = [
        AutoProjectedGradientDescent(clf, norm=np.inf, eps=AT_EPS, eps_step=2 * AT_EPS, max_iter=steps,
                                     nb_random_init=1, batch_size=256, loss_type="cross_entropy", verbose=False),
        AutoProjectedGradientDescent(clf, norm=np.inf, eps=AT_EPS, eps_step=2 * AT_EPS, max_iter=steps,
                                     nb_random_init=1, batch_size=256, loss_type="difference_logits_ratio",
                                     verbose=False),
        SquareAttack(clf, norm=np.inf, eps=AT_EPS, max_iter=queries, p_init=0.8, nb_restarts=1, verbose=False),
    ]
    np.random.seed(0)
    torch.manual_seed(0)
    x_art = AutoAttack(clf, norm=np.inf, eps=AT_EPS, attacks=art_attacks, batch_size=256).generate(x, y=y)
    with torch.no_grad():
        art_robust = float((adv_trained(torch.as_tensor(x_art)).argmax(1).numpy() == y).mean())

    small = dataclasses.replace(ds, x=x, y=y, _sha256=None)
    ctx = Context.from_objects({"test": small},
                               LoadedModel(adv_trained, "at", "test", "adv-trained cnn", input_range=(0.0, 1.0)))
    m = AdversarialRobustness().run(ctx, AdversarialRobustness.Params(
        attack="autoattack", eps=AT_EPS, n_samples=n, steps=steps, n_target_classes=3, n_queries=queries,
        noise_draws=1))
    ours = m.metrics["robust_accuracy"].value
    clean = float((ctx.predictions("test") == y).mean())
    print(f"adversarially trained CNN at Linf {AT_EPS}: clean {clean:.3f}, ours {ours:.3f}, ART {art_robust:.3f}")
    assert clean > 0.85 and 0.3 < art_robust < 0.95, "compare where the model is neither broken nor trivially robust"
    assert abs(ours - art_robust) <= 0.015 + 1e-9
    assert not m.flags


# ---- tabular --------------------------------------------------------------------------------
def _tabular(n: int = 200) -> tuple[Dataset, torch.nn.Module]:
    rng = np.random.default_rng(0)
    cont = rng.normal(size=(n, 2)).astype(np.float32) * np.array([1.0, 5.0], dtype=np.float32)
    years = rng.integers(18, 70, n).astype(np.float32)[:, None]        # a whole-number column
    cat = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]           # a one-hot group
    x = np.concatenate([cont, years, cat], axis=1)
    y = ((cont[:, 0] + cont[:, 1] / 5 + (years[:, 0] - 44) / 15 + cat[:, 0]) > 0.3).astype(np.int64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    xs = torch.as_tensor((x - x.mean(0)) / x.std(0))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xs), torch.as_tensor(y)).backward()
        opt.step()
    mean, std = torch.as_tensor(x.mean(0)), torch.as_tensor(x.std(0))
    model = torch.nn.Sequential(_Standardize(mean, std), net)
    ds = Dataset("tab", x, y, "tabular", ["no", "yes"],
                 feature_names=["income", "debt", "age", "colour=red", "colour=green", "colour=blue"],
                 feature_groups={"income": [0], "debt": [1], "age": [2], "colour": [3, 4, 5]},
                 continuous=np.array([True, True, True, False, False, False]))
    return ds, model


class _Standardize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_tabular_one_hot_stays_valid_and_whole_numbers_stay_whole(norm) -> None:
    ds, model = _tabular()
    for p in model.parameters():
        p.requires_grad_(False)
    geo = tabular_geometry(ds)
    assert list(geo["integer"]) == [False, False, True, False, False, False]
    x, y = torch.as_tensor(ds.x), torch.as_tensor(ds.y)
    eps = 0.5
    r = aa.run_attacks(model, x, y, aa.AttackConfig(norm, eps, steps=10, n_target_classes=1, n_queries=100),
                       attacks=("apgd-ce", "fab-t", "square"), lo=geo["lo"], hi=geo["hi"], scale=geo["scale"],
                       generator=torch.Generator().manual_seed(0),
                       finalize=lambda x0, xa: _finalize(x0, xa, geo, norm, eps))
    adv = r.x_adv.numpy()
    onehot = adv[:, 3:6]
    assert np.array_equal(onehot, ds.x[:, 3:6])                      # never moved ...
    assert np.all(onehot.sum(1) == 1) and np.all(np.isin(onehot, [0.0, 1.0]))  # ... so still one-hot
    assert np.array_equal(adv[:, 2], np.round(adv[:, 2]))            # whole years
    u = (adv[:, :3] - ds.x[:, :3]) / geo["std"][:3]
    size = np.abs(u).max(1) if norm == "linf" else np.linalg.norm(u, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert (~r.robust).float().mean() > 0.2  # half a std breaks a model this simple


def test_tabular_report_states_eps_units(capsys) -> None:
    ds, model = _tabular()
    ctx = Context.from_objects({"test": ds}, LoadedModel(model, "t", "test", "mlp"))
    m = AdversarialRobustness().run(ctx, AdversarialRobustness.Params(attack="autoattack", n_samples=120, **FAST))
    sweep = _sweep(m)["robust accuracy (worst case)"]
    assert sorted(sweep) == [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]        # the tabular default, in std
    units = next(e for e in m.evidence if e["type"] == "table" and e["title"] == "What eps means on this data")
    assert [r[0] for r in units["rows"]] == ["income", "debt", "age"]
    assert units["rows"][2][3] == "whole steps"
    assert "standard deviations" in units["note"] and "colour=red" in units["note"]
    chart = next(e for e in m.evidence if e["type"] == "chart")
    assert "standard deviations of each continuous feature" in chart["data"]["xlabel"]
    print(units["note"])
    print({e: round(v, 3) for e, v in sweep.items()})


# ---- counting and seeding -------------------------------------------------------------------
def test_every_pass_is_counted_and_runs_are_seeded(digits) -> None:
    model, ds = digits
    small = dataclasses.replace(ds, x=ds.x[:20], y=ds.y[:20], _sha256=None)
    results = []
    for _ in range(2):
        ctx = Context.from_objects({"test": small}, model)
        ctx.logits("test")
        before = ctx.compute()
        with _observed_passes() as seen:
            m = AdversarialRobustness().run(ctx, AdversarialRobustness.Params(
                attack="autoattack", eps=[0.05, 0.1], n_samples=20, surrogate=ModelSpec(fixture="digits-cnn"),
                **{**FAST, "steps": 5, "n_queries": 30}))
        after = ctx.compute()
        assert {k: after[k] - before[k] for k in after} == seen
        results.append(m.metrics)
    assert results[0] == results[1]
