"""explain.attribution: the attributions come from Captum/SHAP unchanged, and the checks on
them catch planted defects (an input-only "explainer", a model that uses `sex` directly)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from checks.explain import explainers as ex
from audit.check import Measurement
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import DataError, SpecError
from checks.explain.attribution import Attribution, AttributionParams
from checks.explain.attribution.agreement import spearman_rows as _spearman_rows


# ---- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def digits_data() -> dict[str, Dataset]:
    from fixtures.datasets import load_fixture_dataset

    return {"train": load_fixture_dataset("digits", "train"), "test": load_fixture_dataset("digits", "test")}


@pytest.fixture(scope="session")
def digits_ctx(digits_data: dict[str, Dataset], digits_cnn: LoadedModel) -> Context:
    return Context.from_objects(digits_data, digits_cnn)


@pytest.fixture(scope="session")
def adult_data() -> dict[str, Dataset]:
    from fixtures.datasets import load_fixture_dataset

    return {"train": load_fixture_dataset("adult", "train"), "test": load_fixture_dataset("adult", "test")}


def _mlp(ds: Dataset, y: np.ndarray, x: np.ndarray, seed: int) -> LoadedModel:
    """A small MLP trained full-batch on (x, y): seconds on a CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 2))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
    return LoadedModel(module=net.eval(), sha256="mlp", source="test", architecture="mlp")


@pytest.fixture(scope="session")
def adult_mlps(adult_data: dict[str, Dataset]) -> dict[str, LoadedModel]:
    """'blind': trained with the sex columns shuffled across rows (no information in them);
    'planted': trained on labels of which half were replaced by sex (it uses sex directly)."""
    train = adult_data["train"]
    rng = np.random.default_rng(0)
    rows = rng.choice(len(train), 8000, replace=False)
    x, y = train.x[rows].copy(), train.y[rows]
    sex = train.feature_groups["sex"]
    male = x[:, train.feature_names.index("sex=Male")] > 0.5
    blind_x = x.copy()
    blind_x[:, sex] = x[rng.permutation(len(x))][:, sex]
    planted_y = np.where(rng.random(len(y)) < 0.5, male.astype(np.int64), y)
    return {"blind": _mlp(train, y, blind_x, 0), "planted": _mlp(train, planted_y, x, 0)}


def run(ctx: Context, check: Attribution | None = None, **params: Any) -> Measurement:
    return (check or Attribution()).run(ctx, AttributionParams(**params))


def tables(m: Measurement) -> dict[str, dict[str, Any]]:
    return {e["title"]: e for e in m.evidence if e["type"] == "table"}


# ---- 1. faithfulness and the randomization sanity test on digits-cnn -----------------------

def test_ig_on_digits_is_faithful_and_depends_on_the_weights(digits_ctx: Context) -> None:
    before = digits_ctx.compute()
    m = run(digits_ctx, method="integrated_gradients", n_samples=32, n_steps=16, randomization_steps=2)
    faith, sim = m.metrics["deletion_faithfulness"], m.metrics["randomization_similarity"]
    assert faith.value > 0 and faith.ci[0] > 0, faith
    assert sim.value < 0.5 and sim.ci[1] < 0.5, sim
    cascade = tables(m)["Model-parameter randomization cascade"]["rows"]
    assert [r[0] for r in cascade] == [1, 2] and cascade[-1][1] == 6  # top layer, then all six
    after = digits_ctx.compute()
    assert after["backward_samples"] - before["backward_samples"] >= 3 * 32 * 16  # trained + 2 cascade steps
    figures = {e["title"]: e["chart"] for e in m.evidence if e["type"] == "chart"}
    assert figures["Deletion curves"] == "line" and figures["Model-parameter randomization cascade"] == "line"
    assert any(t.startswith("Attribution maps") and k == "image_grid" for t, k in figures.items())
    assert not any(e["type"] in ("figure", "flags") for e in m.evidence)


