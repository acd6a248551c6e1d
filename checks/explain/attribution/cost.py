"""The cost table: wall time and counted forward/backward samples of each phase of a run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from audit.check import table
from audit.context import Context


class Phases:
    """`with phases("label"): ...` times a phase and takes its passes from `ctx.measure()`."""

    def __init__(self, ctx: Context, n: int) -> None:
        self.ctx, self.n = ctx, n
        self.rows: list[list[Any]] = []

    @contextlib.contextmanager
    def __call__(self, label: str, per_sample: bool = True) -> Iterator[None]:
        t0 = time.perf_counter()
        with self.ctx.measure() as passes:
            yield
        dt = time.perf_counter() - t0
        self.rows.append([label, round(dt, 4), round(dt / self.n, 6) if per_sample else None,
                          passes["forward_samples"], passes["backward_samples"]])

    def table(self, note: str) -> dict[str, Any]:
        total = ["total", round(sum(r[1] for r in self.rows), 4), None,
                 sum(r[3] for r in self.rows), sum(r[4] for r in self.rows)]
        return table("Attribution cost", ["phase", "seconds", "per explained sample (s)", "forward samples",
                                          "backward samples"], self.rows + [total], note=note)
