"""Time APGD and Square (audit.attacks_auto) against their floors and against ART, in one run.

    python benchmarks/bench_autoattack.py [--n 128] [--steps 20] [--queries 200] [--repeats 3]
        [--device cpu|cuda] [--threads 1]

APGD: our APGD-CE against the bare floor, a loop of the same number of forward+backward
passes (steps + 1 per sample, input gradient, no step rule or bookkeeping); target <= 1.1x.
Square: queries per second (one query = one sample through the model), ours against a
floor of the same number of forward passes and against ART's SquareAttack with the same
query budget. ART's APGD-CE (1 random init) is timed at the same iteration count.
Models: a zoo CNN on random 3x32x32 inputs (the pass count, not the accuracy, sets the
cost) and the digits-cnn fixture (8x8: the per-step overhead at its most visible).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from audit import attacks_auto as aa


def timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def floor_backward(model, x, y, passes: int) -> None:
    d = torch.zeros_like(x)
    for _ in range(passes):
        d.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x + d), y, reduction="sum"), d)
        d = d.detach() + 0.0 * g


def floor_forward(model, x, passes: int) -> None:
    with torch.no_grad():
        for _ in range(passes):
            model(x)


def bench(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    eps = 8 / 255
    space = lambda: aa.Space(x, "linf", eps, 0.0, 1.0, None)  # noqa: E731
    count = {"fwd": 0}

    def fwd(t):
        count["fwd"] += t.shape[0]
        return model(t)

    def apgd():
        aa.apgd_batch(model, lambda n: None, space(), y, steps=args.steps, generator=torch.Generator(x.device).manual_seed(0))

    def square():
        aa.square_batch(fwd, space(), y, n_queries=args.queries, generator=torch.Generator(x.device).manual_seed(0))

    apgd(), floor_backward(model, x, y, 2)
    t_apgd = min(timed(apgd, sync) for _ in range(args.repeats))
    t_floor = min(timed(lambda: floor_backward(model, x, y, args.steps + 1), sync) for _ in range(args.repeats))
    count["fwd"] = 0
    t_sq = min(timed(square, sync) for _ in range(args.repeats))
    q = count["fwd"] / args.repeats
    t_sq_floor = min(timed(lambda: floor_forward(model, x, int(round(q / x.shape[0]))), sync)
                     for _ in range(args.repeats))
    print(f"\n{name}: n={x.shape[0]}, input {tuple(x.shape[1:])}, Linf eps 8/255")
    print(f"  APGD-CE {args.steps} it.: {t_apgd:.3f} s  floor ({args.steps + 1} fwd+bwd): {t_floor:.3f} s  "
          f"ratio {t_apgd / t_floor:.2f}x (target <= 1.10)")
    print(f"  Square {args.queries} q.: {t_sq:.3f} s, {q / t_sq:,.0f} queries/s; floor (same forwards) "
          f"{t_sq_floor:.3f} s, ratio {t_sq / max(t_sq_floor, 1e-9):.2f}x")
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        print("  ART not installed: no comparison")
        return
    k = int(model(x[:1]).shape[1])
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=k, clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu")
    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    art_apgd = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=args.steps,
                                            nb_random_init=1, batch_size=x.shape[0], loss_type="cross_entropy",
                                            verbose=False)
    t_art = min(timed(lambda: art_apgd.generate(xn, y=yn), sync) for _ in range(args.repeats))
    art_sq = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=args.queries, p_init=0.8, nb_restarts=1,
                          batch_size=x.shape[0], verbose=False)
    t_art_sq = min(timed(lambda: art_sq.generate(xn, y=yn), sync) for _ in range(args.repeats))
    print(f"  ART APGD-CE {args.steps} it.: {t_art:.3f} s ({t_art / t_apgd:.2f}x ours); "
          f"ART Square {args.queries} q.: {t_art_sq:.3f} s ({t_art_sq / t_sq:.2f}x ours)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    from audit import zoo

    torch.manual_seed(0)
    cnn = zoo.build("cnn", in_channels=3, num_classes=10, widths=[32, 64]).to(dev)
    x = torch.rand(args.n, 3, 32, 32, device=dev)
    with torch.no_grad():
        y = cnn.eval()(x).argmax(1)  # attack the model's own predictions (all "correct")
    bench("zoo CNN, random 3x32x32", cnn, x, y, args)
    try:
        from fixtures.datasets import load_fixture_dataset
        from fixtures.models import load_fixture_model

        ds = load_fixture_dataset("digits", "test")
        m = load_fixture_model("digits-cnn").module.to(dev)
        bench("digits-cnn, 8x8", m, torch.as_tensor(ds.x[:args.n]).to(dev), torch.as_tensor(ds.y[:args.n]).to(dev),
              args)
    except Exception as exc:  # noqa: BLE001
        print(f"digits-cnn skipped: {exc}")


if __name__ == "__main__":
    main()