def test_input_only_explainer_is_exposed_by_the_randomization_test(digits_ctx: Context) -> None:
    def input_only(model: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: Any, setup: Any) -> torch.Tensor:
        return x.clone()  # an edge-detector-like map: the same whatever the model

    m = run(digits_ctx, Attribution(explainer=input_only), n_samples=32, randomization_steps=2)
    assert m.metrics["randomization_similarity"].value > 0.99


def test_random_explainer_is_not_faithful(digits_ctx: Context) -> None:
    def noise(model: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: Any, setup: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(x.sum() * 1000) % 2**31)
        return torch.rand(x.shape, generator=g)

    m = run(digits_ctx, Attribution(explainer=noise), n_samples=32, randomization=False)
    assert abs(m.metrics["deletion_faithfulness"].value) < 0.1
    assert "randomization_similarity" not in m.metrics


# ---- 3. our IG is Captum's; completeness ---------------------------------------------------

def test_ig_equals_captum_and_is_complete(digits_ctx: Context, digits_data: dict[str, Dataset]) -> None:
    from captum.attr import IntegratedGradients

    seen: dict[str, list[np.ndarray]] = {"x": [], "t": [], "b": [], "a": []}

    def recording_ig(model: nn.Module, x: torch.Tensor, t: torch.Tensor, b: Any, setup: ex.ExplainSetup) -> torch.Tensor:
        a = ex.integrated_gradients(model, x, t, b, setup)
        for k, v in zip("xtba", (x, t, b, a)):
            seen[k].append(v.detach().cpu().numpy())
        return a

    steps = 128
    run(digits_ctx, Attribution(explainer=recording_ig), n_samples=16, target="true", baseline="mean",
        n_steps=steps, batch_size=5, randomization=False)
    # 16 samples in chunks of 5 (later calls explain extra misclassified samples for the figure)
    assert [len(v) for v in seen["x"][:4]] == [5, 5, 5, 1]
    x, t, b, a = (np.concatenate(seen[k][:4]) for k in "xtba")
    test, train = digits_data["test"], digits_data["train"]
    idx = [int(np.flatnonzero((test.x == xi).all(axis=(1, 2, 3)))[0]) for xi in x]
    np.testing.assert_array_equal(t, test.y[idx])  # target="true" reaches Captum
    np.testing.assert_allclose(b, np.broadcast_to(train.x.mean(axis=0), x.shape), atol=1e-6)  # train mean
    module = digits_ctx.model.module
    ref = IntegratedGradients(module).attribute(torch.from_numpy(x), baselines=torch.from_numpy(b),
                                                target=torch.from_numpy(t), n_steps=steps)
    np.testing.assert_allclose(a, ref.numpy(), rtol=1e-4, atol=1e-6)
    # Completeness: sum of attributions = f(x)_t - f(baseline)_t, within 1%.
    with torch.no_grad():
        rows = np.arange(len(t))
        diff = module(torch.from_numpy(x))[rows, t] - module(torch.from_numpy(b))[rows, t]
    gap = np.abs(a.reshape(len(a), -1).sum(axis=1) - diff.numpy())
    assert (gap <= 0.01 * np.abs(diff.numpy())).all(), (gap / np.abs(diff.numpy())).max()


def test_predicted_target_and_completeness_note(digits_ctx: Context) -> None:
    m = run(digits_ctx, method="integrated_gradients", n_samples=8, n_steps=64, randomization=False)
    note = next(e["text"] for e in m.evidence if e["type"] == "text" and e["title"] == "Notes")
    assert "completeness" in note
    assert m.flags == [] and not any(e["type"] == "flags" for e in m.evidence)
    bad = run(digits_ctx, method="integrated_gradients", n_samples=8, n_steps=2, randomization=False)
    assert any(f.flag == "ig_not_converged" for f in bad.flags)
    assert "raise n_steps" in next(f.detail for f in bad.flags if f.flag == "ig_not_converged")


# ---- 2. Adult: method agreement on the reference model; sensitive share --------------------

