"""Seconds per explained sample for every attribution method of explain.attribution, on the
digits-cnn and adult-transformer fixtures, through the check itself (randomization off):
set-up (background rows, k-means) is reported apart from the per-sample cost.

Each row also gives the floor: a bare loop of the same number of forward and
forward+backward samples the method was counted to run (same model, same batch size),
and the ratio method / floor: the overhead of the library's own algorithm and bookkeeping
(e.g. SHAP's per-sample Python loops) above the passes it cannot avoid.

    python benchmarks/bench_explain.py [--models digits,adult] [--methods m1,m2] [--device cpu]
        [--threads N] [--quick]

Also prints, for the record, the headline numbers the issue asks for: IG deletion
faithfulness and randomization similarity on digits-cnn, and the shap_permutation vs
integrated_gradients agreement on adult-transformer, with any sanity flags and the size of
each chart's data as results.json will hold it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from audit.check import Measurement
from audit.context import Context
from checks.explain import explainers as ex
from checks.explain.attribution import Attribution, AttributionParams

# Explained samples per method: the model-agnostic ones cost thousands of passes per sample.
N_SAMPLES = {"digits": {"shap_kernel": 8, "shap_permutation": 8, "shap_gradient": 32, "shap_deep": 32},
             "adult": {"shap_kernel": 3, "shap_permutation": 6, "shap_gradient": 16, "shap_deep": 16}}
DEFAULT_N = {"digits": 64, "adult": 32}


def floor_seconds(module: torch.nn.Module, x: torch.Tensor, forward_only: int, with_backward: int,
                  batch: int) -> float:
    """Bare batched passes: `forward_only` rows under inference mode, `with_backward` rows with
    an input gradient."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def rows(n: int) -> torch.Tensor:
        reps = -(-n // len(x))
        return x.repeat((reps,) + (1,) * (x.ndim - 1))[:n]

    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, forward_only, batch):
            module(rows(min(batch, forward_only - s)))
    for s in range(0, with_backward, batch):
        xb = rows(min(batch, with_backward - s)).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(module(xb)[:, 0].sum(), xb)
    sync()
    return time.perf_counter() - t0


def bench_model(name: str, methods: list[str], device: str, quick: bool) -> None:
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    data = {"train": load_fixture_dataset(name, "train"), "test": load_fixture_dataset(name, "test")}
    model = load_fixture_model({"digits": "digits-cnn", "adult": "adult-transformer"}[name], device)
    ctx = Context.from_objects(data, model, device=device)
    ctx.probabilities("test")  # the cached predictions every check shares, outside the timings
    x = torch.tensor(data["test"].x[:256], device=ctx.device)
    print(f"\n{name} ({model.architecture}, {sum(p.numel() for p in model.module.parameters()):,} params, "
          f"input {tuple(data['test'].x.shape[1:])}) on {ctx.device}")
    print(f"{'method':22s} {'n':>4s} {'setup s':>8s} {'s/sample':>9s} {'fwd/sample':>10s} "
          f"{'bwd/sample':>10s} {'floor s/sample':>14s} {'ratio':>6s}")
    for method in methods:
        n = N_SAMPLES[name].get(method, DEFAULT_N[name])
        if quick:
            n = max(2, n // 4)
        m = Attribution().run(ctx, AttributionParams(method=method, n_samples=n, randomization=False))
        cost = next(e for e in m.evidence if e.get("title") == "Attribution cost")["rows"]
        setup_s, attr_s, fwd, bwd = cost[0][1], cost[1][1], cost[1][3], cost[1][4]
        floor = floor_seconds(ctx.model.module, x, fwd - bwd, bwd, ctx.batch_size)
        print(f"{method:22s} {n:4d} {setup_s:8.3f} {attr_s / n:9.4f} {fwd / n:10.0f} {bwd / n:10.0f} "
              f"{floor / n:14.4f} {attr_s / max(floor, 1e-9):6.1f}")


def headline(device: str, quick: bool) -> None:
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    digits = {s: load_fixture_dataset("digits", s) for s in ("train", "test")}
    ctx = Context.from_objects(digits, load_fixture_model("digits-cnn", device), device=device)
    m = Attribution().run(ctx, AttributionParams(method="integrated_gradients", n_samples=16 if quick else 64))
    print("\ndigits-cnn, integrated_gradients (defaults):")
    _print_measurement(m)
    adult = {s: load_fixture_dataset("adult", s) for s in ("train", "test")}
    ctx = Context.from_objects(adult, load_fixture_model("adult-transformer", device), device=device)
    m = Attribution().run(ctx, AttributionParams(method="shap_permutation", compare_with="integrated_gradients",
                                                 sensitive=["sex"], n_samples=8 if quick else 24,
                                                 randomization=False))
    print("adult-transformer, shap_permutation vs integrated_gradients:")
    _print_measurement(m)


def _print_measurement(m: Measurement) -> None:
    for k, v in m.metrics.items():
        print(f"  {k:27s} {v.value:+.3f} [{v.ci[0]:+.3f}, {v.ci[1]:+.3f}]")
    for f in m.flags:
        print(f"  flag {f.flag}: {f.detail}")
    charts = [f"{e['chart']} ({len(json.dumps(e['data'])) / 1024:.0f} KiB)" for e in m.evidence if e["type"] == "chart"]
    print(f"  charts: {', '.join(charts)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits,adult")
    ap.add_argument("--methods", default=",".join(ex.METHOD_NAMES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a quarter of the samples")
    ap.add_argument("--no-headline", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")
    np.seterr(all="ignore")
    for name in args.models.split(","):
        bench_model(name, args.methods.split(","), args.device, args.quick)
    if not args.no_headline:
        headline(args.device, args.quick)


if __name__ == "__main__":
    main()
