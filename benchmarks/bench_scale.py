"""`audit run` on a tabular audit (four checks: data.integrity, performance.classification,
performance.calibration, fairness.group over sex x race) at 10^4 ... 10^6 rows (10^7 with
--sizes), beside its floor: one inference pass over the test rows plus the O(N) tables the
checks cannot avoid (confusion counts, calibration bin counts, group codes and their
counts, and the row hashes data.integrity compares), timed in a fresh process the same way.

    python benchmarks/bench_scale.py [--sizes 1e4,1e5,1e6] [--repeats 3] [--code DIR]

Both run with one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), interleaved,
`--repeats` times; medians are printed with the load average. `--code DIR` runs the audit
from another checkout of the suite (PYTHONPATH=DIR): the "before" column. Where the time
went is taken from results.json (per-check durations, load and inference timings).

The data: an Adult-like table (14 numeric features), a binary label, sex and race as
string arrays in the npz (as a user's file holds them); train and test have N rows each;
the model is a small MLP saved as TorchScript (it loads without a factory).

`--streamed`: the same audit on parquet files read in row groups (`execution: {engine:
streaming}`, or `--engine ray`), at 10^5 ... 10^7 test rows (the train set, which only
data.integrity reads, keeps `--train-rows`). Each size prints the audit's wall time and
peak RSS (the audit process's own ru_maxrss, which it prints as it exits), its rows per second, and beside it a bare
streaming inference loop over the same file (pyarrow row batches into the model, nothing
kept but the predicted class): the floor for a pass that must read every row.

    python benchmarks/bench_scale.py --streamed [--sizes 1e5,1e6,1e7] [--repeats 3] [--engine streaming|ray]

`--images N`: an image folder of N generated 16x16 grayscale PNGs (two class folders),
audited streamed (decoded in batches) by a small CNN with performance.classification,
performance.calibration and data.integrity; wall time and peak RSS.

    python benchmarks/bench_scale.py --images 100000

Measured (2026-11-30, third session, 2 cores, load average 0.9-1.2). This machine's speed
drifts by ~30% within minutes (the same bare loop took 4.5 s and 6.8 s a minute apart), so
single runs mislead; `--repeats 3` (interleaved), medians, on the same parquet files as
before and a model that now fits the label (accuracy 0.71; the earlier 2-layer MLP
predicted one class whatever the input). Each child starts with the files in the page
cache (`warm_files`), and the bare loop's own time excludes its one-time costs:

    N        audit      peak RSS   bare loop   audit/bare (range)   pass / loop alone
    10^5      5.10 s    416 MiB     3.76 s     1.49x (1.21-1.50x)   1.62x (1.58-1.70x)
    10^6      6.36 s    446 MiB     4.68 s     1.41x (1.36-1.59x)   1.57x (1.48-1.88x)
    10^7     17.21 s    679 MiB    10.60 s     1.59x (1.52-1.62x)   1.22x (1.19-1.23x)

Two earlier runs of three repetitions this session (before `warm_files`) gave medians of
1.40x, 1.22x, 1.54x and 1.40x, 1.54x, 1.46x; the second session's were 1.78x, 1.82x and
1.79x (10^7: 14.43 s, 724 MiB, bare 7.95 s). At 10^5 and 10^6 the pass's own fixed costs
(its thread, the first row hashes' lazy imports) weigh on a loop of 0.1-0.7 s; at 10^7
the pass's per-row cost beyond the loop is the block hashing (SHA-256 of the inputs and
a hash per row, on the second thread, which still slows the first by ~0.6-0.8 s each
on this VM) and reading into blocks. With a model costlier per row (`--hidden 256
--layers 3`, ~4 us a row against ~0.7 us): 10^6 1.42x (1.36-1.47x), 10^7 59.2 s against
55.0 s, 1.08x (1.05-1.11x), the pass 0.98x the loop alone: the audit's cost beyond the
loop is per row about that of the small model, so the ratio falls as the model grows.

What changed: an audit no longer imports scipy.stats (1.3 s: it builds every distribution's
docstring; the binomial, normal, t, chi-square and Clopper-Pearson functions now call the
scipy.special kernels scipy.stats itself calls, equal bit for bit) nor scipy.optimize when
every class's most frequent prediction is its own; rich.progress is imported only when
progress is shown; the registry keeps its scan of the check modules (0.25 s a command);
inference converts each block to one tensor and slices it per batch (the model's loop over a
block is now within ~5% of a bare loop's, from ~20%); data.integrity scans in smaller chunks; the
children write .pyc files, as an installed suite has them (this machine's shell sets
PYTHONDONTWRITEBYTECODE, which made every run compile the suite, ~0.3 s). Every metric,
interval and status is identical to the previous version's (compared at 10^5: 1,139 values
of results.json, timings aside).

Peak RSS 10^6 -> 10^7: x1.52 (x1.51-x1.54 over the pairs of runs; x1.53 in each earlier run),
where the second session measured x1.45: both peaks fell (724 -> 679 MiB at 10^7, 499 ->
446 MiB at 10^6), but the fixed part fell more (not
importing scipy.stats saves ~45 MiB at every size), so the ratio rose. What grows with N is
unchanged, ~25 B/row at the peak, which is now data.integrity (logits 8 B/row, row hashes 8,
their sorted 32-bit prefixes 4, label, prediction and two sensitive codes 1 each); the ROC
AUC interval's moment is as high (logits, sorted scores 8 B/row, the codes).

Time beyond the bare loop at 10^7 (4.5-6.6 s over the runs): fixed ~1 s (the suite's
imports beyond torch, pyarrow and pandas, which pyarrow's to_numpy imports in the bare loop
too: scipy.special 0.3 s, the suite's own modules 0.4 s; the spec, the report), loading the
labels and sensitive columns 0.7 s, the pass ~1.2x the loop alone (1.5-2 s), and the checks
2.1-2.8 s (performance.classification ~1.1 s, of which DeLong's placements of 10^7 sorted
scores 0.7 s and the probabilities 0.3 s; data.integrity's hash index 0.5-0.8 s;
calibration 0.6 s; fairness 0.15 s). What could still move to the second core: the checks'
per-chunk reductions (calibration's cells, the log losses) and the label columns, during
the pass (~1.3 s); but on this VM work on the second core slows the first (an ablation of
the pass: SHA-256 of the blocks +0.8 s, row hashes +0.6 s to the first thread's time, though
neither holds the GIL for long), so the gain is uncertain.
--images 100000: 45.2 s, 576 MiB peak (second session).
Ray (--engine ray, MLP 1024x4, 2x10^5 rows, load 0.6-1.3; two runs each, interleaved): the
pass takes 25.9 and 25.5 s with one worker, 20.6 and 19.7 s with two (x1.27; wall 41.2 and
39.0 s -> 33.3 and 33.5 s). Two cores carry the two actors, the driver and Ray's own
processes. The train set's pass (no model, 10^5 rows) now runs on the driver: starting an
actor pool for it cost ~5 s. The second session measured x1.48 (22.8 -> 15.4 s).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = 14
ROOT = Path(__file__).resolve().parent.parent

# the four checks of the issue, shared by the in-memory and the streamed spec
CHECKS = """checks:
  - {{id: integrity, check: data.integrity, thresholds: {{train_test_overlap: {{max: 0.01}}}}}}
  - {{id: heldout, check: performance.classification, thresholds: {{accuracy: {{min: 0.7}}, roc_auc: {{min: 0.7}}}}}}
  - {{id: calibration, check: performance.calibration, thresholds: {{ece: {{max: 0.1}}}}}}
  - {{id: fairness, check: fairness.group, sensitive: [sex, race], min_group_size: 30,
      thresholds: {{demographic_parity_difference: {{max: 0.2}}}}}}
