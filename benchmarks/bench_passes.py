"""Passes the demo audit runs against the passes its checks need: is any pass run twice?

    python benchmarks/bench_passes.py [--spec digits|adult] [--json OUT]

Every outermost call of a torch module is observed (global forward hooks, as
tests/check_contract.py observes them) and each input row is hashed by its bytes, keyed
by the module and the version of its weights (in-place updates: training, re-initialised
layers, bump it):

* a forward-only row is a repeat when the same module with the same weights has already
  run that exact row (its output was computed: it could have been kept);
* a forward+backward row is a repeat when the same row has already been back-propagated
  with the same gradient at the output (the same loss or target: the same input
  gradient), e.g. FGSM's gradient at the clean input recomputed for every eps.

What the checks need = what ran minus the repeats, except where the measurement is
repetition itself: every call inside `Context.time_calls` (efficiency.latency, and the
float32/int8 timing of efficiency.quantization, time the same batch again and again),
training.reproducibility (re-runs inference to compare), and training (modules in train
mode). A module is keyed by its identity, and every module seen is kept alive so that no
later module (the int8 check's float32 copy, its quantized copy) can reuse a freed id and
pass for it. Printed per check, with the totals the audit counted (provenance.compute).
Run it from another checkout with PYTHONPATH=that/checkout for a "before" column.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

INTENDED = ("efficiency.latency", "training.reproducibility")


def row_hashes(t: torch.Tensor) -> np.ndarray:
    a = t.detach().float().cpu().contiguous().numpy()
    raw = a.reshape(a.shape[0], -1).view(np.uint8)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((raw.shape[0], pad), np.uint8)], axis=1)
    words = np.ascontiguousarray(raw).view(np.uint64)
    return pd.util.hash_pandas_object(pd.DataFrame(words, copy=False), index=False).to_numpy()


class Observer:
    def __init__(self) -> None:
        self.check = "prepare"
        self.kind = ""
        self.depth = 0
        self.seen_fwd: set[tuple[Any, int]] = set()
        self.seen_bwd: set[tuple[Any, int, int]] = set()
        self.stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.timing = 0  # depth of Context.time_calls: timed repetition is the measurement
        self.alive: dict[int, nn.Module] = {}  # no id reused by a later module

    def key(self, module: nn.Module) -> tuple[int, tuple[int, ...]]:
        self.alive.setdefault(id(module), module)
        return id(module), tuple(p._version for p in module.parameters())

    def repeats(self, keys: list[Any], seen: set) -> np.ndarray:
        out = np.zeros(len(keys), bool)
        for i, k in enumerate(keys):
            out[i] = k in seen
            seen.add(k)
        return out

    def pre(self, module: nn.Module, args: tuple) -> None:
        self.depth += 1

    def post(self, module: nn.Module, args: tuple, out: Any) -> None:
        self.depth -= 1
        if self.depth or not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
            return
        if type(module).__module__.startswith("torch.ao.quantization."):
            return
        n = int(args[0].shape[0])
        s = self.stats[self.check]
        intended = self.kind in INTENDED or module.training or self.timing > 0
        mkey = self.key(module)
        h = row_hashes(args[0])
        if out.requires_grad:
            s["forward+backward rows"] += n

            def on_backward(g: torch.Tensor, h: np.ndarray = h, mkey: Any = mkey, s: Any = s,
                            intended: bool = intended) -> None:
                gh = row_hashes(g.reshape(g.shape[0], -1))
                rep = self.repeats([(mkey, int(a), int(b)) for a, b in zip(h, gh)], self.seen_bwd)
                if not intended:
                    s["forward+backward repeats"] += int(rep.sum())

            out.register_hook(on_backward)
            for a in h:
                self.seen_fwd.add((mkey, int(a)))
        else:
            s["forward-only rows"] += n
            rep = self.repeats([(mkey, int(a)) for a in h], self.seen_fwd)
            if not intended:
                s["forward-only repeats"] += int(rep.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="digits", choices=["digits", "adult"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from audit.cli import DEMOS
    from audit.registry import registry
    from audit.runner import Runner
    from audit.spec import load_spec

    torch.set_num_threads(1)
    os.environ.setdefault("AUDIT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "audit-bench-cache"))
    spec = load_spec(Path(str(resources.files("fixtures") / DEMOS[args.spec])))
    obs = Observer()
    from audit.context import Context

    time_calls = Context.time_calls

    def timed(self: Context, *a: Any, **k: Any) -> Any:
        obs.timing += 1
        try:
            return time_calls(self, *a, **k)
        finally:
            obs.timing -= 1

    Context.time_calls = timed  # type: ignore[method-assign]
    h1 = nn.modules.module.register_module_forward_pre_hook(obs.pre)
    h2 = nn.modules.module.register_module_forward_hook(obs.post)
    t0 = time.perf_counter()
    try:
        runner = Runner(spec)
        runner.ctx.model  # the reference model (trained on first use, outside the count)
        obs.stats.clear()
        obs.seen_fwd.clear()
        obs.seen_bwd.clear()
        f0, b0 = runner.ctx.forward_samples, runner.ctx.backward_samples
        runner.prepare()
        for entry in spec.checks:
            obs.check, obs.kind = entry.id, registry.get(entry.check).name
            runner.run_check(entry)
        results = runner.finish().to_json()
    finally:
        h1.remove()
        h2.remove()
        Context.time_calls = time_calls  # type: ignore[method-assign]
    counted = results["provenance"]["compute"]
    fwd, bwd = counted["forward_samples"] - f0, counted["backward_samples"] - b0
    rows = []
    tot = defaultdict(int)
    for check, s in obs.stats.items():
        f_all = s["forward-only rows"] + s["forward+backward rows"]
        rep_f = s["forward-only repeats"] + s["forward+backward repeats"]
        rows.append([check, f_all, f_all - rep_f, s["forward+backward rows"],
                     s["forward+backward rows"] - s["forward+backward repeats"]])
        for k, v in zip(("fwd", "fwd_need", "bwd", "bwd_need"), rows[-1][1:]):
            tot[k] += v
    print(f"{results['name']}: {time.perf_counter() - t0:.1f} s; counted by the audit: forward {fwd:,}, "
          f"backward {bwd:,} (observed {tot['fwd']:,} / {tot['bwd']:,})")
    print(f"{'check':<22} {'forward':>9} {'needed':>9} {'backward':>9} {'needed':>9}")
    for r in rows:
        print(f"{r[0]:<22} {r[1]:>9,} {r[2]:>9,} {r[3]:>9,} {r[4]:>9,}")
    print(f"{'total':<22} {tot['fwd']:>9,} {tot['fwd_need']:>9,} {tot['bwd']:>9,} {tot['bwd_need']:>9,}")
    print(f"ran / needed: forward {tot['fwd'] / max(tot['fwd_need'], 1):.3f}, "
          f"backward {tot['bwd'] / max(tot['bwd_need'], 1):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"counted": [fwd, bwd], "rows": rows, "total": dict(tot)}, indent=1))


if __name__ == "__main__":
    main()
