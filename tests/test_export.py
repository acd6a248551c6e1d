"""efficiency.export: ONNX export under ONNX Runtime on the reference models (CNN,
FT-Transformer, text Transformer, ViT), counted passes, and a skip with the exporter's
reason for an operator that has no ONNX translation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from audit.context import Context  # noqa: E402
from audit.dataset import Dataset, LoadedModel  # noqa: E402
from audit.runner import Runner  # noqa: E402
from audit.spec import parse_spec  # noqa: E402
from checks.efficiency.export import Export, ExportParams, max_with_ci, one_line  # noqa: E402
from tests.check_contract import _observed_passes  # noqa: E402

FAST = {"warmup": 1, "repeats": 5, "batch_sizes": [1, 16]}


def _export_text(m) -> str:
    return next(e["text"] for e in m.evidence if e["type"] == "text" and e["title"] == "Export")


def _timed_samples(params: ExportParams) -> int:
    # each batch size: warm-up and timed calls of PyTorch and of ONNX Runtime
    return 2 * sum(params.batch_sizes) * (params.warmup + params.repeats)


def _check_parity(ctx: Context, params: ExportParams, n_rows: int) -> tuple:
    ctx.logits(params.data)  # the audit's shared pass
    before = ctx.forward_samples
    with _observed_passes() as seen:
        m = Export().run(ctx, params)
    counted = ctx.forward_samples - before
    assert counted == seen["forward_samples"], (counted, seen)
    return m, counted


def test_digits_cnn_exports_with_dynamo_and_agrees(digits_cnn: LoadedModel) -> None:
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "test")
    ctx = Context.from_objects({"test": ds}, digits_cnn)
    params = ExportParams(**FAST)
    m, counted = _check_parity(ctx, params, len(ds))
    assert "dynamo exporter" in _export_text(m)
    # one ONNX Runtime pass over the rows plus the timing calls; the dynamo trace computes nothing
    assert counted == len(ds) + _timed_samples(params)
    agree, diff = m.metrics["prediction_agreement"], m.metrics["max_logit_diff"]
    assert agree.value == 1.0 and agree.n == len(ds) and agree.ci[0] > 0.99
    assert 0 <= diff.value < 1e-4 and diff.ci[1] == diff.value
    assert m.metrics["ort_p50_ms"].value > 0 and m.metrics["speedup"].value > 0
    assert m.metrics["onnx_size_mb"].value > 0.05  # ~40k float32 weights


def test_classic_exporter_on_request_counts_its_trace(digits_cnn: LoadedModel) -> None:
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "test")
    ctx = Context.from_objects({"test": ds}, digits_cnn)
    params = ExportParams(exporter="classic", n_samples=100, **FAST)
    m, counted = _check_parity(ctx, params, 100)
    assert "classic exporter" in _export_text(m)
    assert counted == 2 + 100 + _timed_samples(params)  # the trace runs a real batch of 2
    assert m.metrics["prediction_agreement"].value == 1.0
    assert m.metrics["max_logit_diff"].value < 1e-4


def test_adult_ft_transformer_agrees(adult_transformer: LoadedModel) -> None:
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("adult", "test")
    ds = dataclasses.replace(ds, x=ds.x[:2000], y=ds.y[:2000], sensitive={}, _sha256=None)
    ctx = Context.from_objects({"test": ds}, adult_transformer)
    m, _ = _check_parity(ctx, ExportParams(**FAST), len(ds))
    assert "dynamo exporter" in _export_text(m)
    assert m.metrics["prediction_agreement"].value == 1.0
    assert m.metrics["max_logit_diff"].value < 1e-4


def test_text_transformer_agrees() -> None:
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    ds = load_fixture_dataset("reviews", "test")
    ctx = Context.from_objects({"test": ds}, load_fixture_model("text-transformer"))
    m, _ = _check_parity(ctx, ExportParams(n_samples=300, **FAST), 300)
    assert m.metrics["prediction_agreement"].value == 1.0
    assert m.metrics["max_logit_diff"].value < 1e-4


def test_vit_agrees() -> None:
    from audit.zoo.vit import ViT
    from fixtures.datasets import load_fixture_dataset

    full = load_fixture_dataset("shapes", "test")
    ds = Dataset("test", full.x[:64], full.y[:64], "image", list(full.classes))
    torch.manual_seed(0)
    vit = ViT(image_size=32, in_channels=3, num_classes=4, patch_size=8, dim=32, depth=1, heads=2)
    model = LoadedModel(module=vit, sha256="0" * 64, source="test", architecture="vit")
    ctx = Context.from_objects({"test": ds}, model)
    m, _ = _check_parity(ctx, ExportParams(warmup=1, repeats=5, batch_sizes=[1]), 64)
    assert m.metrics["prediction_agreement"].value == 1.0
    assert m.metrics["max_logit_diff"].value < 1e-4


@torch.library.custom_op("audittest::opaque_scale", mutates_args=())
def _opaque_scale(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0


@_opaque_scale.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _Opaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(_opaque_scale(x))


def test_an_unexportable_operator_skips_with_the_exporters_reasons() -> None:
    rng = np.random.default_rng(0)
    ds = Dataset("test", rng.normal(size=(40, 4)).astype(np.float32), np.arange(40) % 2, "tabular", ["a", "b"],
                 feature_names=[f"f{i}" for i in range(4)])
    model = LoadedModel(module=_Opaque(), sha256="0" * 64, source="test", architecture="opaque")
    spec = parse_spec({"name": "t", "model": {"fixture": "in-memory"}, "data": {"test": {"fixture": "in-memory"}},
                       "checks": [{"id": "onnx", "check": "efficiency.export", **FAST}]})
    runner = Runner(spec, context=Context.from_objects({"test": ds}, model))
    result = runner.run_check(spec.checks[0])
    assert result.status == "skipped", result.message
    assert "\n" not in result.message
    assert result.message.startswith("cannot export to ONNX: dynamo exporter:")
    assert "classic exporter:" in result.message and "audittest" in result.message


def test_one_line_takes_the_innermost_cause_of_a_dynamo_error() -> None:
    msg = ("Failed to convert the exported program to an ONNX model. \x1b[96mThis is step 3/3\x1b[0m\n\n"
           "## Exception summary\n\n<class 'torch.onnx._internal.exporter._errors.DispatchError'>: No ONNX "
           "function found for <OpOverload(op='x.y')>. Failure message: none\n⬆️\n<class 'Outer'>: outer\n")
    assert one_line(RuntimeError(msg)) == ("DispatchError: No ONNX function found for <OpOverload(op='x.y')>. "
                                          "Failure message: none")
    assert one_line(ValueError("first line\nsecond")) == "ValueError: first line"


def test_max_with_ci_is_the_bootstrap_distribution_of_the_maximum() -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(size=50)
    m = max_with_ci(values, 0.9, np.random.default_rng(1), n_resamples=20_000)
    brute = values[rng.integers(0, 50, size=(20_000, 50))].max(axis=1)
    lo, hi = np.quantile(brute, [0.05, 0.95])
    assert m.value == values.max() and m.ci[1] == pytest.approx(hi)
    assert m.ci[0] == pytest.approx(lo)
