"""performance.calibration: ECE/MCE against a plain per-sample reference and sklearn's
calibration_curve bins; Brier against sklearn's brier_score_loss; planted miscalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from checks.performance.calibration import Calibration


class FixedLogits(torch.nn.Module):
    """Returns row i of a fixed logit table for input row [i]: the test controls the
    probabilities exactly while the check still goes through the context's cache."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def ctx_for(logits: np.ndarray, y: np.ndarray) -> Context:
    n = len(y)
    k = max(2, logits.shape[1])
    x = np.arange(n, dtype=np.float32)[:, None]
    ds = Dataset("test", x, y.astype(np.int64), "tabular", [str(c) for c in range(k)])
    return Context.from_objects({"test": ds}, LoadedModel(FixedLogits(logits), "0" * 64, "test", "table"))


def simulated(n: int, k: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); logits returned are z * temperature (1 = calibrated,
    >1 = over-confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, k))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return (z * temperature).astype(np.float32), np.minimum(y, k - 1)


def reference_ece_mce(proba: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Textbook per-bin loop (Guo et al. 2017), bins (lo, hi]."""
    conf = proba.max(1)
    correct = proba.argmax(1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    ece, mce = 0.0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - conf[in_bin].mean())
            ece += in_bin.mean() * gap
            mce = max(mce, gap)
    return ece, mce


@pytest.mark.parametrize("k,temperature", [(4, 1.0), (4, 3.0), (2, 2.0)])
def test_metrics_match_references(k: int, temperature: float) -> None:
    logits, y = simulated(800, k, temperature, seed=k)
    ctx = ctx_for(logits, y)
    m = Calibration().run(ctx, Calibration.Params(weight_resamples=300))
    proba = ctx.probabilities("test")
    ece, mce = reference_ece_mce(proba, y, 15)
    assert m.metrics["ece"].value == pytest.approx(ece, abs=1e-12)
    assert m.metrics["mce"].value == pytest.approx(mce, abs=1e-12)
    # multiclass Brier, range [0, 2]: sklearn's scale_by_half=False; binary = 2x the customary score
    brier = m.metrics["brier"].value
    assert brier == pytest.approx(brier_score_loss(y, proba, labels=np.arange(k), scale_by_half=False), abs=1e-12)
    if k == 2:
        assert brier == pytest.approx(2 * brier_score_loss(y, proba[:, 1]), abs=1e-12)
    for metric in m.metrics.values():
        assert metric.ci[0] <= metric.value <= metric.ci[1] or metric is m.metrics["ece"]
        assert metric.ci[0] < metric.ci[1]


def test_bins_match_sklearn_calibration_curve() -> None:
    logits, y = simulated(600, 3, 2.0, seed=1)
    ctx = ctx_for(logits, y)
    m = Calibration().run(ctx, Calibration.Params(n_bins=10, weight_resamples=200))
    proba = ctx.probabilities("test")
    correct = (proba.argmax(1) == y).astype(int)
    prob_true, prob_pred = calibration_curve(correct, proba.max(1), n_bins=10, strategy="uniform")
    bins = next(e for e in m.evidence if e["type"] == "table")
    assert len(bins["rows"]) == 10
    nonempty = [r for r in bins["rows"] if r[1] > 0]
    assert sum(r[1] for r in bins["rows"]) == len(y)
    np.testing.assert_allclose([r[2] for r in nonempty], prob_pred, atol=1e-12)
    np.testing.assert_allclose([r[3] for r in nonempty], prob_true, atol=1e-12)
    assert any(e["type"] == "chart" and e["chart"] == "reliability_diagram" for e in m.evidence)


def test_planted_overconfidence_is_caught() -> None:
    """Same labels, calibrated logits vs logits x 4: ECE rises well above its CI."""
    logits, y = simulated(1500, 5, 1.0, seed=9)
    calibrated = Calibration().run(ctx_for(logits, y), Calibration.Params(weight_resamples=300))
    hot = Calibration().run(ctx_for(logits * 4, y), Calibration.Params(weight_resamples=300))
    assert calibrated.metrics["ece"].value < 0.06
    assert hot.metrics["ece"].ci[0] > calibrated.metrics["ece"].ci[1]
    assert hot.metrics["ece"].value > 0.15
    assert hot.metrics["brier"].value > calibrated.metrics["brier"].value


def test_single_logit_binary_model() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(scale=2.0, size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z))).astype(np.int64)
    ctx = ctx_for(z[:, None].astype(np.float32), y)
    m = Calibration().run(ctx, Calibration.Params(weight_resamples=200))
    p1 = 1 / (1 + np.exp(-z.astype(np.float32).astype(np.float64)))
    assert m.metrics["brier"].value == pytest.approx(2 * brier_score_loss(y, p1), abs=1e-9)
    ece, _ = reference_ece_mce(np.stack([1 - p1, p1], 1), y, 15)
    assert m.metrics["ece"].value == pytest.approx(ece, abs=1e-9)