"""

SPEC = """name: Scale benchmark ({n:,} rows)
seed: 0
device: cpu
model:
  path: model.pt
  classes: ["<=50K", ">50K"]
  batch_size: {batch}
data:
  train: {{path: train.npz}}
  test: {{path: test.npz}}
""" + CHECKS

FLOOR = r"""
import sys, time, json
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
folder, batch = sys.argv[1], int(sys.argv[2])
t = {}
t0 = time.perf_counter()
test, train = np.load(folder + "/test.npz"), np.load(folder + "/train.npz")
x, y, sex, race = test["x"], test["y"], test["sex"], test["race"]
xt = train["x"]
t["load"] = time.perf_counter() - t0
t0 = time.perf_counter()
model = torch.jit.load(folder + "/model.pt").eval()
outs = []
with torch.inference_mode():
    for s in range(0, len(x), batch):
        outs.append(model(torch.from_numpy(x[s:s + batch])))
logits = torch.cat(outs).numpy()
t["inference"] = time.perf_counter() - t0
t0 = time.perf_counter()
pred = logits.argmax(1)
e = np.exp(logits - logits.max(1, keepdims=True))
top = (e / e.sum(1, keepdims=True)).max(1)
cm = np.bincount(y * 2 + pred, minlength=4)
bins = np.bincount(np.minimum((top * 15).astype(np.int64), 14) * 2 + (pred == y), minlength=30)
codes = [np.unique(a, return_inverse=True)[1].ravel() for a in (sex, race)]
g = codes[0] * (codes[1].max() + 1) + codes[1]
cells = np.bincount(g * 4 + y * 2 + pred)
t["count tables"] = time.perf_counter() - t0
t0 = time.perf_counter()
for a in (x, xt):
    w = np.ascontiguousarray(a).view(np.uint8).reshape(len(a), -1)
    w = np.concatenate([w, np.zeros((len(a), (-w.shape[1]) % 8), np.uint8)], 1).view(np.uint64)
    h = pd.util.hash_pandas_object(pd.DataFrame(w, copy=False), index=False).to_numpy()
    np.unique(h, return_index=True)
