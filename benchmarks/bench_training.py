"""Training time per epoch for the zoo models, against a bare PyTorch loop.

For each architecture, `audit.training.fit` trains on its fixture data (digits for the
image models, reviews for the text Transformer, a fixed 8,000-row subset of adult for
the FT-Transformer) and reports seconds per epoch (its record, validation pass
included). The reference is a bare loop over the same model, batches, optimizer and
scheduler with nothing else (no validation, no records, no determinism guard): the
ratio is the overhead of the training mode.

    python benchmarks/bench_training.py [--epochs 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import zoo  # noqa: E402
from audit.dataset import Dataset  # noqa: E402
from audit.spec import TrainSpec  # noqa: E402
from audit.training import _batches, architecture_kwargs, fit, validation_split  # noqa: E402

CASES = {  # architecture -> (fixture, split, options)
    "cnn": ("digits", {}),
    "resnet": ("digits", {}),
    "vit": ("digits", {}),
    "text_transformer": ("reviews", {}),
    "ft_transformer": ("adult", {"d_token": 32, "n_layers": 2, "n_heads": 4}),
}


def _data(fixture: str) -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset(fixture, "train")
    if len(ds) > 8000:  # adult: a fixed subset keeps the benchmark short
        idx = np.sort(np.random.default_rng(0).choice(len(ds), 8000, replace=False))
        ds = dataclasses.replace(ds, x=ds.x[idx], y=ds.y[idx], _sha256=None)
    return ds


def bare_loop(ds: Dataset, spec: TrainSpec, device: torch.device, seed: int = 0) -> list[float]:
    """Seconds per epoch of the plainest loop over the same work as `fit`'s training steps."""
    torch.manual_seed(seed)
    module = zoo.build(spec.architecture, **architecture_kwargs(spec, ds)).to(device).train()
    tr, _ = validation_split(ds.y, spec.val_fraction, seed)
    x = torch.from_numpy(np.ascontiguousarray(ds.x[tr])).to(device)
    y = torch.from_numpy(ds.y[tr]).to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    spans = _batches(len(y), spec.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs * len(spans))
    times = []
    for _ in range(spec.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(y), device=device)
        for start, stop in spans:
            b = perm[start:stop]
            loss = F.cross_entropy(module(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", default=None, help="architectures to run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{args.epochs} epochs, batch size {args.batch_size}")
    print(f"{'architecture':<18}{'data':<9}{'rows':>6}{'params':>9}{'fit s/epoch':>13}{'bare s/epoch':>14}"
          f"{'ratio':>7}{'val acc':>9}")
    for arch, (fixture, options) in CASES.items():
        if args.only and arch not in args.only:
            continue
        ds = _data(fixture)
        spec = TrainSpec(architecture=arch, epochs=args.epochs, batch_size=args.batch_size, lr=2e-3,
                         options=options)
        bare_loop(ds, spec.model_copy(update={"epochs": 1}), device)  # warm-up: allocator, kernels
        loaded = fit(ds, spec, device=device, seed=0)
        rec = loaded.training
        # the first epoch pays one-off costs in both loops: compare the later epochs
        fit_s = float(np.median([e["seconds"] for e in rec["epochs"][1:]] or [rec["epochs"][0]["seconds"]]))
        bare = bare_loop(ds, spec, device)
        bare_s = float(np.median(bare[1:] or bare))
        print(f"{arch:<18}{fixture:<9}{rec['data']['n_train']:>6}{rec['params']:>9}{fit_s:>13.3f}{bare_s:>14.3f}"
              f"{fit_s / bare_s:>7.2f}{rec['epochs'][-1]['val_accuracy']:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
