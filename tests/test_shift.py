"""shift.domain and shift.corruption: drops with paired/independent bootstrap CIs checked
against scikit-learn and a per-sample bootstrap, the invert domain failing max_drop end to
end, the corruption grid and its caching, and bad parameters."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from audit.cli import main
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.stats import bootstrap_mean
from audit.transforms import apply_transform
from checks.shift.corruption import CorruptionShift
from checks.shift.domain import DomainShift

N = 200


@pytest.fixture(scope="module")
def digits() -> tuple[LoadedModel, Dataset]:
    fixtures_models = pytest.importorskip("fixtures.models")
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "test")
    ds = dataclasses.replace(ds, name="test", x=ds.x[:N], y=ds.y[:N], _sha256=None)
    return fixtures_models.load_fixture_model("digits-cnn", "cpu"), ds


@pytest.fixture(scope="module")
def domain_ctx(digits) -> Context:
    model, ds = digits
    inverted = apply_transform(ds, "invert", 5, np.random.default_rng(0))
    inverted.name = "inverted"
    rotated = apply_transform(ds, "rotate", 2, np.random.default_rng(1))
    rotated.name = "rotated"
    # A separate data set (other rows, not a transform of the test rows): resampled independently.
    from fixtures.datasets import load_fixture_dataset

    other = load_fixture_dataset("digits", "train")
    other = dataclasses.replace(other, name="other", x=other.x[:300], y=other.y[:300], meta={}, _sha256=None)
    return Context.from_objects({"test": ds, "inverted": inverted, "rotated": rotated, "other": other}, model)


def _table(m) -> dict[str, list]:
    tab = next(e for e in m.evidence if e["type"] == "table")
    return {row[0]: row for row in tab["rows"]}


def test_domain_drops_match_sklearn_and_paired_bootstrap(domain_ctx: Context) -> None:
    ctx = domain_ctx
    m = DomainShift().run(ctx, DomainShift.Params(domains=["inverted", "rotated", "other"]))
    rows = _table(m)
    y = ctx.dataset("test").y
    acc_in = accuracy_score(y, ctx.predictions("test"))
    drops = {}
    for name in ("inverted", "rotated", "other"):
        acc_d = accuracy_score(ctx.dataset(name).y, ctx.predictions(name))
        assert rows[name][3]["value"] == pytest.approx(acc_d)
        drops[name] = acc_in - acc_d
        assert rows[name][4]["value"] == pytest.approx(drops[name])
    assert drops["inverted"] > 0.3
    assert m.metrics["max_drop"].value == pytest.approx(max(drops.values()))
    assert m.metrics["mean_drop"].value == pytest.approx(np.mean(list(drops.values())))
    lo, hi = m.metrics["max_drop"].ci
    assert lo <= m.metrics["max_drop"].value <= hi

    # A transformed domain is paired with the test rows: its drop CI matches a per-sample
    # paired bootstrap of (correct in-domain - correct in-domain-transformed).
    for name in ("inverted", "rotated"):
        diff = (ctx.predictions("test") == y).astype(float) - (ctx.predictions(name) == y).astype(float)
        ref = bootstrap_mean(diff, confidence=0.95, rng=np.random.default_rng(5), n_resamples=10_000)
        ci = rows[name][4]["ci"]
        assert ci[0] == pytest.approx(ref.ci[0], abs=0.012) and ci[1] == pytest.approx(ref.ci[1], abs=0.012)
    # The separate data set is independent: its interval is as wide as the two accuracies'
    # intervals combined in quadrature, wider than a paired one would be.
    ci_other = rows["other"][4]["ci"]
    se = np.sqrt(acc_in * (1 - acc_in) / len(y) + (acc_in - drops["other"]) * (1 - acc_in + drops["other"]) / 300)
    assert (ci_other[1] - ci_other[0]) == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert any(e["type"] == "chart" and e["chart"] == "bar" for e in m.evidence)


@pytest.mark.parametrize(("metric", "fn"), [
    ("balanced_accuracy", balanced_accuracy_score),
    ("f1_macro", lambda y, p: f1_score(y, p, average="macro")),
])
def test_domain_other_metrics_match_sklearn(domain_ctx: Context, metric: str, fn) -> None:
    ctx = domain_ctx
    m = DomainShift().run(ctx, DomainShift.Params(domains=["rotated"], metric=metric))
    y = ctx.dataset("test").y
    expected = fn(y, ctx.predictions("test")) - fn(y, ctx.predictions("rotated"))
    assert m.metrics["max_drop"].value == pytest.approx(expected)
    assert m.metrics["max_drop"].ci[0] <= expected <= m.metrics["max_drop"].ci[1]


def test_corruption_grid_cached_and_consistent(digits) -> None:
    model, ds = digits
    ctx = Context.from_objects({"test": ds}, model)
    params = CorruptionShift.Params(corruptions=["gaussian_noise", "contrast"], severities=[1, 3, 5], n_samples=150)
    m = CorruptionShift().run(ctx, params)
    used = ctx.forward_samples
    assert used == N + 6 * 150  # the clean pass + one pass per grid cell
    again = CorruptionShift().run(ctx, params)
    assert ctx.forward_samples == used, "grid predictions come from the context's cache"
    assert again.metrics == m.metrics

    tab = next(e for e in m.evidence if e["type"] == "table")
    grid = {row[0]: [c["value"] for c in row[1:4]] for row in tab["rows"]}
    assert set(grid) == {"gaussian_noise", "contrast"}
    assert grid["gaussian_noise"][0] > grid["gaussian_noise"][2]  # stronger noise hurts more
    clean = accuracy_score(ds.y, ctx.predictions("test"))
    cells = np.array(grid["gaussian_noise"] + grid["contrast"])
    assert m.metrics["mean_relative_accuracy"].value == pytest.approx(np.mean(cells / clean), rel=0.02)
    assert m.metrics["worst_accuracy"].value == pytest.approx(cells.min())
    for name in ("mean_relative_accuracy", "worst_accuracy"):
        lo, hi = m.metrics[name].ci
        assert lo <= m.metrics[name].value <= hi and hi - lo > 0
    fig = next(e for e in m.evidence if e["type"] == "chart")
    assert {"gaussian_noise", "contrast"} <= set(fig["data"]["curves"])


def test_corruption_cell_ci_matches_per_sample_bootstrap() -> None:
    from checks.shift.corruption import _joint_accuracy_draws
    from audit.stats import percentile_ci

    rng = np.random.default_rng(0)
    correct = rng.random((400, 3)) < np.array([0.95, 0.7, 0.4])
    draws = _joint_accuracy_draws(correct, np.random.default_rng(1))
    for j in range(3):
        ref = bootstrap_mean(correct[:, j].astype(float), confidence=0.95, rng=np.random.default_rng(2),
                             n_resamples=10_000)
        ci = percentile_ci(draws[:, j], 0.95)
        assert ci[0] == pytest.approx(ref.ci[0], abs=0.01) and ci[1] == pytest.approx(ref.ci[1], abs=0.01)
    # joint resampling keeps the columns' correlation (identical columns stay identical)
    same = _joint_accuracy_draws(np.column_stack([correct[:, 1], correct[:, 1]]), np.random.default_rng(3))
    assert np.array_equal(same[:, 0], same[:, 1])


def test_corruption_tabular_defaults() -> None:
    import torch

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(300, 2)), np.eye(2)[rng.integers(0, 2, 300)]], axis=1).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    net = torch.nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-1.0, -1.0, 0, 0], [1.0, 1.0, 0, 0]]))
        net.bias.zero_()
    ds = Dataset(name="tab", x=x, y=y, kind="tabular", classes=["a", "b"],
                 continuous=np.array([True, True, False, False]))
    ctx = Context.from_objects({"test": ds}, LoadedModel(net, "t", "test", "linear"))
    m = CorruptionShift().run(ctx, CorruptionShift.Params())
    rows = {r[0]: [c["value"] for c in r[1:6]] for r in next(e for e in m.evidence if e["type"] == "table")["rows"]}
    assert set(rows) == {"feature_noise", "feature_scale"}
    assert rows["feature_scale"] == [1.0] * 5  # scaling both inputs keeps the sign of x0 + x1
    assert rows["feature_noise"][4] < rows["feature_noise"][0]


SPEC = """\
name: robustness end to end
model: {{fixture: digits-cnn}}
data:
  test: {{fixture: digits, split: test}}
  domains:
    inverted: {{from: test, transform: invert, severity: 5}}
    rotated: {{from: test, transform: rotate, severity: 1}}