t["row hashes"] = time.perf_counter() - t0
print(json.dumps(t))
"""


def make_data(folder: Path, n: int, seed: int = 0) -> None:
    import torch

    for split, s in (("test", seed), ("train", seed + 1)):
        rng = np.random.default_rng(s)
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        x[:, 0] = np.round(rng.uniform(17, 90, n))  # an age-like whole-number column
        sex = np.where(rng.random(n) < 0.67, "Male", "Female")
        race = rng.choice(["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"], n,
                          p=[0.85, 0.09, 0.03, 0.01, 0.02])
        logit = x[:, 1] + 0.5 * x[:, 2] - 0.8 + 0.4 * (sex == "Male")
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        np.savez(folder / f"{split}.npz", x=x, y=y, classes=np.array(["<=50K", ">50K"]), sex=sex, race=race)
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 2))
    with torch.no_grad():  # a model that roughly fits the label, so metrics are non-trivial
        mlp[0].weight[:2].zero_()
        mlp[0].weight[0, 1], mlp[0].weight[1, 2] = 1.0, 0.5
        mlp[4].weight.zero_()
        mlp[4].weight[1, 0] = 2.0
    torch.jit.script(mlp.eval()).save(str(folder / "model.pt"))


def env_for(code: Path | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    # as an installed suite runs: pip writes the .pyc files at install; a shell with
    # PYTHONDONTWRITEBYTECODE (this machine's) would compile the suite's ~90 modules every run
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["AUDIT_CACHE_DIR"] = env.get("AUDIT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "audit-bench-cache"))
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def run_audit(folder: Path, code: Path | None) -> dict:
    out = folder / "report"
    cmd = [sys.executable, "-c", ("import sys, torch; torch.set_num_threads(1); from audit.cli import main; "
                                  "sys.exit(main(sys.argv[1:]))"), "run", str(folder / "spec.yaml"), "--out", str(out), "--format", "json",
           "--quiet", "--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env_for(code), capture_output=True, text=True, cwd=folder, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"audit run exited {proc.returncode}: {proc.stderr[-2000:]}")
    res = json.loads((out / "results.json").read_text())
    prov = res["provenance"]
    return {"wall": wall, "duration": prov["duration_s"], "timings": prov.get("timings", {}),
            "checks": {c["id"]: c["duration_s"] for c in res["checks"]},
            "status": {c["id"]: c["status"] for c in res["checks"]}}


def run_floor(folder: Path, batch: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", FLOOR, str(folder), str(batch)], env=env_for(None),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(n: int, repeats: int, code: Path | None, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, n)
        (folder / "spec.yaml").write_text(SPEC.format(n=n, batch=batch))
        audits, floors, loads = [], [], []
        for _ in range(repeats):  # interleaved: a busy machine slows both alike
            loads.append(os.getloadavg()[0])
            audits.append(run_audit(folder, code))
            floors.append(run_floor(folder, batch))
    med = statistics.median
    floor_parts = {k: med(f[k] for f in floors) for k in floors[0]}
    floor = sum(floor_parts.values())
    dur = med(a["duration"] for a in audits)
    checks = {k: med(a["checks"][k] for a in audits) for k in audits[0]["checks"]}
    timings = {k: med(a["timings"].get(k, 0.0) for a in audits) for k in audits[0]["timings"]
               if not k.startswith("check:")}
    return {"n": n, "wall": med(a["wall"] for a in audits), "duration": dur, "floor": floor,
            "floor_parts": floor_parts, "checks": checks, "timings": timings, "load": med(loads),
            "status": audits[-1]["status"], "ratio": dur / floor}


# ---- streamed: parquet in row groups ---------------------------------------------------------
STREAM_SPEC = """name: Scale benchmark, streamed ({n:,} rows)
seed: 0
device: cpu
execution: {{engine: {engine}, num_workers: {workers}}}
model:
  path: model.pt
  batch_size: {batch}
