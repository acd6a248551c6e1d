"""robustness.adversarial and audit.attacks: PGD strength on the digits CNN, agreement with
independent references, gradient-masking flags, pass counting and bad parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from audit import attacks
from audit.cli import main
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.runner import Runner
from audit.spec import parse_spec
from checks.robustness.adversarial import AdversarialRobustness

N = 150  # digits test rows used: small enough for a fast suite, large enough for the 0.02 checks


@pytest.fixture(scope="module")
def digits() -> tuple[LoadedModel, Dataset]:
    fixtures_models = pytest.importorskip("fixtures.models")
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "test")
    small = dataclasses.replace(ds, x=ds.x[:N], y=ds.y[:N], _sha256=None)
    return fixtures_models.load_fixture_model("digits-cnn", "cpu"), small


@pytest.fixture(scope="module")
def sweep(digits):
    model, ds = digits
    ctx = Context.from_objects({"test": ds}, model)
    params = AdversarialRobustness.Params(attack="pgd", norm="linf", eps=[0.0, 0.05, 0.1, 0.3], steps=20,
                                          n_samples=N)
    return ctx, AdversarialRobustness().run(ctx, params)


def _sweep_rows(measurement) -> dict[float, float]:
    tab = next(e for e in measurement.evidence if e["type"] == "table")
    return {row[0]: row[1]["value"] for row in tab["rows"]}


def _clean_predictions(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.module(torch.as_tensor(x)).argmax(1).numpy()


def test_pgd_digits_falls_below_0_3_and_eps0_is_clean(sweep, digits) -> None:
    ctx, m = sweep
    model, ds = digits
    rows = _sweep_rows(m)
    clean_acc = accuracy_score(ds.y, _clean_predictions(model, ds.x))
    assert clean_acc > 0.9
    assert rows[0.0] == pytest.approx(clean_acc, abs=1e-12)
    ra = m.metrics["robust_accuracy"]
    assert ra.value < 0.3
    assert ra.ci is not None and ra.ci[0] <= ra.value <= ra.ci[1]
    values = [rows[e] for e in sorted(rows)]
    assert all(b <= a for a, b in zip(values, values[1:])), f"curve not monotone: {values}"
    assert values[1] < values[0] and values[2] < values[1], "the sweep must actually bite"
    # Success rate is over the originally correct samples.
    n_correct = round(clean_acc * N)
    assert m.metrics["attack_success_rate"].value == pytest.approx(1 - ra.value * N / n_correct)
    # A sound attack on an ordinary CNN raises no masking flag.
    assert not m.flags
    assert any(e["type"] == "chart" and e["chart"] == "line" for e in m.evidence)


def test_passes_are_counted(sweep, digits) -> None:
    """No pass runs twice: PGD stops attacking a sample once it is fooled, one FGSM gradient
    (at the clean input) serves every eps, and the points PGD's loop already classified
    are not predicted again."""
    ctx, m = sweep
    model, ds = digits
    n_att = int((_clean_predictions(model, ds.x) == ds.y).sum())
    runs = next(e for e in m.evidence if e.get("title") == "Attack runs")["rows"]
    pgd = {r[0]: (r[4], r[5]) for r in runs if r[1] == "PGD"}
    assert sorted(pgd) == [0.05, 0.1, 0.3] and all(f == b <= 20 * n_att for f, b in pgd.values())
    assert pgd[0.3][1] < 5 * n_att  # at eps 0.3 nearly every sample is fooled within a few steps
    assert ctx.backward_samples == sum(b for _, b in pgd.values()) + n_att
    # predictions: FGSM's points and 10 noise draws per eps, PGD's unfooled final iterates, the clean pass
    pgd_final = ctx.forward_samples - ctx.backward_samples - 3 * n_att * (1 + 10) - N
    assert 0 <= pgd_final <= 3 * n_att
    cost = {r[0]: r[1] for r in next(e for e in m.evidence if e.get("title") == "Passes and cost")["rows"]}
    # this context had made no pass before the check: the clean pass is the check's too
    assert cost == {"forward + backward": ctx.backward_samples, "forward only": ctx.forward_samples
                    - ctx.backward_samples}


def _reference_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                   norm: str) -> torch.Tensor:
    """Textbook PGD (Madry et al.), no random start, final iterate; written independently."""
    alpha = 2.5 * eps / steps
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y), xa)
        with torch.no_grad():
            if norm == "linf":
                xa = xa + alpha * g.sign()
                xa = torch.min(torch.max(xa, x - eps), x + eps)
            else:
                g_norm = g.view(len(g), -1).norm(dim=1).view(-1, 1, 1, 1)
                xa = xa + alpha * g / g_norm.clamp_min(1e-12)
                d = xa - x
                d_norm = d.view(len(d), -1).norm(dim=1).view(-1, 1, 1, 1)
                xa = x + d * torch.clamp(eps / d_norm.clamp_min(1e-12), max=1.0)
            xa = xa.clamp(0.0, 1.0)
    return xa.detach()


def _acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_pgd_matches_independent_reference(digits, norm: str, eps: float) -> None:
    model, ds = digits
    x, y = torch.as_tensor(ds.x), torch.as_tensor(ds.y)
    ours = attacks.pgd(model.module, x, y, eps=eps, norm=norm, steps=10, random_start=False).x_adv
    ref = _reference_pgd(model.module, x, y, eps, 10, norm)
    a_ours, a_ref = _acc(model.module, ours, y), _acc(model.module, ref, y)
    assert 0.1 < a_ref < 0.9, "compare where the attack is neither trivial nor saturated"
    assert abs(a_ours - a_ref) <= 0.02
    # the perturbation set is respected
    d = (ours - x).view(len(x), -1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) and float(ours.min()) >= 0 and float(ours.max()) <= 1


def test_pgd_matches_art(digits) -> None:
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    model, ds = digits
    x, y = torch.as_tensor(ds.x), torch.as_tensor(ds.y)
    clf = PyTorchClassifier(model=model.module, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=10, clip_values=(0.0, 1.0))
    art_pgd = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=0.1, eps_step=2.5 * 0.1 / 10, max_iter=10,
                                              num_random_init=0, batch_size=256, verbose=False)
    x_art = torch.as_tensor(art_pgd.generate(x.numpy(), y=y.numpy()))
    ours = attacks.pgd(model.module, x, y, eps=0.1, norm="linf", steps=10, random_start=False).x_adv
    assert abs(_acc(model.module, ours, y) - _acc(model.module, x_art, y)) <= 0.02


def test_eps_zero_and_masks_leave_inputs_alone() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    for norm in ("linf", "l2"):
        assert torch.equal(attacks.pgd(net, x, y, eps=0.0, norm=norm, lo=-9.0, hi=9.0,
                                       generator=torch.Generator().manual_seed(0)).x_adv, x)
    # tabular geometry: eps in units of each feature's scale, frozen features never move
    scale = torch.tensor([1.0, 0.0, 2.0, 0.0, 0.5, 1.0])
    for norm in ("linf", "l2"):
        adv = attacks.pgd(net, x, y, eps=0.3, norm=norm, scale=scale, lo=float("-inf"), hi=float("inf"),
                          generator=torch.Generator().manual_seed(0)).x_adv
        d = adv - x
        assert float(d[:, scale == 0].abs().max()) == 0.0
        u = d[:, scale > 0] / scale[scale > 0]
        size = u.abs().amax(1) if norm == "linf" else u.norm(dim=1)
        assert float(size.max()) <= 0.3 * (1 + 1e-5) and float(size.max()) > 0.1


class _Quantize(torch.nn.Module):
    """Input quantization: round() has zero gradient almost everywhere (masks gradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


def _runner(ctx: Context, check: dict) -> Runner:
    spec = parse_spec({"name": "t", "model": {"fixture": "in-memory"},
                       "data": {"test": {"fixture": "in-memory"}}, "checks": [check]})
    runner = Runner(spec, device="cpu")
    runner.ctx = ctx
    return runner


def test_masked_gradients_are_flagged_and_cap_at_warn(digits) -> None:
    model, ds = digits
    masked = LoadedModel(module=torch.nn.Sequential(_Quantize(), model.module), sha256="masked",
                         source="test", architecture="quantized cnn", input_range=(0.0, 1.0))
    ctx = Context.from_objects({"test": ds}, masked)
    runner = _runner(ctx, {"id": "adv", "check": "robustness.adversarial", "eps": [0.1, 0.2], "steps": 10,
                           "n_samples": N, "thresholds": {"robust_accuracy": {"min": 0.0}}})
    result = runner.run_check(runner.spec.checks[0])
    assert result.thresholds[0].status == "pass"  # the threshold alone would pass ...
    assert result.status == "warn"                # ... the masking flag caps it at warn
    names = " | ".join(f["flag"] for f in result.flags)
    assert "zero or non-finite input gradients" in names
    assert "weaker than uniform random noise" in names
    assert "flag:" in result.message

    # The same model without the quantizer is not flagged and passes.
    plain = Context.from_objects({"test": ds}, model)
    runner = _runner(plain, {"id": "adv", "check": "robustness.adversarial", "eps": [0.02], "steps": 5,
                             "n_samples": 60, "thresholds": {"robust_accuracy": {"min": 0.0}}})
    assert runner.run_check(runner.spec.checks[0]).status == "pass"


def test_tabular_perturbs_continuous_features_only() -> None:
    rng = np.random.default_rng(0)
    n = 300
    cont = rng.normal(size=(n, 3)).astype(np.float32) * np.array([1.0, 5.0, 0.1], dtype=np.float32)
    onehot = np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]
    x = np.concatenate([cont, onehot], axis=1)
    y = ((cont[:, 0] + cont[:, 1] / 5 + onehot[:, 0]) > 0.5).astype(np.int64)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.as_tensor(x)), torch.as_tensor(y)).backward()
        opt.step()
    ds = Dataset(name="tab", x=x, y=y, kind="tabular", classes=["no", "yes"],
                 continuous=np.array([True, True, True, False, False]))
    ctx = Context.from_objects({"test": ds}, LoadedModel(net, "t", "test", "mlp"))
    m = AdversarialRobustness().run(ctx, AdversarialRobustness.Params(eps=[0.1, 0.5, 1.0], n_samples=n, steps=10))
    rows = _sweep_rows(m)
    assert rows[1.0] < rows[0.0] - 0.2  # one std of movement breaks a model this simple
    assert m.metrics["robust_accuracy"].value == pytest.approx(rows[1.0])


