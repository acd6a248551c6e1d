"""Every hot path of the suite beside its floor and its peers, measured in one run: one table.

    python benchmarks/run_all.py [--quick] [--repeats N] [--only ig,shap,pgd,fairness,robustness,scale,passes]

The floor of a row is a bare loop of the passes the work cannot avoid (the same forward
and forward+backward samples, in the same batches, with nothing else), or for the
fairness table the factorizing of the group attributes and one bincount of the count
cells. Suite and peers are timed interleaved (suite, floor, peers, suite, floor, ...) with
one torch thread; each ratio is the median over rounds of that round's time / that
round's floor. Times are process CPU seconds (with one thread, the machine's other load
changes them far less than wall-clock time); wall-clock ratios are printed beside. The
load average is printed with every row, and the versions at the top.

Peers: captum (IntegratedGradients), shap (GradientExplainer, DeepExplainer), fairlearn
(MetricFrame on the rows), torchattacks and ART (PGD); a peer that is not installed is
left out. `--quick` (under 15 minutes on two cores) runs fewer rounds, times fairlearn
once per row, and leaves out the demo pass accounting unless `--only` names `passes`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

ROWS: list[dict[str, Any]] = []


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def versions() -> str:
    out = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for pkg in ("captum", "shap", "fairlearn", "scikit-learn", "pandas", "torchattacks",
                "adversarial-robustness-toolbox"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def measure(fns: dict[str, Callable[[], Any]], rounds: int, warm: bool = True) -> dict[str, list[tuple[float, float]]]:
    """(cpu, wall) seconds of each function, interleaved over `rounds` rounds in a rotating
    order. Several floors
    ("floor: ..."): the floor of a round is the fastest of them."""
    if warm:
        for fn in fns.values():
            fn()
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        # each round starts one function later: whatever runs first after another's large
        # frees and allocations pays for it (measured ~5% on the digits IG row), so no one
        # function always takes that place
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            out[name].append((time.process_time() - c0, time.perf_counter() - w0))
    floors = [k for k in out if k.startswith("floor: ")]
    if floors:
        out["floor"] = [min((out[k][i] for k in floors), key=lambda t: t[0]) for i in range(rounds)]
    return out


def batches(sizes: list[tuple[int, bool]], batch: int = 256) -> list[tuple[int, bool]]:
    """The same rows as `sizes` in passes of `batch` rows (the audit's batch size)."""
    out = []
    for grad in (True, False):
        total = sum(m for m, g in sizes if g == grad)
        out += [(min(batch, total - s), grad) for s in range(0, total, batch)]
    return out


def ratio(times: dict[str, list[tuple[float, float]]], name: str, floor: str = "floor", wall: bool = False) -> float:
    i = 1 if wall else 0
    return statistics.median(a[i] / max(b[i], 1e-9) for a, b in zip(times[name], times[floor]))


def med(times: dict[str, list[tuple[float, float]]], name: str) -> float:
    return statistics.median(t[0] for t in times[name])


def record(work: str, times: dict[str, list[tuple[float, float]]], suite: str, peers: list[str], note: str = "",
           floor_label: str = "", extra_peers: dict[str, tuple[float, float]] | None = None) -> None:
    row = {"work": work, "floor_s": med(times, "floor"), "floor": floor_label,
           "suite": {suite: (ratio(times, suite), ratio(times, suite, wall=True))},
           "peers": {p: (ratio(times, p), ratio(times, p, wall=True)) for p in peers if p in times}
           | (extra_peers or {}),
           "rounds": len(times["floor"]), "load": load(), "note": note}
    ROWS.append(row)
    suites = "; ".join(f"{k} {c:.2f}x (wall {w:.2f}x)" for k, (c, w) in row["suite"].items())
    peers_s = "; ".join(f"{k} {c:.2f}x (wall {w:.2f}x)" for k, (c, w) in row["peers"].items())
    print(f"  {work}: floor {row['floor_s']:.3f} s CPU ({floor_label}); suite/floor: {suites}"
          + (f"; peers/floor: {peers_s}" if peers_s else "") + f"; {row['rounds']} rounds, load {row['load']:.2f}"
          + (f"; {note}" if note else ""), flush=True)


# ---- shared: a model wrapper that records the batch of every pass, and the floor that replays it ----

class Recorder(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.sizes: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append((int(x.shape[0]), torch.is_grad_enabled() and x.requires_grad))
        return self.module(x)


def bank(x: torch.Tensor, sizes: list[tuple[int, bool]]) -> torch.Tensor:
    """Input rows for a replay, built once (outside the timing)."""
    m = max([s for s, _ in sizes] + [1])
    reps = -(-m // len(x))
    return x.repeat((reps,) + (1,) * (x.ndim - 1))[:m].contiguous() if reps > 1 else x


def replay(module: torch.nn.Module, x: torch.Tensor, sizes: list[tuple[int, bool]]) -> None:
    """The bare loop: one pass per recorded batch (with an input gradient where the work took one);
    `x` holds at least as many rows as the largest batch (`bank`)."""
    for m, grad in sizes:
        xb = x[:m]
        if grad:
            xb = xb.clone().requires_grad_(True)
            out = module(xb)
            torch.autograd.grad(out[:, 0].sum(), xb)
        else:
            with torch.inference_mode():
                module(xb)


def frozen(m: torch.nn.Module) -> torch.nn.Module:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# ---- attribution ------------------------------------------------------------------------------------

def plain_ig(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, steps: int, rows: int) -> torch.Tensor:
    """Textbook batched IG (zero baseline, Gauss-Legendre), written for the benchmark."""
    w, a = np.polynomial.legendre.leggauss(steps)
    w, a = torch.tensor(0.5 * w, dtype=x.dtype), torch.tensor(0.5 * (1 + a), dtype=x.dtype)
    per = max(1, rows // steps)
    out = torch.zeros_like(x)
    for s in range(0, len(x), per):
        xs = x[s:s + per]
        pts = (a.view(-1, *([1] * x.ndim)) * xs).reshape(-1, *x.shape[1:]).requires_grad_(True)
        (g,) = torch.autograd.grad(model(pts).gather(1, t[s:s + per].repeat(steps).view(-1, 1)).sum(), pts)
        out[s:s + per] = (g.view(steps, -1, *x.shape[1:]) * w.view(-1, *([1] * x.ndim))).sum(0) * xs
    return out


def bench_attribution(rounds: int, quick: bool) -> None:
    from audit.context import Context
    from checks.explain import explainers as ex
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    print("Attribution (explain.attribution's methods as the check calls them)", flush=True)
    adult = load_fixture_dataset("adult", "test")
    torch.manual_seed(0)
    mlp = frozen(torch.nn.Sequential(torch.nn.Linear(adult.x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                     torch.nn.ReLU(), torch.nn.Linear(64, 2)))
    digits = {s: load_fixture_dataset("digits", s) for s in ("train", "test")}
    cnn = frozen(load_fixture_model("digits-cnn", "cpu").module)

    def setup_for(steps: int, bg: np.ndarray | None = None) -> Any:
        return ex.ExplainSetup(kind="x", n_steps=steps, internal_batch_size=256, seed=3,
                               background=None if bg is None else torch.as_tensor(bg))

    def run_method(fn: Any, module: torch.nn.Module, x: np.ndarray, t: np.ndarray, setup: Any) -> np.ndarray:
        return ex.explain(fn, module, x, t, np.zeros_like(x), setup, device=torch.device("cpu"), chunk=256)

    from audit.dataset import LoadedModel

    for label, module, x_all, steps in (("IG, 50 steps, Adult-style MLP, 500 rows", mlp, adult.x[:500], 50),
                                        ("IG, 50 steps, digits CNN, 256 images", cnn, digits["test"].x[:256], 50)):
        x = np.ascontiguousarray(x_all, dtype=np.float32)
        ctx = Context.from_objects({"test": digits["test"]}, LoadedModel(module, "0" * 64, "b", "b"))
        with torch.no_grad():
            t = module(torch.as_tensor(x)).argmax(1).numpy()
        setup = setup_for(steps)
        counted = ex.TwoClassLogits(ctx.counting(module))
        rec = Recorder(module)
        run_method(ex.FAST["integrated_gradients"], ex.TwoClassLogits(rec), x, t, setup)
        sizes = list(rec.sizes)
        rows = ex.rows_per_pass(setup, torch.as_tensor(x))
        xt, tt = torch.as_tensor(x), torch.as_tensor(t)

        def captum() -> None:
            from captum.attr import IntegratedGradients

            IntegratedGradients(module).attribute(xt.clone().requires_grad_(True), baselines=torch.zeros_like(xt),
                                                  target=tt, n_steps=steps, internal_batch_size=rows)

        xb = bank(xt, sizes)
        times = measure({"suite": lambda: run_method(ex.FAST["integrated_gradients"], counted, x, t, setup),
                         "floor: same passes": lambda: replay(module, xb, sizes),
                         "floor: batches of 256": lambda: replay(module, xb, batches(sizes)),
                         "plain batched IG": lambda: plain_ig(module, xt, tt, steps, rows),
                         "captum": captum,
                         "captum through the check (batch 256)":
                             lambda: run_method(ex.integrated_gradients, counted, x, t, setup)}, rounds)
        record(label, times, "suite", ["plain batched IG", "captum", "captum through the check (batch 256)"],
               floor_label=f"{sum(m for m, _ in sizes):,} fwd+bwd rows (the faster of passes of {rows}, of 256)")

    # expected gradients and DeepExplainer on digits
    x = np.ascontiguousarray(digits["test"].x[:128 if quick else 256])
    with torch.no_grad():
        t = cnn(torch.as_tensor(x)).argmax(1).numpy()
    bg = digits["train"].x[np.sort(np.random.default_rng(0).choice(len(digits["train"]), 20, replace=False))]
    setup = setup_for(50, bg)
    ctx = Context.from_objects({"test": digits["test"]}, LoadedModel(cnn, "0" * 64, "b", "b"))
    counted = ex.TwoClassLogits(ctx.counting(cnn))
    for label, fast, lib in (("expected gradients (SHAP GradientExplainer), digits, 50 draws",
                              ex.FAST["shap_gradient"], ex.shap_gradient),
                             ("SHAP DeepExplainer, digits, 20 background rows", None, ex.shap_deep)):
        rec = Recorder(cnn)
        run_method(fast or lib, ex.TwoClassLogits(rec), x, t, setup)
        sizes = list(rec.sizes)
        xb = bank(torch.as_tensor(x), sizes)
        fns = {"suite": lambda f=fast or lib: run_method(f, counted, x, t, setup),
               "floor: same passes": lambda s=sizes, xb=xb: replay(cnn, xb, s),
               "floor: batches of 256": lambda s=sizes, xb=xb: replay(cnn, xb, batches(s))}
        if fast is not None:
            fns["shap"] = lambda: run_method(lib, counted, x, t, setup)
        times = measure(fns, max(3, rounds - 2) if quick else rounds)
        note = "" if fast is not None else "the suite calls SHAP's DeepExplainer itself"
        record(f"{label}, {len(x)} images", times, "suite", ["shap"], note=note,
               floor_label=f"{sum(m for m, g in sizes if g):,} fwd+bwd + {sum(m for m, g in sizes if not g):,} fwd "
                           f"rows (the faster of the suite's passes, of 256)")


# ---- PGD ---------------------------------------------------------------------------------------------

def bench_pgd(rounds: int, quick: bool) -> None:
    from audit import attacks
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    print("PGD (audit.attacks.pgd), Linf, 20 steps, digits CNN", flush=True)
    ds = load_fixture_dataset("digits", "test")
    model = frozen(load_fixture_model("digits-cnn", "cpu").module)
    n, steps, bs, eps = 512, 20, 256, 8 / 255
    reps = -(-n // len(ds))
    x = torch.as_tensor(ds.x).repeat(reps, 1, 1, 1)[:n]
    y = torch.as_tensor(ds.y).repeat(reps)[:n]
    rec = Recorder(model)

    def ours(early: bool, m: torch.nn.Module = model) -> None:
        attacks.pgd(m, x, y, eps=eps, steps=steps, restarts=1, batch_size=bs,
                    generator=torch.Generator().manual_seed(0), early_stop=early)

    def floor() -> None:
        for s in range(0, n, bs):
            xb, yb = x[s:s + bs], y[s:s + bs]
            d = torch.zeros_like(xb)
            for _ in range(steps):
                d.requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(model(xb + d), yb, reduction="sum"), d)
                d = d.detach() + 0.0 * g

    ours(True, rec)
    early_sizes = [(m, True) for m, _ in rec.sizes]

    def floor_early() -> None:
        for m, _ in early_sizes:
            d = torch.zeros_like(x[:m], requires_grad=True)
            torch.autograd.grad(F.cross_entropy(model(x[:m] + d), y[:m], reduction="sum"), d)

    fns: dict[str, Callable[[], Any]] = {"suite": lambda: ours(False), "floor": floor,
                                         "suite, early stop": lambda: ours(True), "floor, early stop": floor_early}
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
        fns["torchattacks"] = lambda: [ta(x[s:s + bs], y[s:s + bs]) for s in range(0, n, bs)]
    except ImportError:
        pass
    try:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                                clip_values=(0.0, 1.0))
        art = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps,
                                              num_random_init=1, batch_size=bs, verbose=False)
        xn, yn = x.numpy(), y.numpy()
        fns["ART"] = lambda: art.generate(xn, y=yn)
    except ImportError:
        pass
    times = measure(fns, rounds)
    record(f"PGD Linf 20 steps, {n} images (every step)", times, "suite",
           [p for p in ("torchattacks", "ART") if p in fns], floor_label=f"{steps * n:,} fwd+bwd rows")
    share = sum(m for m, _ in early_sizes) / (steps * n)
    es = {"floor": times["floor, early stop"], "suite, early stop": times["suite, early stop"]}
    record(f"PGD with early stopping ({share:.0%} of the passes)", es, "suite, early stop", [],
           floor_label="its own passes", note=f"vs the every-step floor: "
                                              f"{ratio({**times}, 'suite, early stop'):.2f}x")


# ---- fairness ----------------------------------------------------------------------------------------

def bench_fairness(rounds: int, quick: bool) -> None:
    import pandas as pd
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    from audit.dataset import Dataset
    from checks.fairness.group_gaps import bootstrap_fairness, gaps, group_counts, make_groups, group_rates, RATES

    print("fairness.group table + gap CIs at 1.6M rows", flush=True)
    n = 1_600_000
    rng = np.random.default_rng(0)
    sex = np.where(rng.random(n) < 0.67, "Male", "Female")
    race = rng.choice(["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"], n,
                      p=[0.85, 0.09, 0.03, 0.01, 0.02])
    y = (rng.random(n) < np.where(sex == "Male", 0.3, 0.12)).astype(np.int64)
    pred = np.where(rng.random(n) < 0.85, y, 1 - y)
    ds = Dataset("bench", np.zeros((n, 1), np.float32), y, "tabular", ["<=50K", ">50K"],
                 sensitive={"sex": sex, "race": race})

    def byte_codes(v: np.ndarray) -> np.ndarray:
        words = v.view(np.uint8).reshape(len(v), -1)
        words = np.concatenate([words, np.zeros((len(v), (-words.shape[1]) % 8), np.uint8)], 1).view(np.uint64)
        return pd.factorize(words @ np.arange(1, 2 * words.shape[1], 2, dtype=np.uint64))[0]

    for attrs in (["sex"], ["sex", "race"]):
        def suite() -> None:
            groups = make_groups(ds, attrs)  # what fairness.group does after the cached predictions
            counts = group_counts(groups.codes, y, pred, len(groups.keys))
            by = group_rates(counts)
            sufficient = counts.sum(axis=(1, 2)) >= 30
            gaps({r: by[r].to_numpy()[sufficient] for r in RATES})
            bootstrap_fairness(counts, sufficient, confidence=0.95, rng=np.random.default_rng(1))

        def floor() -> None:
            code = np.zeros(n, np.int64)
            for a in attrs:
                c = byte_codes(ds.sensitive[a])
                code = code * (int(c.max()) + 1) + c
            np.bincount(code * 4 + y * 2 + pred)

        def fairlearn() -> None:
            feats = pd.DataFrame({a: ds.sensitive[a] for a in attrs})
            MetricFrame(metrics={"count": count, "selection_rate": selection_rate, "tpr": true_positive_rate,
                                 "fpr": false_positive_rate, "accuracy": accuracy_score},
                        y_true=y, y_pred=pred, sensitive_features=feats).by_group

        times = measure({"suite": suite, "floor": floor}, rounds)
        # fairlearn takes a minute or more per call at this size: fewer rounds (--quick: one), each beside a floor
        peer = measure({"floor": floor, "fairlearn MetricFrame": fairlearn}, 1 if quick else max(2, rounds // 2),
                       warm=False)
        record(f"fairness table + DPD CI, {n:,} rows, {' x '.join(attrs)}", times, "suite", [],
               floor_label="factorize (bytes) + bincount",
               extra_peers={f"fairlearn MetricFrame ({len(peer['floor'])} round(s))":
                            (ratio(peer, "fairlearn MetricFrame"), ratio(peer, "fairlearn MetricFrame", wall=True))})


# ---- the robustness check as a whole ---------------------------------------------------------------

def bench_robustness(rounds: int, quick: bool) -> None:
    from audit.context import Context
    from checks.robustness.adversarial import AdversarialRobustness
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    print("robustness.adversarial as a whole (the digits demo's PGD configuration)", flush=True)
    ds = load_fixture_dataset("digits", "test")
    model = load_fixture_model("digits-cnn", "cpu")
    params = AdversarialRobustness.Params(attack="pgd", norm="linf", eps=[0.02, 0.05, 0.1], steps=20, n_samples=256)
    state: dict[str, Any] = {}

    def suite() -> None:
        ctx = Context.from_objects({"test": ds}, model)
        ctx.logits("test")
        f0, b0 = ctx.forward_samples, ctx.backward_samples
        m = AdversarialRobustness().run(ctx, params)
        state["passes"] = (ctx.forward_samples - f0, ctx.backward_samples - b0)
        state["own"] = next(e for e in m.evidence if e.get("title") == "Passes and cost")["note"]

    suite()
    fwd, bwd = state["passes"]
    x = torch.as_tensor(ds.x)
    sizes = [(min(256, bwd - s), True) for s in range(0, bwd, 256)] + \
            [(min(256, fwd - bwd - s), False) for s in range(0, fwd - bwd, 256)]
    xb = bank(x, sizes)
    times = measure({"suite": suite, "floor": lambda: replay(model.module, xb, sizes)}, max(3, rounds - 2),
                    warm=False)
    own = state["own"].split("The check took")[-1].strip()
    record("robustness.adversarial (PGD, 3 eps, FGSM, 10 noise draws), 256 samples", times, "suite", [],
           floor_label=f"{bwd:,} fwd+bwd + {fwd - bwd:,} fwd rows in batches of 256",
           note=f"its own estimate: {own}")


# ---- whole audits --------------------------------------------------------------------------------

def bench_scale(rounds: int, quick: bool, sizes: str) -> None:
    import bench_scale

    print(f"audit run, tabular, four checks, at {sizes} rows (fresh processes; wall-clock seconds)", flush=True)
    for size in sizes.split(","):
        r = bench_scale.bench(int(float(size)), 2 if quick and float(size) >= 1e6 else max(2, rounds // 2),
                              None, 256)
        ROWS.append({"work": f"audit run, 4 checks, {r['n']:,} rows", "floor_s": r["floor"],
                     "floor": "load + inference + count tables + row hashes",
                     "suite": {"audit run": (r["ratio"], r["ratio"])}, "peers": {}, "rounds": 2, "load": r["load"],
                     "note": f"audit {r['duration']:.2f} s (process {r['wall']:.1f} s incl. imports)"})
        top = sorted({**{f"check {k}": v for k, v in r["checks"].items()}, **r["timings"]}.items(),
                     key=lambda kv: -kv[1])[:5]
        print(f"  N={r['n']:,}: audit {r['duration']:.2f} s, floor {r['floor']:.2f} s "
              f"({', '.join(f'{k} {v:.2f}' for k, v in r['floor_parts'].items())}): {r['ratio']:.2f}x; "
              f"load {r['load']:.2f}; top: {', '.join(f'{k} {v:.2f} s' for k, v in top)}", flush=True)


def bench_passes() -> None:
    import subprocess

    print("The digits demo: passes run / passes needed", flush=True)
    out = subprocess.run([sys.executable, str(HERE / "bench_passes.py")], capture_output=True, text=True)
    print("  " + "\n  ".join(out.stdout.strip().splitlines()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per row (default 5, --quick 5)")
    ap.add_argument("--only", default=None)
    ap.add_argument("--sizes", default=None, help="audit run sizes (default 1e4,1e5,1e6)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("AUDIT_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "audit-bench-cache"))
    rounds = args.repeats or 5
    only = set(args.only.split(",")) if args.only else {"ig", "shap", "pgd", "fairness", "robustness", "scale"} | (
        set() if args.quick else {"passes"})
    t0 = time.perf_counter()
    print(f"{versions()}\n{platform.platform()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {load():.2f}; {rounds} interleaved rounds per row{' (quick)' if args.quick else ''}\n",
          flush=True)
    if only & {"ig", "shap"}:
        bench_attribution(rounds, args.quick)
    if "pgd" in only:
        bench_pgd(rounds, args.quick)
    if "fairness" in only:
        bench_fairness(rounds, args.quick)
    if "robustness" in only:
        bench_robustness(rounds, args.quick)
    if "scale" in only:
        bench_scale(rounds, args.quick, args.sizes or "1e4,1e5,1e6")
    if "passes" in only:
        bench_passes()
    print(f"\nSummary ({time.perf_counter() - t0:.0f} s; ratios: CPU time, median over interleaved rounds; "
          f"load average now {load():.2f})")
    print(f"| work | floor | floor s | peers / floor | suite / floor | load |\n|---|---|---|---|---|---|")
    for r in ROWS:
        peers = ", ".join(f"{k} {c:.2f}x" for k, (c, _) in r["peers"].items()) or "-"
        suite = ", ".join(f"{c:.2f}x" + (f" ({k})" if len(r["suite"]) > 1 else "") for k, (c, _) in
                          r["suite"].items())
        print(f"| {r['work']} | {r['floor']} | {r['floor_s']:.3f} | {peers} | **{suite}** | {r['load']:.2f} |")


if __name__ == "__main__":
    main()