data:
  train: {{path: train.parquet, label: label, sensitive: [sex, race]}}
  test: {{path: test.parquet, label: label, sensitive: [sex, race]}}
""" + CHECKS

BARE_LOOP = r"""
import sys, time, json
import numpy as np, pyarrow.parquet as pq, torch
torch.set_num_threads(1)
path, batch = sys.argv[1], int(sys.argv[2])
model = torch.jit.load(sys.argv[3]).eval()
f = pq.ParquetFile(path, pre_buffer=False)  # as the suite reads it: bounded memory
cols = [c for c in f.schema_arrow.names if c.startswith("f")]
n, pos = 0, 0
with torch.inference_mode():
    # one-time costs out of the loop's time, as the audit pays them before its pass:
    # TorchScript optimises on its first calls; pyarrow's first to_numpy imports pandas (~0.5 s)
    for _ in range(3):
        model(torch.zeros(batch, len(cols)))
    next(pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=1024, columns=cols)).column(0).to_numpy()
    t0 = time.perf_counter()  # the loop alone
    for rb in f.iter_batches(batch_size=65536, columns=cols):
        x = np.stack([rb.column(i).to_numpy() for i in range(len(cols))], axis=1).astype(np.float32)
        for s in range(0, len(x), batch):
            pos += int(model(torch.from_numpy(x[s:s + batch])).argmax(1).sum())
        n += len(x)
print(json.dumps({"rows": n, "seconds": time.perf_counter() - t0}))
"""


def write_parquet(path: Path, n: int, seed: int, chunk: int = 500_000) -> None:
    """The Adult-like table of `make_data`, written in row groups so that 10^7 rows never
    sit in this process's memory either."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = rng.normal(size=(m, FEATURES)).astype(np.float32)
        x[:, 0] = np.round(rng.uniform(17, 90, m))
        sex = np.where(rng.random(m) < 0.67, "Male", "Female")
        race = rng.choice(["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"], m,
                          p=[0.85, 0.09, 0.03, 0.01, 0.02])
        logit = x[:, 1] + 0.5 * x[:, 2] - 0.8 + 0.4 * (sex == "Male")
        y = (rng.random(m) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        cols = {f"f{i}": x[:, i] for i in range(FEATURES)}
        table = pa.table({**cols, "sex": sex, "race": race, "label": y})
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table, row_group_size=100_000)
    if writer is not None:
        writer.close()


