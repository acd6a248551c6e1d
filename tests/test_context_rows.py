"""Context.logits_rows: a check that needs some rows of a dataset (membership inference's
members) runs only those, and a later full prediction runs only the rest: no row twice."""

from __future__ import annotations

import numpy as np
import torch

from audit.context import Context
from audit.dataset import Dataset, LoadedModel


def _ctx(n: int = 300) -> Context:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    ds = Dataset("train", rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n), "tabular",
                 ["a", "b", "c"])
    return Context.from_objects({"train": ds}, LoadedModel(net, "0" * 64, "t", "mlp"))


def test_rows_then_everything_runs_each_row_once() -> None:
    ctx, full = _ctx(), _ctx()
    reference = full.logits("train")
    rows = np.array([5, 3, 3, 250, 17])
    np.testing.assert_allclose(ctx.logits_rows("train", rows), reference[rows], rtol=1e-6, atol=1e-7)
    assert ctx.forward_samples == 4  # distinct rows only
    more = np.array([3, 17, 18])
    np.testing.assert_allclose(ctx.logits_rows("train", more), reference[more], rtol=1e-6, atol=1e-7)
    assert ctx.forward_samples == 5  # only row 18 was new
    np.testing.assert_allclose(ctx.logits("train"), reference, rtol=1e-6, atol=1e-7)
    assert ctx.forward_samples == 300  # the rest, once
    np.testing.assert_allclose(ctx.logits_rows("train", rows), reference[rows], rtol=1e-6, atol=1e-7)
    assert ctx.forward_samples == 300  # sliced from the cache
    np.testing.assert_array_equal(ctx.probabilities("train").argmax(1), full.predictions("train"))


def test_derived_inputs_run_only_rows_never_run_before() -> None:
    """cached_logits: rows equal to a predicted dataset's rows, to an earlier derived
    input's, or repeated within the input, are not run again; the logits are the same."""
    ctx, ref = _ctx(), _ctx()
    x = ctx.dataset("train").x
    ctx.logits("train")
    assert ctx.forward_samples == 300
    noisy = x[:50].copy()
    noisy[::2] += 0.5  # 25 rows changed, 25 the same as the dataset's
    out = ctx.cached_logits("a", lambda: noisy)
    assert ctx.forward_samples == 300 + 25
    np.testing.assert_allclose(out, ref.infer(noisy), rtol=1e-6, atol=1e-7)
    again = np.concatenate([noisy[:10], noisy[:10], x[60:62] + 1.0])  # 10 seen, 10 repeats, 2 new
    out = ctx.cached_logits("b", lambda: again)
    assert ctx.forward_samples == 300 + 25 + 2
    np.testing.assert_allclose(out, ref.infer(again), rtol=1e-6, atol=1e-7)
    t = torch.as_tensor(again)  # a tensor input (an attack's points) works the same way
    np.testing.assert_allclose(ctx.cached_logits("c", lambda: t), out, rtol=0, atol=0)
    assert ctx.forward_samples == 300 + 25 + 2


def test_many_small_inputs_keep_few_blocks_and_find_every_row() -> None:
    """Sixty derived inputs of 7 rows each (every other one repeating an earlier input's
    rows): the row store merges its blocks by size tiers, and every row run before is
    still found."""
    ctx, ref = _ctx(), _ctx()
    rng = np.random.default_rng(1)
    inputs: list[np.ndarray] = []
    expected = 0
    for i in range(60):
        x = inputs[i - 1][::-1].copy() if i % 2 else rng.normal(size=(7, 4)).astype(np.float32)
        expected += 0 if i % 2 else 7
        inputs.append(x)
        np.testing.assert_allclose(ctx.cached_logits(f"k{i}", lambda x=x: x), ref.infer(x), rtol=1e-6, atol=1e-7)
    assert ctx.forward_samples == expected
    assert len(ctx._rows.blocks[("<f4", (4,))]) <= 7  # log2(60 inputs) + 1, not 60
    again = np.concatenate(inputs[::5])
    ctx.cached_logits("all", lambda: again)
    assert ctx.forward_samples == expected
