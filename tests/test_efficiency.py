"""Deployment checks: efficiency.latency and efficiency.quantization on the reference models."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from torch import nn

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import SkipCheck
from audit.stats import percentile_ci
from checks.efficiency.latency import Latency, rounds_quantile
from checks.efficiency.quantization import Quantization, int8_inference, quantizable_linears, quantize


@pytest.fixture(scope="module")
def digits_test() -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    return load_fixture_dataset("digits", "test")


@pytest.fixture(scope="module")
def adult_test() -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("adult", "test")
    return dataclasses.replace(ds, x=ds.x[:3000], y=ds.y[:3000], sensitive={}, _sha256=None)


def _rows(m) -> dict:
    tab = next(e for e in m.evidence if e["type"] == "table")
    return {row[0]: row for row in tab["rows"]}


def test_latency_reports_p95_for_batch_sizes_1_and_64(digits_cnn: LoadedModel, digits_test: Dataset) -> None:
    ctx = Context.from_objects({"test": digits_test}, digits_cnn)
    m = Latency().run(ctx, Latency.Params(repeats=10, rounds=3, warmup=2, pause_s=0.0))
    rows = _rows(m)
    assert sorted(rows) == [1, 64]
    for bs in (1, 64):
        p50, p95 = rows[bs][1], rows[bs][2]
        assert 0 < p50["value"] <= p95["value"]
        assert p95["ci"][0] <= p95["value"] <= p95["ci"][1]
    # the headline metrics are batch size 1's; throughput is batch size 64's
    assert m.metrics["p95_ms"].value == pytest.approx(rows[1][2]["value"], abs=1e-4)
    assert m.metrics["p50_ms"].value == pytest.approx(rows[1][1]["value"], abs=1e-4)
    assert m.metrics["throughput"].value == pytest.approx(64_000 / rows[64][1]["value"], rel=1e-3)
    lo, hi = m.metrics["throughput"].ci
    assert lo <= m.metrics["throughput"].value <= hi
    assert m.metrics["params"].value == sum(p.numel() for p in digits_cnn.module.parameters())
    # size on disk: float32 weights plus the safetensors header
    n_floats = sum(v.numel() for v in digits_cnn.module.state_dict().values() if v.dtype == torch.float32)
    assert 4 * n_floats / 1e6 < m.metrics["size_mb"].value < 4 * n_floats / 1e6 + 0.01
    assert ctx.forward_samples == (1 + 64) * (10 + 2) * 3  # warm-up and timed calls of 3 rounds are counted
    assert any(e["type"] == "chart" and e["chart"] == "bar" for e in m.evidence)


def test_latency_params_validate() -> None:
    p = Latency.Params(batch_sizes=[64, 1, 64])
    assert p.batch_sizes == [1, 64]
    with pytest.raises(ValueError):
        Latency.Params(batch_sizes=[0])
    with pytest.raises(ValueError):
        Latency.Params(unknown=1)


def test_rounds_quantile_matches_direct_two_level_resampling() -> None:
    rng = np.random.default_rng(0)
    rounds = rng.gamma(2.0, 1.0, (5, 20)) * np.array([1.0, 1.0, 1.1, 0.9, 1.6])[:, None]
    m = rounds_quantile(rounds, 95, confidence=0.9, rng=np.random.default_rng(1), n_resamples=20_000)
    assert m.value == pytest.approx(np.percentile(rounds, 95))
    ref = np.random.default_rng(2)
    draws = []
    for _ in range(20_000):
        picked = rounds[ref.integers(0, 5, 5)]
        draws.append(np.percentile(np.concatenate([r[ref.integers(0, 20, 20)] for r in picked]), 95))
    lo, hi = percentile_ci(np.array(draws), 0.9)
    assert m.ci[0] == pytest.approx(lo, rel=0.03) and m.ci[1] == pytest.approx(hi, rel=0.03)
    # the spread between rounds widens the interval beyond a plain bootstrap of the calls
    flat = rounds.ravel()
    plain = [np.percentile(flat[ref.integers(0, 100, 100)], 95) for _ in range(2000)]
    assert hi - lo > np.subtract(*np.quantile(plain, [0.95, 0.05]))


def test_a_timing_that_changes_between_rounds_is_flagged_and_caps_at_warn(
        digits_cnn: LoadedModel, digits_test: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context.from_objects({"test": digits_test}, digits_cnn)
    calls = {"n": 0}
    real = ctx.time_calls

    def busy_third_round(module, x, *, warmup, repeats, precision="audit"):
        calls["n"] += 1
        t = real(module, x, warmup=warmup, repeats=repeats, precision=precision)
        return t * (5.0 if calls["n"] == 3 else 1.0)  # a neighbour's job lands in round 3

    monkeypatch.setattr(ctx, "time_calls", busy_third_round)
    m = Latency().run(ctx, Latency.Params(batch_sizes=[1], repeats=10, rounds=4, warmup=1, pause_s=0.0))
    assert [f.flag for f in m.flags] == ["unstable timing at batch size 1"]
    assert "apart" in m.flags[0].detail


@pytest.mark.parametrize("fixture", ["digits", "adult"])
def test_quantization_reports_accuracy_drop_and_size(fixture: str, request: pytest.FixtureRequest) -> None:
    model: LoadedModel = request.getfixturevalue("digits_cnn" if fixture == "digits" else "adult_transformer")
    ds: Dataset = request.getfixturevalue(f"{fixture}_test")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    ctx = Context.from_objects({"test": ds}, model)
    params = Quantization.Params(repeats=5, n_samples=None if fixture == "digits" else 2000)
    m = Quantization().run(ctx, params)
    # cross-check against an independent quantization and sklearn's accuracy
    rows = np.sort(ctx.rng("efficiency.quantization:test:subset").choice(len(ds), 2000, replace=False)) \
        if fixture == "adult" else np.arange(len(ds))
    _, q = quantize(model.module)
    # dynamic quantization scales activations per batch: predict in the context's batches
    with torch.inference_mode(), int8_inference():
        pred_q = torch.cat([q(torch.from_numpy(ds.x[rows][i:i + ctx.batch_size]))
                            for i in range(0, len(rows), ctx.batch_size)]).argmax(1).numpy()
    acc_o = accuracy_score(ds.y[rows], ctx.predictions("test")[rows])
    acc_q = accuracy_score(ds.y[rows], pred_q)
    drop = m.metrics["accuracy_drop"]
    assert drop.value == pytest.approx(acc_o - acc_q)
    assert drop.ci[0] <= drop.value <= drop.ci[1]
    assert abs(drop.value) < 0.05  # int8 weights barely move these small models
    assert m.metrics["quantized_accuracy"].value == pytest.approx(acc_q)
    assert m.metrics["prediction_agreement"].value == pytest.approx(float((pred_q == ctx.predictions("test")[rows]).mean()))
    assert 0 < m.metrics["size_ratio"].value < 1
    assert m.metrics["speedup"].value > 0 and m.metrics["speedup"].ci is not None
    # the audited model is untouched: same weights, still float, still unquantized
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert quantizable_linears(model.module)
    text = next(e for e in m.evidence if e["type"] == "text")["text"]
    assert "nn.Linear layer(s)" in text


def test_quantization_size_ratio_of_a_linear_model() -> None:
    """All weights in Linear layers: int8 storage is about a quarter of float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 256)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    module = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    model = LoadedModel(module=module, sha256="x", source="test", architecture="mlp")
    ds = Dataset(name="test", x=x, y=y, kind="tabular", classes=["0", "1"])
    m = Quantization().run(Context.from_objects({"test": ds}, model), Quantization.Params(repeats=5))
    assert 0.24 < m.metrics["size_ratio"].value < 0.3


def test_quantization_skips_a_model_without_linear_layers(digits_test: Dataset) -> None:
    module = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())
    model = LoadedModel(module=module, sha256="x", source="test", architecture="conv-only")
    ctx = Context.from_objects({"test": digits_test}, model)
    with pytest.raises(SkipCheck, match="no nn.Linear"):
        Quantization().run(ctx, Quantization.Params())