def make_model(path: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> None:
    import torch

    torch.manual_seed(seed)
    mods: list[torch.nn.Module] = [torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU()]
    for _ in range(layers - 1):
        mods += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    mods.append(torch.nn.Linear(hidden, 2))
    mlp = torch.nn.Sequential(*mods)
    with torch.no_grad():  # a model that roughly fits the label, so metrics are non-trivial:
        # hidden unit 0 carries relu(x1 + 0.5 x2) through every layer, class 1 when it is > 0.5
        mlp[0].weight[0].zero_()
        mlp[0].weight[0, 1], mlp[0].weight[0, 2], mlp[0].bias[0] = 1.0, 0.5, 0.0
        for layer in mlp[2:-1:2]:
            layer.weight[0].zero_()
            layer.weight[0, 0], layer.bias[0] = 1.0, 0.0
        mlp[-1].weight.zero_()
        mlp[-1].weight[1, 0] = 2.0
        mlp[-1].bias[0], mlp[-1].bias[1] = 0.0, -1.0
    torch.jit.script(mlp.eval()).save(str(path))


def warm_files(folder: Path) -> None:
    """Read the folder's data and model files once, so that each timed child starts with
    them in the page cache: this VM's host reclaims pages left untouched for a while, and
    whichever child ran first would otherwise read from disk for the one after it."""
    for path in sorted(folder.glob("*.parquet")) + sorted(folder.glob("*.pt")):
        with open(path, "rb") as fh:
            while fh.read(1 << 23):
                pass


def timed_child(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, str, str]:
    """(wall seconds, peak RSS in MiB, exit code, stderr tail, stdout) of one child process
    run with CHILD_RSS in front: its own peak, not the largest of every child this script ran."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak = float("nan")
    for line in (out or "").splitlines():
        if line.startswith("PEAK_RSS_KB="):
            peak = int(line.split("=", 1)[1]) / 1024
    return wall, peak, proc.returncode, (err or "")[-2000:], out or ""


# the child reports its own peak RSS (ru_maxrss of RUSAGE_SELF, KiB on Linux) as it exits
CHILD_RSS = ("import atexit, resource; atexit.register(lambda: print('PEAK_RSS_KB=%d' % "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)); ")


def bench_streamed(n: int, engine: str, workers: int, batch: int, train_rows: int, root: Path,
                   hidden: int = 64, layers: int = 2) -> dict:
    folder = root / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "test.parquet").exists():
        write_parquet(folder / "test.parquet", n, 0)
        write_parquet(folder / "train.parquet", train_rows, 1)
    model = f"model-{hidden}x{layers}.pt"
    if not (folder / model).exists():
        make_model(folder / model, hidden=hidden, layers=layers)
    (folder / "model.pt").unlink(missing_ok=True)
    (folder / "model.pt").symlink_to(folder / model)
    (folder / "spec.yaml").write_text(STREAM_SPEC.format(n=n, batch=batch, engine=engine, workers=workers))
    env = env_for(None)
    out = folder / "report"
    cmd = [sys.executable, "-c", CHILD_RSS + "import sys, torch; torch.set_num_threads(1); "
           "from audit.cli import main; code = main(sys.argv[1:]); sys.stdout.flush(); sys.exit(code)",
           "run", str(folder / "spec.yaml"), "--out", str(out), "--format", "json", "--quiet", "--force"]
    load = os.getloadavg()[0]
    warm_files(folder)
    wall, peak, code, err, _ = timed_child(cmd, env, folder)
    if code not in (0, 1):
        raise RuntimeError(f"audit run exited {code}: {err}")
    res = json.loads((out / "results.json").read_text())
    warm_files(folder)
    bare_wall, bare_peak, code, err, out = timed_child(
        [sys.executable, "-c", CHILD_RSS + BARE_LOOP, str(folder / "test.parquet"), str(batch),
         str(folder / "model.pt")], env, folder)
    if code != 0:
        raise RuntimeError(f"bare loop exited {code}: {err}")
    ex = res["provenance"].get("execution", {})
    # the loop's own seconds (model load and loop, after the imports) beside the audit's pass
    loop_s = next(json.loads(line)["seconds"] for line in out.splitlines() if line.startswith("{"))
    return {"n": n, "engine": engine, "wall": wall, "peak_mib": peak, "rows_s": n / wall, "loop_s": loop_s,
            "bare_wall": bare_wall, "bare_peak_mib": bare_peak, "bare_rows_s": n / bare_wall, "load": load,
            "status": {c["id"]: c["status"] for c in res["checks"]},
            "pass_s": ex.get("datasets", {}).get("test", {}).get("seconds"),
            "checks": {c["id"]: round(c["duration_s"], 2) for c in res["checks"]}}


def main_streamed(args: argparse.Namespace) -> None:
    print(f"streamed parquet, engine {args.engine}" + (f" ({args.workers} workers)" if args.engine == "ray" else "")
          + f", MLP {args.hidden}x{args.layers}, one thread, batch {args.batch}, train rows {args.train_rows:,}, "
          f"{args.repeats} interleaved repetition(s); load average {os.getloadavg()[0]:.2f}")
    print(f"{'N':>12} {'wall s':>8} {'peak MiB':>9} {'rows/s':>10} | {'bare s':>7} {'bare MiB':>9} "
          f"{'bare rows/s':>12} | audit/bare time | load")
    sizes = [int(float(size)) for size in args.sizes.split(",")]
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    for _ in range(args.repeats):  # interleaved: this machine's speed drifts within minutes
        for n in sizes:
            r = bench_streamed(n, args.engine, args.workers, args.batch, args.train_rows, root, args.hidden,
                               args.layers)
            runs[n].append(r)
            print(f"{r['n']:>12,} {r['wall']:8.1f} {r['peak_mib']:9.0f} {r['rows_s']:10,.0f} | {r['bare_wall']:7.1f} "
                  f"{r['bare_peak_mib']:9.0f} {r['bare_rows_s']:12,.0f} | {r['wall'] / r['bare_wall']:6.2f}x | "
                  f"{r['load']:.2f}", flush=True)
            print(f"    pass {r['pass_s']} s against the bare loop's own {r['loop_s']:.2f} s "
                  f"({r['pass_s'] / r['loop_s']:.2f}x); checks {r['checks']}; statuses {r['status']}", flush=True)
    med = statistics.median
    print("medians:")
    for n in sizes:
        ratios = [r["wall"] / r["bare_wall"] for r in runs[n]]
        passes = [r["pass_s"] / r["loop_s"] for r in runs[n]]
        print(f"{n:>12,}: audit {med(r['wall'] for r in runs[n]):.2f} s, peak {med(r['peak_mib'] for r in runs[n]):.0f} MiB,"
              f" bare {med(r['bare_wall'] for r in runs[n]):.2f} s; audit/bare {med(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}x over the repetitions); the pass against the loop alone "
              f"{med(passes):.2f}x ({min(passes):.2f}-{max(passes):.2f}x)")
    for a, b in itertools.pairwise(sizes):
        peaks = [rb["peak_mib"] / ra["peak_mib"] for ra in runs[a] for rb in runs[b]]
        extra = med(r["wall"] for r in runs[b]) - med(r["wall"] for r in runs[a])
        bare_extra = med(r["bare_wall"] for r in runs[b]) - med(r["bare_wall"] for r in runs[a])
        print(f"N {a:,} -> {b:,} ({b / a:.0f}x rows): peak RSS x{med(peaks):.2f} (x{min(peaks):.2f}-x{max(peaks):.2f} "
              f"over the pairs of runs); the audit adds {extra:.1f} s where the bare loop adds {bare_extra:.1f} s "
              f"({extra / bare_extra:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps([r for n in sizes for r in runs[n]], indent=1))


# ---- an image folder, decoded in batches ---------------------------------------------------------
IMAGE_SPEC = """name: Scale benchmark, image folder ({n:,} images)
seed: 0
device: cpu
execution: {{engine: {engine}, num_workers: {workers}}}
model:
  path: cnn.pt
  batch_size: {batch}
data:
  test: {{path: images}}
checks:
  - {{id: heldout, check: performance.classification, thresholds: {{accuracy: {{min: 0.7}}}}}}
  - {{id: calibration, check: performance.calibration, thresholds: {{ece: {{max: 0.1}}}}}}
  - {{id: integrity, check: data.integrity, train: test, thresholds: {{duplicate_fraction: {{max: 0.01}}}}}}
"""


def make_images(folder: Path, n: int, size: int = 16, seed: int = 0) -> None:
    """n PNGs in two class folders: noise, brighter on average for class 1."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in (0, 1):
        (folder / "images" / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % 2
        px = np.clip(rng.normal(100 + 40 * c, 40, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(px, mode="L").save(folder / "images" / str(c) / f"{i:07d}.png")
    import torch

    torch.manual_seed(seed)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with torch.no_grad():  # class 1 is brighter: a model that is mostly right
        cnn[0].weight.fill_(1.0 / 9)
        cnn[0].bias.zero_()
        cnn[4].weight.copy_(torch.tensor([[-1.0] * 8, [1.0] * 8]) * 2.0)
        cnn[4].bias.copy_(torch.tensor([7.5, -7.5]))  # class 1 above a mean intensity of ~0.47
    torch.jit.script(cnn.eval()).save(str(folder / "cnn.pt"))


def main_images(args: argparse.Namespace) -> None:
    n = int(float(args.images))
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench-images-")) / f"images{n}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "cnn.pt").exists():
        t0 = time.perf_counter()
        make_images(folder, n)
        print(f"generated {n:,} PNGs in {time.perf_counter() - t0:.1f} s")
    (folder / "spec.yaml").write_text(IMAGE_SPEC.format(n=n, batch=args.batch, engine=args.engine,
                                                        workers=args.workers))
    out = folder / "report"
    cmd = [sys.executable, "-c", CHILD_RSS + "import sys, torch; torch.set_num_threads(1); "
           "from audit.cli import main; code = main(sys.argv[1:]); sys.stdout.flush(); sys.exit(code)",
           "run", str(folder / "spec.yaml"), "--out", str(out), "--format", "json", "--quiet", "--force"]
    load = os.getloadavg()[0]
    wall, peak, code, err, _ = timed_child(cmd, env_for(None), folder)
    if code not in (0, 1):
        raise RuntimeError(f"audit run exited {code}: {err}")
    res = json.loads((out / "results.json").read_text())
    ex = res["provenance"].get("execution", {})
    print(f"image folder: {n:,} PNGs 16x16, engine {args.engine}: wall {wall:.1f} s, peak RSS {peak:.0f} MiB "
          f"({n / wall:,.0f} images/s), load {load:.2f}")
    print(f"    execution {json.dumps(ex.get('datasets', {}).get('test', {}))}")
    print(f"    checks {[(c['id'], c['status'], round(c['duration_s'], 2)) for c in res['checks']]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="model.batch_size of the spec and the floor")
    ap.add_argument("--code", type=Path, default=None, help="run the audit from this checkout (before/after)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--streamed", action="store_true", help="parquet read in row groups, peak RSS, bare loop")
    ap.add_argument("--engine", default="streaming", choices=["streaming", "ray"], help="with --streamed")
    ap.add_argument("--workers", type=int, default=2, help="with --streamed --engine ray")
    ap.add_argument("--train-rows", type=int, default=100_000, help="with --streamed: rows of train.parquet")
    ap.add_argument("--hidden", type=int, default=64, help="with --streamed: the MLP's width")
    ap.add_argument("--layers", type=int, default=2, help="with --streamed: the MLP's hidden layers")
    ap.add_argument("--workdir", default=None, help="with --streamed: keep the generated files here")
    ap.add_argument("--images", default=None, help="audit an image folder of this many generated PNGs")
    args = ap.parse_args()
    if args.images:
        main_images(args)
        return
    if args.streamed:
        if args.sizes == "1e4,1e5,1e6":
            args.sizes = "1e5,1e6,1e7"
        main_streamed(args)
        return
    import torch

    print(f"torch {torch.__version__}, numpy {np.__version__}, one thread; audit code: {args.code or ROOT}; "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = []
    for size in args.sizes.split(","):
        r = bench(int(float(size)), args.repeats, args.code, args.batch)
        rows.append(r)
        fp = ", ".join(f"{k} {v:.2f}" for k, v in r["floor_parts"].items())
        print(f"N={r['n']:>10,}: audit run {r['duration']:8.2f} s (process {r['wall']:.2f} s) | floor "
              f"{r['floor']:6.2f} s ({fp}) | audit / floor {r['ratio']:5.1f}x | load {r['load']:.2f}")
        where = {**{f"check {k}": v for k, v in r["checks"].items()}, **r["timings"]}
        top = sorted(where.items(), key=lambda kv: -kv[1])[:8]
        print("    where the time went: " + ", ".join(f"{k} {v:.2f} s" for k, v in top))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
