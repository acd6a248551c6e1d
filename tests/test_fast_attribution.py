"""The batched torch paths of explain.attribution held equal to the libraries they replace,
on the same inputs: integrated gradients to Captum's IntegratedGradients (same targets,
baselines, steps) and expected gradients to SHAP's GradientExplainer (same background, draws
and seed), rtol 1e-4; and the pass counts of the fast paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from checks.explain import explainers as ex
from checks.explain.attribution import Attribution, AttributionParams


def _close(fast: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> None:
    fast = fast.detach().numpy() if isinstance(fast, torch.Tensor) else np.asarray(fast)
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert fast.shape == ref.shape
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max()))


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _mlp(out: int = 3, features: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return _frozen(nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, out)))


def _cnn(channels: int = 1, classes: int = 4, side: int = 8) -> nn.Module:
    torch.manual_seed(1)
    return _frozen(nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * side * side, classes)))


def _setup(n_steps: int, background: torch.Tensor | None = None, batch: int = 64, seed: int = 7) -> ex.ExplainSetup:
    return ex.ExplainSetup(kind="tabular", n_steps=n_steps, internal_batch_size=batch, background=background,
                           seed=seed)


@pytest.mark.parametrize("baseline", ["none", "zeros", "mean", "random"])
@pytest.mark.parametrize("n_steps", [2, 50])
def test_integrated_gradients_equals_captum_on_a_tabular_model(baseline: str, n_steps: int) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(37, 6, generator=g)
    target = torch.randint(0, 3, (37,), generator=g)
    b = {"none": None, "zeros": torch.zeros_like(x), "mean": x.mean(0, keepdim=True).expand_as(x).clone(),
         "random": torch.randn(37, 6, generator=g)}[baseline]
    model = ex.TwoClassLogits(_mlp())
    ref = ex.integrated_gradients(model, x.clone().requires_grad_(True), target, b, _setup(n_steps))
    _close(ex.integrated_gradients_fast(model, x, target, b, _setup(n_steps)), ref)


def test_integrated_gradients_equals_captum_for_a_single_logit_model() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, 6, generator=g)
    target = torch.randint(0, 2, (20,), generator=g)
    model = ex.TwoClassLogits(_mlp(out=1))  # (N, 1) logits explained as two classes
    ref = ex.integrated_gradients(model, x.clone().requires_grad_(True), target, None, _setup(32))
    _close(ex.integrated_gradients_fast(model, x, target, None, _setup(32)), ref)


def test_integrated_gradients_equals_captum_on_images_with_steps_split_across_passes() -> None:
    """3x64x64 inputs: a pass holds fewer rows than one sample's steps, so a sample's
    steps are split over several passes."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 64, 64, generator=g)
    target = torch.tensor([0, 3, 1])
    model = _cnn(channels=3, side=64)
    setup = _setup(32, batch=4)
    assert ex.rows_per_pass(setup, x) < 32
    ref = ex.integrated_gradients(model, x.clone().requires_grad_(True), target, torch.full_like(x, 0.5), setup)
    _close(ex.integrated_gradients_fast(model, x, target, torch.full_like(x, 0.5), setup), ref)


@pytest.mark.parametrize("n_background", [1, 3, 20, 37])
def test_legacy_draws_are_shaps_draws(n_background: int) -> None:
    rind, t = ex.legacy_shap_draws(1234, 500, n_background)
    np.random.seed(1234)  # what GradientExplainer.shap_values does with rseed
    for i in range(500):
        assert rind[i] == np.random.choice(n_background)
        assert t[i] == np.random.uniform()


@pytest.mark.parametrize("kind", ["tabular", "image"])
def test_expected_gradients_equal_shap_gradient_explainer(kind: str) -> None:
    """Samples of several target classes (SHAP re-seeds per class), 13 background rows,
    16 draws each: the batched path gives SHAP's attributions."""
    g = torch.Generator().manual_seed(6)
    if kind == "tabular":
        model, x, bg = _mlp(), torch.randn(25, 6, generator=g), torch.randn(13, 6, generator=g)
    else:
        model, x, bg = _cnn(), torch.rand(25, 1, 8, 8, generator=g), torch.rand(13, 1, 8, 8, generator=g)
    target = torch.randint(0, 3, (25,), generator=g)
    setup = _setup(16, background=bg, seed=2024)
    ref = ex.shap_gradient(ex.TwoClassLogits(model), x, target, None, setup)
    _close(ex.shap_gradient_fast(ex.TwoClassLogits(model), x, target, None, setup), ref)


def test_fast_paths_equal_the_libraries_through_explain_chunks() -> None:
    """Chunked as the check chunks (SHAP re-seeds per chunk and class): equal outputs."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(50, 6, generator=g).numpy()
    target = torch.randint(0, 3, (50,), generator=g).numpy()
    model = ex.TwoClassLogits(_mlp())
    setup = _setup(12, background=torch.randn(9, 6, generator=g))
    for name in ("integrated_gradients", "shap_gradient"):
        fast = ex.explain(ex.method(name, "fast"), model, x, target, None, setup, device=torch.device("cpu"),
                          chunk=16)
        lib = ex.explain(ex.method(name, "library"), model, x, target, None, setup, device=torch.device("cpu"),
                         chunk=16)
        _close(fast, lib)
    assert ex.method("integrated_gradients", "library") is ex.integrated_gradients
    assert ex.method("saliency", "fast") is ex.saliency  # no fast path: the library's


def _tabular_ctx() -> Context:
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 6)) + y[:, None]).astype(np.float32)
    ds = Dataset("test", x, y, "tabular", ["a", "b", "c"], feature_names=[f"f{i}" for i in range(6)],
                 feature_groups={f"f{i}": [i] for i in range(6)})
    return Context.from_objects({"test": ds}, LoadedModel(_mlp(), "0" * 64, "test", "mlp"))


@pytest.mark.parametrize("method", ["integrated_gradients", "shap_gradient"])
def test_the_check_gives_the_same_metrics_with_either_implementation(method: str) -> None:
    ctx = _tabular_ctx()
    kw = {"method": method, "n_samples": 24, "n_steps": 16, "randomization_steps": 2}
    fast = Attribution().run(ctx, AttributionParams(**kw))
    lib = Attribution().run(ctx, AttributionParams(**kw, implementation="library"))
    assert set(fast.metrics) == set(lib.metrics)
    for name, m in fast.metrics.items():
        assert m.value == pytest.approx(lib.metrics[name].value, rel=1e-4, abs=1e-6), name


def test_the_fast_paths_count_their_passes() -> None:
    """n samples x steps rows forward and backward through the counting wrapper: the floor."""
    ctx = _tabular_ctx()
    x = ctx.dataset("test").x[:30]
    t = np.zeros(30, np.int64)
    setup = _setup(10, background=torch.as_tensor(ctx.dataset("test").x[:5]))
    for name in ("integrated_gradients", "shap_gradient"):
        with ctx.measure() as m:
            ex.explain(ex.FAST[name], ex.TwoClassLogits(ctx.counting()), x, t, None, setup,
                       device=ctx.device, chunk=64)
        assert m == {"forward_samples": 300, "backward_samples": 300}, (name, m)
