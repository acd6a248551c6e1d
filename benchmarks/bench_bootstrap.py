"""Time the bootstrap CI of accuracy: the confusion-matrix count bootstrap (10,000
resamples, what performance.classification uses) against a naive row bootstrap (numpy
index resampling, fewer resamples, extrapolated per resample), at N = 10^4 and 10^6.
Also the weight bootstrap of ROC AUC (2,000 resamples) at N = 10^4 for scale.

    python benchmarks/bench_bootstrap.py [--classes 10] [--row-resamples 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from audit import stats
from checks.performance.classification import RocAuc


def count_bootstrap(y: np.ndarray, pred: np.ndarray, k: int, rng: np.random.Generator):
    cm = stats.confusion_counts(y, pred, k)  # the O(N) part, included in the timing
    return stats.bootstrap_counts(cm, stats.cm_accuracy, confidence=0.95, rng=rng)


def row_bootstrap(correct: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float] | None:
    n = correct.size
    draws = np.empty(resamples)
    for b in range(resamples):  # one index vector at a time: (resamples, N) would not fit at 10^6
        draws[b] = correct[rng.integers(0, n, n)].mean()
    return stats.percentile_ci(draws, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--row-resamples", type=int, default=200)
    args = ap.parse_args()
    k = args.classes
    print(f"accuracy CI, {k} classes; count bootstrap {stats.COUNT_RESAMPLES} resamples, "
          f"row bootstrap {args.row_resamples} resamples (extrapolated to {stats.COUNT_RESAMPLES})")
    for n in (10**4, 10**6):
        rng = np.random.default_rng(0)
        y = rng.integers(0, k, n)
        pred = np.where(rng.random(n) < 0.9, y, rng.integers(0, k, n))
        count_bootstrap(y[:1000], pred[:1000], k, np.random.default_rng(1))  # warm-up
        t0 = time.perf_counter()
        counted = count_bootstrap(y, pred, k, np.random.default_rng(1))
        t_count = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = row_bootstrap((y == pred).astype(np.float64), args.row_resamples, np.random.default_rng(2))
        t_rows = time.perf_counter() - t0
        t_rows_full = t_rows * stats.COUNT_RESAMPLES / args.row_resamples
        print(f"N={n:>9,}: count bootstrap {t_count:8.3f} s  CI [{counted.ci[0]:.4f}, {counted.ci[1]:.4f}] | "
              f"row bootstrap {t_rows:7.2f} s for {args.row_resamples} "
              f"(~{t_rows_full:8.1f} s for {stats.COUNT_RESAMPLES}) CI [{rows[0]:.4f}, {rows[1]:.4f}] | "
              f"ratio ~{t_rows_full / t_count:,.0f}x")

    n = 10**4
    rng = np.random.default_rng(3)
    t = rng.random(n) < 0.5
    score = rng.normal(size=n) + t
    t0 = time.perf_counter()
    m = stats.bootstrap_weighted(RocAuc(score, t), n, confidence=0.95, rng=rng)
    print(f"weighted ROC AUC, N={n:,}, {stats.WEIGHT_RESAMPLES} resamples: {time.perf_counter() - t0:.2f} s "
          f"AUC {m.value:.4f} [{m.ci[0]:.4f}, {m.ci[1]:.4f}]")


if __name__ == "__main__":
    main()
