"""efficiency.quantization: what dynamic int8 quantization costs and gains on the CPU.

A deep copy of the model goes to the CPU in float32 and is quantized with PyTorch's
`torch.ao.quantization.quantize_dynamic` (int8 weights, activations quantized on the
fly) for its `nn.Linear` layers. Convolutions are not dynamically quantizable, and
`nn.MultiheadAttention`'s output projection is deliberately left in float by PyTorch, so
the evidence says which share of the parameters was quantized. A model with no
quantizable Linear layer is skipped with that reason.

`accuracy_drop` = accuracy(float32) - accuracy(int8) on the same rows, with a paired
count bootstrap: the 2x2 table of (original correct, quantized correct) is resampled as
one multinomial, so the interval reflects the samples where the two models disagree.
The float32 predictions are the context's cached ones when the audit runs on the CPU.
Dynamic quantization scales activations per batch, so int8 predictions are made in the
context's batch size, as a deployment would batch them.
`size_ratio` = serialized int8 state dict / float32 state dict (torch.save bytes);
`speedup` = median float32 call time / median int8 call time on one batch, with a
bootstrap CI over the timing samples.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from pydantic import Field
from torch import nn

from audit.check import Check, Measurement, Metric, Params, cell, higher, lower, table, text
from audit.context import logits_to_proba
from audit.errors import SkipCheck
from audit.registry import register_check
from audit.stats import bootstrap_counts, proportion, ratio_of_medians


class QuantizationParams(Params):
    n_samples: int | None = Field(None, ge=10, description="evaluate on this many rows (seeded subset); all if unset")
    batch_size: int = Field(64, ge=1, description="batch size of the speed comparison")
    warmup: int = Field(3, ge=0, le=1000)
    repeats: int = Field(20, ge=5, le=10_000)


def quantizable_linears(module: nn.Module) -> list[str]:
    """Names of the layers quantize_dynamic({nn.Linear}) converts (exact type nn.Linear:
    subclasses such as MultiheadAttention's NonDynamicallyQuantizableLinear are left alone)."""
    return [name for name, m in module.named_modules() if type(m) is nn.Linear]


def quantize(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(float32 CPU copy, dynamic int8 copy) of `module`; the original is untouched."""
    from torch.ao.quantization import quantize_dynamic

    fp32 = copy.deepcopy(module).cpu().float().eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (not a dependency here)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        q = quantize_dynamic(fp32, {nn.Linear}, dtype=torch.qint8, inplace=False)
    return fp32, q.eval()


@contextlib.contextmanager
def int8_inference() -> Iterator[None]:
    """Run a dynamically quantized model: without the fused Transformer fast path, whose
    eligibility test reads `linear.weight` as a tensor (a method on quantized Linear
    layers), and without PyTorch's deprecation chatter about quantized tensors."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def serialized_size(module: nn.Module) -> int:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.save(module.state_dict(), buf)
    return buf.getbuffer().nbytes


def _acc_drop(cm: np.ndarray) -> np.ndarray:
    # cm[..., original correct, quantized correct]
    return (cm[..., 1, 0] - cm[..., 0, 1]) / cm.sum(axis=(-2, -1))


def _q_acc(cm: np.ndarray) -> np.ndarray:
    return cm[..., :, 1].sum(axis=-1) / cm.sum(axis=(-2, -1))


def _agreement(c: np.ndarray) -> np.ndarray:
    return c[..., 0] / c.sum(axis=-1)


def _predict(ctx, module: nn.Module, x: np.ndarray, what: str) -> np.ndarray:
    """Float32 predictions of `module` on the CPU, counted by the context."""
    return logits_to_proba(ctx.run_model(module, x, what=what, device="cpu", precision="float32")).argmax(axis=1)


@register_check
class Quantization(Check):
    name = "efficiency.quantization"
    version = 1
    requires = ("data",)
    Params = QuantizationParams
    area = "deployment"
    metrics = {
        "accuracy_drop": lower("Accuracy of the float32 model minus that of its dynamic int8 copy (CPU), "
                               "paired CI.", bounds=(-1.0, 1.0)),
        "quantized_accuracy": higher("Accuracy of the dynamic int8 copy.", proportion=True),
        "prediction_agreement": higher("Share of samples where the int8 copy predicts the same class as "
                                       "float32.", proportion=True),
        "size_ratio": lower("Serialized size of the int8 copy over that of the float32 model.", bounds=(0.0, None)),
        "speedup": higher("Median float32 call time over median int8 call time on the CPU (above 1: int8 is "
                          "faster).", unit="x", bounds=(0.0, None), timing=True),
    }
    summary = "Dynamic int8 quantization (CPU): accuracy drop with a paired CI, size ratio and speed-up."

    def run(self, ctx, params: QuantizationParams) -> Measurement:
        module = ctx.model.module
        if isinstance(module, torch.jit.ScriptModule):
            raise SkipCheck("a TorchScript model cannot be quantized dynamically in eager mode")
        linears = quantizable_linears(module)
        if not linears:
            raise SkipCheck("the model has no nn.Linear layers: dynamic int8 quantization "
                            "(torch.ao.quantization.quantize_dynamic) has nothing to quantize")
        ds = ctx.dataset(params.data)
        idx = ctx.sample_rows(params.data, params.n_samples, f"{self.name}:{params.data}:subset")
        x, y = ds.rows(idx), ds.y[idx]  # all rows of a streamed dataset stay streamed

        fp32, q = quantize(module)
        if ctx.device.type == "cpu":
            pred_o = ctx.predictions(params.data)[idx]  # the audit's own float32 CPU predictions
        else:  # the audit ran on an accelerator (bf16): compare like with like on the CPU
            pred_o = _predict(ctx, fp32, x, "Predicting with the float32 copy (CPU)")
        with int8_inference():
            pred_q = _predict(ctx, q, x, "Predicting with the int8 copy")

        co, cq = (pred_o == y).astype(int), (pred_q == y).astype(int)
        cm = np.bincount(co * 2 + cq, minlength=4).reshape(2, 2)
        agree = np.array([int((pred_o == pred_q).sum()), int((pred_o != pred_q).sum())])
        rng = ctx.rng(f"{self.name}:{params.data}")
        drop = bootstrap_counts(cm, _acc_drop, confidence=params.confidence, rng=rng, bounds=(-1.0, 1.0))
        q_acc = proportion(int(cq.sum()), len(idx), params.confidence)
        agreement = proportion(int(agree[0]), len(idx), params.confidence)
        acc_o = float(co.mean())

        size_o, size_q = serialized_size(fp32), serialized_size(q)
        bidx = np.arange(params.batch_size) % len(ds)
        xb = torch.as_tensor(ds.x[bidx])
        t_o = ctx.time_calls(fp32, xb, warmup=params.warmup, repeats=params.repeats, precision="float32")
        with int8_inference():
            t_q = ctx.time_calls(q, xb, warmup=params.warmup, repeats=params.repeats, precision="float32")
        speedup = ratio_of_medians(t_o, t_q, confidence=params.confidence,
                                   rng=ctx.rng(f"{self.name}:{params.data}:speed"))

        n_q = sum(p.numel() for name in linears for p in module.get_submodule(name).parameters(recurse=False))
        n_all = sum(p.numel() for p in module.parameters())
        metrics = {"accuracy_drop": drop, "quantized_accuracy": q_acc, "prediction_agreement": agreement,
                   "size_ratio": Metric(size_q / size_o), "speedup": speedup}
        ms_o, ms_q = np.median(t_o) * 1000, np.median(t_q) * 1000
        rows = [
            ["accuracy", round(acc_o, 4), cell(q_acc.value, q_acc.ci), cell(-drop.value, _neg(drop.ci))],
            ["size (bytes)", size_o, size_q, f"x{size_q / size_o:.3f}"],
            [f"median call, batch {params.batch_size} (ms)", round(ms_o, 4), round(ms_q, 4),
             cell(speedup.value, speedup.ci)],
        ]
        evidence = [
            table("float32 vs dynamic int8 (CPU)", ["", "float32", "int8", "change"], rows,
                  note=f"{len(idx)} rows of '{params.data}'; paired table (orig right, int8 right): "
                       f"{cm[1, 1]} both, {cm[1, 0]} only float32, {cm[0, 1]} only int8, {cm[0, 0]} neither."),
            text("What was quantized",
                 f"{len(linears)} nn.Linear layer(s) with {n_q:,} of {n_all:,} parameters "
                 f"({n_q / max(n_all, 1):.1%}) converted to int8 by torch.ao.quantization.quantize_dynamic "
                 f"(engine {torch.backends.quantized.engine}); other layers stay float32. "
                 f"Layers: {', '.join(linears[:12])}{' ...' if len(linears) > 12 else ''}."),
        ]
        return Measurement(metrics=metrics, evidence=evidence)


def _neg(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (-ci[1], -ci[0])
