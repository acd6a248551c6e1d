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
"""

from __future__ import annotations

import argparse
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
checks:
  - {{id: integrity, check: data.integrity, thresholds: {{train_test_overlap: {{max: 0.01}}}}}}
  - {{id: heldout, check: performance.classification, thresholds: {{accuracy: {{min: 0.7}}, roc_auc: {{min: 0.7}}}}}}
  - {{id: calibration, check: performance.calibration, thresholds: {{ece: {{max: 0.1}}}}}}
  - {{id: fairness, check: fairness.group, sensitive: [sex, race], min_group_size: 30,
      thresholds: {{demographic_parity_difference: {{max: 0.2}}}}}}
"""

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
    env["AUDIT_CACHE_DIR"] = env.get("AUDIT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "audit-bench-cache"))
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def run_audit(folder: Path, code: Path | None) -> dict:
    out = folder / "report"
    cmd = [sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); from audit.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "run", str(folder / "spec.yaml"), "--out", str(out), "--format", "json",
           "--quiet", "--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env_for(code), capture_output=True, text=True, cwd=folder)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="model.batch_size of the spec and the floor")
    ap.add_argument("--code", type=Path, default=None, help="run the audit from this checkout (before/after)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
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