def test_shap_permutation_agrees_with_ig_on_the_adult_transformer(
        adult_data: dict[str, Dataset], adult_transformer: LoadedModel) -> None:
    test = adult_data["test"]
    rows = slice(0, 2000)  # predictions for the first 2,000 test rows are enough to sample from
    small = dataclasses.replace(test, x=test.x[rows], y=test.y[rows], _sha256=None,
                                sensitive={k: v[rows] for k, v in test.sensitive.items()})
    ctx = Context.from_objects({"train": adult_data["train"], "test": small}, adult_transformer)
    n_cols = test.x.shape[1]
    m = run(ctx, method="shap_permutation", compare_with="integrated_gradients", n_samples=8,
            n_background=4, n_evals=2 * (2 * n_cols + 1), randomization=False)
    agree = m.metrics["method_agreement"]
    assert agree.value > 0.7 and agree.ci[0] > 0.3, agree
    assert m.metrics["deletion_faithfulness"].value > 0
    assert "Global importance: shap_permutation vs integrated_gradients" in tables(m)


def test_planted_sex_model_has_a_higher_sensitive_share(adult_data: dict[str, Dataset],
                                                       adult_mlps: dict[str, LoadedModel]) -> None:
    shares = {}
    for name, model in adult_mlps.items():
        ctx = Context.from_objects(adult_data, model)
        m = run(ctx, method="integrated_gradients", n_samples=64, n_steps=16, sensitive=["sex"],
                randomization=False)
        shares[name] = m.metrics["sensitive_attribution_share"]
    blind, planted = shares["blind"], shares["planted"]
    assert planted.ci[0] > blind.ci[1], shares
    assert planted.value > 3 * blind.value and planted.value > 0.2, shares


# ---- wiring of every method ----------------------------------------------------------------

def _setup(ds: Dataset, kind: str, device: torch.device) -> ex.ExplainSetup:
    """What the check builds: background rows and the k-means summary from `ds`."""
    return ex.ExplainSetup(kind=kind, n_steps=8, n_evals=300, internal_batch_size=256,
                           background=torch.tensor(ds.x[:8], device=device),
                           kmeans=ex.kmeans_background(ds.x[:200], 4, seed=0), seed=0)


