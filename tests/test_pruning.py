"""efficiency.pruning: the sweep on the digits CNN, the pruning itself against a global
magnitude threshold, and the headline rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import SkipCheck
from checks.efficiency.pruning import (Pruning, PruningParams, prunable, pruned_copy, sweep_draws,
                                       within_tolerance)


@pytest.fixture(scope="module")
def digits_test() -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    return load_fixture_dataset("digits", "test")


def test_sweep_on_the_digits_cnn(digits_cnn: LoadedModel, digits_test: Dataset) -> None:
    ctx = Context.from_objects({"test": digits_test}, digits_cnn)
    dense = ctx.predictions("test")
    before = ctx.forward_samples
    params = PruningParams(structured=True)
    m = Pruning().run(ctx, params)
    n, levels = len(digits_test), len(params.sparsities)
    assert ctx.forward_samples - before == 2 * levels * n  # one pass per pruned copy, dense predictions cached
    np.testing.assert_array_equal(ctx.predictions("test"), dense)  # the audited model is untouched

    tab = next(e for e in m.evidence if e["type"] == "table")
    rows = tab["rows"]
    assert [r[0] for r in rows] == [f"{s:.0%}" for s in params.sparsities]
    for r, s in zip(rows, params.sparsities):
        assert r[1] == pytest.approx(s, abs=1e-3)  # the share of zero weights is the sparsity asked for
        lo, hi = r[2]["ci"]
        assert lo <= r[2]["value"] <= hi
    # the headline is the largest level whose drop's upper bound is within the tolerance
    within = [s for r, s in zip(rows, params.sparsities) if r[3]["ci"][1] <= params.tolerance]
    head = m.metrics["max_sparsity_within_tolerance"]
    assert head.value == max(within, default=0.0)
    assert head.ci[0] <= head.value <= head.ci[1]
    assert 0.2 <= head.value <= 0.8  # the CNN keeps its accuracy at moderate sparsity, not at 90%
    assert rows[-1][2]["value"] < 0.5  # 90% sparsity breaks it
    curve = next(e for e in m.evidence if e["type"] == "chart")
    assert curve["chart"] == "line" and set(curve["data"]["series"]) == {"global unstructured L1",
                                                                         "L1 channel pruning"}
    assert curve["data"]["mark_x"] == head.value


def test_global_unstructured_pruning_zeroes_the_smallest_weights_across_layers(digits_cnn: LoadedModel) -> None:
    module = digits_cnn.module
    twin, zero = pruned_copy(module, 0.3)
    weights = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in prunable(module)])
    threshold = torch.kthvalue(weights, int(round(0.3 * weights.numel()))).values
    for (m0, name), (m1, _) in zip(prunable(module), prunable(twin)):
        w0, w1 = getattr(m0, name).detach(), getattr(m1, name).detach()
        assert torch.equal(w1 == 0, w0.abs() <= threshold)  # one global magnitude cut
        assert torch.equal(w1[w1 != 0], w0[w1 != 0])  # the rest untouched
        assert not hasattr(m1, f"{name}_mask")  # made permanent: a plain module again
    assert zero == pytest.approx(0.3, abs=1e-3)
    assert any(isinstance(m, nn.Conv2d) for m, _ in prunable(module))


def test_headline_rule_and_joint_draws() -> None:
    levels = np.array([0.1, 0.5, 0.9])
    assert within_tolerance(np.array([0.0, 0.005, 0.2]), levels, 0.01) == 0.5
    assert within_tolerance(np.array([0.02, 0.005, 0.2]), levels, 0.01) == 0.5  # largest, as specified
    assert within_tolerance(np.array([0.02, 0.03, 0.2]), levels, 0.01) == 0.0
    rng = np.random.default_rng(0)
    dense = rng.random(400) < 0.9
    pruned = np.stack([dense & (rng.random(400) < p) for p in (1.0, 0.95, 0.5)], axis=1)
    draws = sweep_draws(np.c_[dense, pruned], 4000, np.random.default_rng(1))
    assert draws.shape == (4000, 3)
    observed = dense.mean() - pruned.mean(axis=0)
    np.testing.assert_allclose(draws.mean(axis=0), observed, atol=0.01)
    assert draws[:, 0].std() < draws[:, 2].std()  # identical predictions leave little to resample


def test_a_torchscript_model_is_skipped(digits_test: Dataset) -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    model = LoadedModel(module=scripted, sha256="0" * 64, source="test", architecture="scripted")
    ctx = Context.from_objects({"test": digits_test}, model)
    with pytest.raises(SkipCheck, match="TorchScript"):
        Pruning().run(ctx, PruningParams())


def test_params_validate() -> None:
    assert PruningParams(sparsities=[0.5, 0.1, 0.5]).sparsities == [0.1, 0.5]
    for bad in ([0.0], [1.0], []):
        with pytest.raises(ValueError):
            PruningParams(sparsities=bad)