checks:
{checks}
"""


def _run(tmp_path: Path, capsys, checks: str, command: str = "run") -> tuple[int, str, Path]:
    p = tmp_path / "audit_shift.yaml"
    p.write_text(SPEC.format(checks=checks))
    out = tmp_path / "out"
    argv = [command, str(p)] + (["--out", str(out), "--quiet", "--format", "json,html"] if command == "run" else [])
    code = main(argv)
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split()), out


def test_invert_domain_fails_max_drop_end_to_end(tmp_path: Path, capsys) -> None:
    pytest.importorskip("fixtures.models")
    checks = ("  - {id: domains, check: shift.domain, domains: [inverted, rotated], "
              "thresholds: {max_drop: {max: 0.1}}}\n"
              "  - {id: corruption, check: shift.corruption, n_samples: 120, severities: [1, 3, 5]}\n")
    code, text, out = _run(tmp_path, capsys, checks)
    assert code == 1, text
    results = json.loads((out / "results.json").read_text())
    dom = next(c for c in results["checks"] if c["id"] == "domains")
    assert dom["status"] == "fail"
    assert dom["metrics"]["max_drop"]["value"] > 0.3
    rows = {r[0]: r for r in next(e for e in dom["evidence"] if e["type"] == "table")["rows"]}
    assert rows["inverted"][4]["value"] > 0.3 and rows["inverted"][4]["ci"][0] > 0.3
    cor = next(c for c in results["checks"] if c["id"] == "corruption")
    assert cor["status"] == "info"  # reported, not judged: no thresholds
    grid = next(e for e in cor["evidence"] if e["type"] == "table")
    names = [r[0] for r in grid["rows"]]
    assert names == ["gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness",
                     "pixelate", "rotate", "translate"]
    html = (out / "report.html").read_text()
    assert "Accuracy vs corruption severity" in html and "Robustness" in html
    # figures are embedded as SVG data images: the legend names every corruption
    figures = " ".join(base64.b64decode(b).decode() for b in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html))
    assert "gaussian noise" in figures and "translate" in figures


@pytest.mark.parametrize(("checks", "command", "message"), [
    ("  - {id: d, check: shift.domain, domains: [invertd]}\n", "validate",
     "'invertd' is not a domain of the spec. Did you mean 'inverted'?"),
    ("  - {id: c, check: shift.corruption, corruptions: [gausian_noise]}\n", "validate",
     "unknown corruption 'gausian_noise'. Did you mean 'gaussian_noise'?"),
    ("  - {id: c, check: shift.corruption, severities: [0, 3]}\n", "validate", "severities must be in 1..5, got 0"),
    ("  - {id: d, check: shift.domain, metric: auc}\n", "validate", "checks[0].metric"),
    ("  - {id: c, check: shift.corruption, corruptions: [feature_noise]}\n", "run",
     "corruption 'feature_noise' does not apply to image data"),
])
def test_bad_parameters_exit_2(tmp_path: Path, capsys, checks: str, command: str, message: str) -> None:
    if command == "run":
        pytest.importorskip("fixtures.models")
    code, text, _ = _run(tmp_path, capsys, checks, command)
    assert code == 2, text
    assert message in text
    assert "Traceback" not in text


def test_joint_draws_of_compact_labels_and_predictions_equal_int64_ones() -> None:
    # streamed datasets keep labels and predictions in one byte: the cell index
    # label * k + pred must not wrap around in that type (k = 12: up to 143)
    from checks.shift.domain import _joint_draws

    k = 12
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, 3000)
    pred = np.where(rng.random(3000) < 0.7, y, rng.integers(0, k, 3000))

    def acc(cm: np.ndarray) -> np.ndarray:
        return np.trace(cm, axis1=1, axis2=2) / cm.sum(axis=(1, 2))

    wide = _joint_draws(y, [pred], k, acc, np.random.default_rng(1), n_resamples=200)[0]
    narrow = _joint_draws(y.astype(np.int8), [pred.astype(np.int8)], k, acc, np.random.default_rng(1),
                          n_resamples=200)[0]
    assert np.array_equal(wide, narrow) and abs(wide.mean() - (y == pred).mean()) < 0.01
