"""Time PGD (audit.attacks) per sample against its floor: a bare loop of the same number of
forward+backward passes (input gradient, same loss, same batches) with no projection,
step or bookkeeping. Prints both and their ratio (target <= 1.15).

    python benchmarks/bench_attack.py [--n 512] [--steps 20] [--batch 256] [--repeats 5]
        [--norm linf|l2] [--device cpu|cuda] [--threads N]

Models: the digits-cnn fixture on 8x8 digits (tiny: the per-step overhead is at its most
visible) and the zoo ResNet on random 3x32x32 inputs (random weights: the pass count, not
the accuracy, sets the cost, since restarts = 1).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from audit import attacks


def floor_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> None:
    """The bare loop: `steps` forward+backward passes per batch, gradient w.r.t. an additive
    input perturbation (a few per cent faster here than w.r.t. a fresh input leaf each step),
    no projection, step rule or bookkeeping."""
    for start in range(0, x.shape[0], batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        d = torch.zeros_like(xb)
        for _ in range(steps):
            d.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xb + d), yb, reduction="sum"), d)
            d = d.detach() + 0.0 * g  # keep the gradient live (no dead-code shortcut)


def replay_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> None:
    """The bare loop of PGD with early stopping: one forward+backward pass per recorded
    batch size (the batch shrinks as samples are fooled), nothing else."""
    for m in sizes:
        d = torch.zeros_like(x[:m], requires_grad=True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x[:m] + d), y[:m], reduction="sum"), d)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    passes = {"fwd": 0, "bwd": 0}
    sizes: list[int] = []

    def forward(t: torch.Tensor) -> torch.Tensor:
        passes["fwd"] += t.shape[0]
        sizes.append(int(t.shape[0]))
        return model(t)

    def count(n: int) -> None:
        passes["bwd"] += n

    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=x.device).manual_seed(0)
    eps = 8 / 255 if args.norm == "linf" else 0.5

    def attack(early_stop: bool) -> None:
        gen.manual_seed(0)
        attacks.pgd(forward, x, y, eps=eps, norm=args.norm, steps=args.steps, restarts=1, generator=gen,
                    count_backward=count, batch_size=args.batch, early_stop=early_stop)

    def floor() -> None:
        floor_loop(model, x, y, args.steps, args.batch)

    sizes.clear()
    attack(True)
    early_sizes = list(sizes)  # the batches PGD with early stopping runs (the same every run: seeded)

    def floor_early() -> None:
        replay_loop(model, x, y, early_sizes)

    attack(False), floor()  # warm-up (allocator, kernels)
    passes.update(fwd=0, bwd=0)
    t_att, t_floor, t_early, t_floor_early = [], [], [], []
    for _ in range(args.repeats):  # interleaved: a busy machine slows all alike
        t_att.append(timed(lambda: attack(False), sync))
        t_floor.append(timed(floor, sync))
        t_early.append(timed(lambda: attack(True), sync))
        t_floor_early.append(timed(floor_early, sync))
    n = x.shape[0]
    per_run = passes["fwd"] // args.repeats
    assert per_run == args.steps * n + sum(early_sizes), per_run

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    ratios = sorted(ta / tf for ta, tf in zip(t_att, t_floor))
    early = sorted(ta / tf for ta, tf in zip(t_early, t_floor_early))
    print(f"{name:<24} n={n} steps={args.steps} batch={args.batch} {args.norm}: "
          f"PGD {1e3 * med(t_att) / n:7.3f} ms/sample, floor {1e3 * med(t_floor) / n:7.3f} ms/sample "
          f"(medians of {args.repeats}); PGD / floor: median of paired runs {med(ratios):.3f} "
          f"[{ratios[0]:.3f} .. {ratios[-1]:.3f}]; early stop: {sum(early_sizes) / (args.steps * n):.0%} of the "
          f"passes, / its own floor {med(early):.3f}, / the full floor {med(t_early) / med(t_floor):.3f}")
    return med(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--norm", choices=["linf", "l2"], default="linf")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-resnet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    from audit import zoo

    try:
        from fixtures.datasets import load_fixture_dataset
        from fixtures.models import load_fixture_model

        ds = load_fixture_dataset("digits", "test")
        model = load_fixture_model("digits-cnn", dev).module
        reps = -(-args.n // len(ds))
        x = torch.as_tensor(ds.x).repeat(reps, 1, 1, 1)[: args.n].to(dev)
        y = torch.as_tensor(ds.y).repeat(reps)[: args.n].to(dev)
        label = "digits-cnn (1x8x8)"
    except ImportError:
        model = zoo.build("cnn", in_channels=1, num_classes=10).to(dev)
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(args.n, 1, 8, 8, generator=g).to(dev), torch.randint(0, 10, (args.n,), generator=g).to(dev)
        label = "zoo cnn (1x8x8)"
    bench(label, model, x, y, args)

    if not args.skip_resnet:
        g = torch.Generator().manual_seed(0)
        n = max(64, args.n // 4)
        model = zoo.build("resnet", in_channels=3, num_classes=10).to(dev)
        x = torch.rand(n, 3, 32, 32, generator=g).to(dev)
        y = torch.randint(0, 10, (n,), generator=g).to(dev)
        bench("zoo resnet (3x32x32)", model, x, y, args)


if __name__ == "__main__":
    main()