SPEC = """\
name: adversarial parameters
model: {{fixture: digits-cnn{box}}}
data:
  test: {{fixture: digits, split: test}}
checks:
  - {{id: adv, check: robustness.adversarial, {params}}}
"""


@pytest.mark.parametrize(("params", "box", "command", "message"), [
    ("eps: [0.1, -0.05]", "", "validate", "eps must be finite and >= 0, got -0.05"),
    ("eps: 0.5, norm: linfinity", "", "validate", "checks[0].norm"),
    ("eps: 2.0", ", input_range: [0.0, 1.0]", "validate", "eps 2 is larger than the input box"),
    ("eps: 1.5", "", "run", "eps 1.5 is larger than the input box"),
    ("eps: 0.1, targeted: true", "", "validate", "checks[0].targeted"),
    ("eps: 0.1, stepz: 3", "", "validate", "unknown parameter 'stepz'"),
])
def test_bad_parameters_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], params: str, box: str,
                               command: str, message: str) -> None:
    if command == "run":
        pytest.importorskip("fixtures.models")
    p = tmp_path / "audit_adv.yaml"
    p.write_text(SPEC.format(params=params, box=box))
    argv = [command, str(p)] + (["--out", str(tmp_path / "out"), "--quiet"] if command == "run" else [])
    assert main(argv) == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert message in text
    assert "Traceback" not in text