@pytest.fixture(scope="module")
def linear_ctx() -> Context:
    """A single-logit linear model on standard-normal features: weight 4 on 'a', 0 on 'b',
    0.5 on 'c'. Every method must rank a > c > b (and b's attributions vanish)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    net = nn.Linear(3, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[4.0, 0.0, 0.5]]))
        net.bias.zero_()
    ds = Dataset("test", x, (x[:, 0] > 0).astype(np.int64), "tabular", ["neg", "pos"],
                 feature_names=["a", "b", "c"])
    return Context.from_objects({"test": ds}, LoadedModel(net, "lin", "test", "linear"))


@pytest.mark.parametrize("method", ex.METHOD_NAMES)
def test_every_method_is_wired(method: str, digits_ctx: Context, linear_ctx: Context) -> None:
    fn = ex.METHODS[method]
    # Images: shape, finiteness, targets per sample, passes counted into the context.
    ds = digits_ctx.dataset("test")
    x, t = ds.x[:4], np.array([0, 3, 3, 7])
    before = digits_ctx.compute()
    a = ex.explain(fn, ex.TwoClassLogits(digits_ctx.counting()), x, t, np.zeros_like(x),
                   _setup(digits_ctx.dataset("train"), "image", digits_ctx.device),
                   device=digits_ctx.device, chunk=3)
    after = digits_ctx.compute()
    assert a.shape == x.shape and np.isfinite(a).all() and np.abs(a).sum() > 0
    assert after["forward_samples"] > before["forward_samples"]
    if method not in ex.MODEL_AGNOSTIC and method != "occlusion":
        assert after["backward_samples"] > before["backward_samples"]
    if method in ("gradient_shap", "shap_gradient", "shap_kernel", "shap_permutation"):  # seeded
        again = ex.explain(fn, ex.TwoClassLogits(digits_ctx.model.module), x, t, np.zeros_like(x),
                           _setup(digits_ctx.dataset("train"), "image", digits_ctx.device),
                           device=digits_ctx.device, chunk=3)
        np.testing.assert_array_equal(a, again)
    # A linear model (single logit, explained as class 1): the importance ranking is known.
    lin = linear_ctx.dataset("test")
    xl = lin.x[:40]
    al = ex.explain(fn, ex.TwoClassLogits(linear_ctx.counting()), xl, np.ones(40, dtype=np.int64),
                    np.zeros_like(xl), _setup(lin, "tabular", linear_ctx.device), device=linear_ctx.device, chunk=16)
    imp = np.abs(al).mean(axis=0)
    assert imp[0] > imp[2] > imp[1], imp
    assert imp[1] < 1e-3 * imp[0], imp


def test_shap_deep_equals_captum_deeplift_with_one_reference(adult_data: dict[str, Dataset],
                                                            adult_mlps: dict[str, LoadedModel]) -> None:
    """Two libraries, one algorithm (DeepLIFT rescale on a ReLU MLP): the same numbers."""
    x = torch.from_numpy(adult_data["test"].x[:20])
    t = torch.tensor([0, 1] * 10)
    ref = torch.from_numpy(adult_data["train"].x[:1])
    model = ex.TwoClassLogits(adult_mlps["blind"].module)
    setup = ex.ExplainSetup(kind="tabular", background=ref)
    captum = ex.deeplift(model, x, t, ref.expand_as(x), setup)
    state_before = set(adult_mlps["blind"].module.state_dict())
    shap_ = ex.shap_deep(model, x, t, None, setup)
    np.testing.assert_allclose(shap_, captum.detach().numpy(), rtol=1e-4, atol=1e-5)
    # SHAP's hooks must leave no x/y parameters behind on the audited model
    assert set(adult_mlps["blind"].module.state_dict()) == state_before


@pytest.mark.parametrize("method", ex.MODEL_AGNOSTIC)
def test_model_agnostic_shap_values_add_up_for_each_target(method: str, adult_data: dict[str, Dataset],
                                                           adult_mlps: dict[str, LoadedModel]) -> None:
    """SHAP's efficiency property, per explained class: the values of sample i sum to
    f_t(x_i) - E_background[f_t] (the k-means background; Kernel weights its centroids,
    the Independent masker of Permutation averages them). Guards the per-target wiring."""
    module = adult_mlps["planted"].module
    x = adult_data["test"].x[:6]
    t = np.array([0, 1, 1, 0, 1, 0])
    setup = ex.ExplainSetup(kind="tabular", n_evals=2 * (2 * x.shape[1] + 1), seed=0,
                            kmeans=ex.kmeans_background(adult_data["train"].x, 5, seed=0))
    a = ex.explain(ex.METHODS[method], ex.TwoClassLogits(module), x, t, None, setup,
                   device=torch.device("cpu"), chunk=4)
    with torch.no_grad():
        fx = module(torch.from_numpy(x)).double().numpy()[np.arange(6), t]
        fb = module(torch.tensor(setup.kmeans.data, dtype=torch.float32)).double().numpy()
    w = setup.kmeans.weights / setup.kmeans.weights.sum() if method == "shap_kernel" else np.full(len(fb), 1 / len(fb))
    np.testing.assert_allclose(a.sum(axis=1), fx - (w @ fb)[t], rtol=1e-4, atol=1e-4)


def test_binary_single_logit_model_is_explained_as_two_classes(linear_ctx: Context) -> None:
    m = run(linear_ctx, method="integrated_gradients", n_samples=50, n_steps=8, compare_with="saliency")
    # A linear model: IG = w * x, so 'a' dominates and the deletion order beats random.
    assert m.metrics["deletion_faithfulness"].ci[0] > 0
    rows = tables(m)["Global importance: integrated_gradients vs saliency"]["rows"]
    assert rows[0][0] == "a" and rows[0][2] == 1 and rows[0][4] == 1
    assert m.metrics["randomization_similarity"].value < 0.9


# ---- parameters and input errors -----------------------------------------------------------

def test_spec_errors() -> None:
    from audit.spec import parse_spec

    def spec(**entry: Any) -> None:
        parse_spec({"name": "x", "model": {"fixture": "digits-cnn"}, "data": {"test": {"fixture": "digits"}},
                    "checks": [{"id": "e", "check": "explain.attribution", **entry}]})

    spec(method="shap_kernel", compare_with="integrated_gradients")
    with pytest.raises(SpecError, match="compare_with names the same method"):
        spec(method="saliency", compare_with="saliency")
    with pytest.raises(SpecError, match="method"):
        spec(method="lime")
    with pytest.raises(SpecError, match="unknown parameter 'n_step'"):
        spec(n_step=10)


def test_preflight_errors(digits_ctx: Context, adult_data: dict[str, Dataset],
                          adult_mlps: dict[str, LoadedModel]) -> None:
    with pytest.raises(DataError, match="'sensitive' needs tabular data"):
        Attribution.preflight(digits_ctx, AttributionParams(sensitive=["sex"]))
    with pytest.raises(DataError, match="target 12 is not a class"):
        Attribution.preflight(digits_ctx, AttributionParams(target=12))
    tab = Context.from_objects({"test": adult_data["test"]}, adult_mlps["blind"])
    with pytest.raises(DataError, match="baseline 'blurred' needs image data"):
        Attribution.preflight(tab, AttributionParams(baseline="blurred"))
    with pytest.raises(DataError, match="'gender' is neither"):
        Attribution.preflight(tab, AttributionParams(sensitive=["gender"]))
    with pytest.raises(DataError, match="shap_permutation needs at least 217"):
        Attribution.preflight(tab, AttributionParams(method="shap_permutation", n_evals=200))
    Attribution.preflight(tab, AttributionParams(sensitive=["sex", "race"]))
    assert AttributionParams(sensitive="sex").sensitive == ["sex"]


def test_spearman_rows_matches_scipy() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    b[0] = a[0] * 2 + 1
    b[1, :10] = 0.0  # ties
    got = _spearman_rows(a, b)
    want = [spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(_spearman_rows(a[:1], np.zeros((1, 30))))[0]


def test_runs_from_a_spec(tmp_path: Any) -> None:
    from audit.runner import run_audit
    from audit.spec import parse_spec

    spec = parse_spec({
        "name": "explain", "seed": 0, "model": {"fixture": "digits-cnn"},
        "data": {"train": {"fixture": "digits", "split": "train"}, "test": {"fixture": "digits", "split": "test"}},
        "checks": [{"id": "ig", "check": "explain.attribution", "n_samples": 16, "n_steps": 16,
                    "randomization_steps": 1, "baseline": "blurred",
                    "thresholds": {"deletion_faithfulness": {"min": 0.0},
                                   "randomization_similarity": {"max": 0.5}}}]})
    results = run_audit(spec)
    check = results.checks[0]
    assert check.status == "pass", check.message
    assert check.area == "explainability"
    out = results.to_json()
    json.dumps(out, allow_nan=False)  # evidence is plain JSON
    assert results.provenance["compute"]["backward_samples"] >= 2 * 16 * 16
    assert out["checks"][0]["flags"] == []
    assert {e["type"] for e in out["checks"][0]["evidence"]} <= {"chart", "table", "text"}
    assert out["checks"][0]["metric_info"]["randomization_similarity"]["higher_is_better"] is False


# ---- the check contract: declaration, chart evidence, counted passes -----------------------

def test_declaration_and_registry() -> None:
    from audit.check import MetricSpec
    from audit.registry import registry, scan

    assert scan("checks")["explain.attribution"] == "checks.explain.attribution.check:Attribution"
    assert registry.get("explain.attribution") is Attribution
    assert Attribution.area == "explainability"
    specs = Attribution.metrics
    assert set(specs) == {"deletion_faithfulness", "randomization_similarity", "sensitive_attribution_share",
                          "method_agreement"}
    # means of per-sample values, none a share of samples: no proportion intervals
    assert all(isinstance(v, MetricSpec) and v.description and not v.proportion for v in specs.values())
    assert [specs[k].higher_is_better for k in specs] == [True, False, False, True]
    assert specs["sensitive_attribution_share"].bounds == (0.0, 1.0)
    assert specs["randomization_similarity"].bounds == specs["method_agreement"].bounds == (-1.0, 1.0)


def test_the_check_never_imports_reports() -> None:
    """Layering: checks hand the report chart data and never import `reports`, not even
    lazily inside a function (as the SVG-drawing version did)."""
    import ast
    from pathlib import Path

    import checks.explain

    root = Path(checks.explain.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "reports" or n.startswith("reports.") for n in names), (path, names)


RENDERERS = {"line": ("reports.plots", "line_chart_svg"), "image_grid": ("reports.plots", "image_grid_svg"),
             "importance_bars": ("reports.plots_explain", "importance_bars_svg"),
             "beeswarm": ("reports.plots_explain", "beeswarm_svg")}


def _render(ev: dict[str, Any]) -> str:
    import importlib

    module, fn = RENDERERS[ev["chart"]]
    data = dict(ev["data"])
    if ev["chart"] == "beeswarm":
        # beeswarm_svg indexes `values[:, j]` without np.asarray: the report's chart layer
        # must hand it arrays (JSON gives nested lists; null -> NaN).
        data["values"] = np.array(data["values"], dtype=np.float64)
    return getattr(importlib.import_module(module), fn)(**data)


def test_chart_evidence_is_renderer_kwargs(digits_ctx: Context, linear_ctx: Context) -> None:
    image = run(digits_ctx, method="integrated_gradients", n_samples=8, n_steps=8, randomization_steps=1)
    tab = run(linear_ctx, method="saliency", n_samples=20, randomization_steps=1)
    seen = {}
    for m in (image, tab):
        evidence = json.loads(json.dumps(m.evidence, allow_nan=False))  # as results.json holds it
        for ev in evidence:
            if ev["type"] == "chart":
                seen[ev["chart"]] = ev
                assert "<svg" in _render(ev), ev["title"]
    assert set(seen) == set(RENDERERS)
    grid = seen["image_grid"]["data"]
    assert len(grid["images"]) == len(grid["overlays"]) == len(grid["titles"])
    assert np.shape(grid["images"][0]) == digits_ctx.dataset("test").x.shape[1:]
    assert np.shape(grid["overlays"][0]) == digits_ctx.dataset("test").x.shape[2:]
    series = seen["line"]["data"]["series"]
    assert all(len(v) == 4 and len(v[0]) == len(v[1]) for v in series.values())  # [x, y, lo, hi]
    # floats are rounded for results.json: 4 significant digits
    values = [v for v in np.ravel(grid["overlays"]) if v]
    assert all(float(f"{v:.4g}") == v for v in values)


def test_every_pass_is_counted_in_the_cost_table(digits_data: dict[str, Dataset], digits_cnn: LoadedModel) -> None:
    # a fresh context: the shared one has already run these deletion inputs in earlier tests
    ctx = Context.from_objects(digits_data, digits_cnn)
    ctx.probabilities("test")  # the shared cached pass, outside the check
    with ctx.measure() as passes:
        m = run(ctx, method="integrated_gradients", n_samples=8, n_steps=8, randomization_steps=1)
    cost = {r[0]: r[3:] for r in tables(m)["Attribution cost"]["rows"]}
    assert cost["total"] == [passes["forward_samples"], passes["backward_samples"]]
    assert cost["attribution: integrated_gradients"] == [8 * 8, 8 * 8]
    # 16 steps x (attribution + 2 random orders), less the last step (every unit removed is the baseline),
    # less the rows equal to an input already run (removing a patch that already equals the baseline)
    assert 0 < cost["deletion curves"][0] <= 8 * 15 * 3 and cost["deletion curves"][1] == 0
    assert cost["baseline outputs"] == [1, 0]                         # one zero baseline for every sample
    assert cost["randomization cascade"] == [8 * 8, 8 * 8]            # the randomised copy, via ctx.counting
    assert cost["completeness check"] == [0, 0]                      # cached f(x) and the baseline's f(b)
    # the same check again on the same context: every deletion input has been run once already
    m = run(ctx, method="integrated_gradients", n_samples=8, n_steps=8, randomization_steps=1)
    assert {r[0]: r[3:] for r in tables(m)["Attribution cost"]["rows"]}["deletion curves"] == [0, 0]
