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
