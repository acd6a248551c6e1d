"""Time the fairness gap CIs of `fairness.group` at N = 10^4 and 10^6 rows.

The check resamples the group x label x prediction count cells (10,000 multinomial
resamples), so the CI cost should not grow with N; only building the count table (one
bincount) is O(N). Also timed: the fairlearn MetricFrame point estimates (O(N), once)
and, as the plain reference, a row bootstrap (index resampling, fewer resamples,
extrapolated to 10,000).

    python benchmarks/bench_fairness.py [--row-resamples 50] [--intersectional]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from audit import stats
from audit.dataset import Dataset
from checks.fairness.group_gaps import bootstrap_fairness, count_rates, gaps, group_counts, make_groups, group_rates


def synthetic(n: int, attrs: list[str], seed: int = 0) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    sex = np.where(rng.random(n) < 0.5, "Female", "Male")
    race = rng.choice(["White", "Black", "Asian", "Other", "Native"], n, p=[0.7, 0.15, 0.08, 0.05, 0.02])
    y = (rng.random(n) < np.where(sex == "Male", 0.3, 0.12)).astype(np.int64)
    pred = np.where(rng.random(n) < 0.85, y, 1 - y)
    ds = Dataset("bench", np.zeros((n, 1), np.float32), y, "tabular", ["<=50K", ">50K"],
                 sensitive={"sex": sex, "race": race})
    make_groups(ds, attrs)  # validates
    return ds, pred


def tabulate(ds: Dataset, pred: np.ndarray, attrs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The O(N) part, done once and shared with the point estimates: group codes and counts."""
    groups = make_groups(ds, attrs)
    counts = group_counts(groups.codes, ds.y, pred, len(groups.keys))
    return counts, np.bincount(groups.codes) >= 30


def count_ci(counts: np.ndarray, suff: np.ndarray) -> dict:
    gap_ci, _ = bootstrap_fairness(counts, suff, confidence=0.95, rng=np.random.default_rng(1))
    return gap_ci


def row_ci(ds: Dataset, pred: np.ndarray, attrs: list[str], resamples: int) -> tuple[float, float] | None:
    groups = make_groups(ds, attrs)
    n, g = len(ds), len(groups.keys)
    rng = np.random.default_rng(2)
    draws = np.empty(resamples)
    for b in range(resamples):  # one index vector at a time: (resamples, N) would not fit at 10^6
        i = rng.integers(0, n, n)
        draws[b] = gaps(count_rates(group_counts(groups.codes[i], ds.y[i], pred[i], g)))["demographic_parity_difference"]
    return stats.percentile_ci(draws, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row-resamples", type=int, default=50)
    ap.add_argument("--intersectional", action="store_true", help="sex x race (10 groups) instead of sex")
    args = ap.parse_args()
    attrs = ["sex", "race"] if args.intersectional else ["sex"]
    print(f"fairness.group CIs over {' x '.join(attrs)}: count bootstrap {stats.COUNT_RESAMPLES} resamples; "
          f"row bootstrap {args.row_resamples} resamples (extrapolated to {stats.COUNT_RESAMPLES})")
    times = {}
    for n in (10**4, 10**6):
        ds, pred = synthetic(n, attrs)
        count_ci(*tabulate(*synthetic(1000, attrs), attrs))  # warm-up
        t0 = time.perf_counter()
        counts, suff = tabulate(ds, pred, attrs)
        t_tab = time.perf_counter() - t0
        t0 = time.perf_counter()
        ci = count_ci(counts, suff)["demographic_parity_difference"]
        t_ci = time.perf_counter() - t0
        times[n] = (t_tab, t_ci)
        groups = make_groups(ds, attrs)
        t0 = time.perf_counter()
        group_rates(counts)
        t_point = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = row_ci(ds, pred, attrs, args.row_resamples)
        t_rows = time.perf_counter() - t0
        t_rows_full = t_rows * stats.COUNT_RESAMPLES / args.row_resamples
        print(f"N={n:>9,}: CI resampling {t_ci:6.3f} s + tabulation {t_tab:6.3f} s (O(N), shared) "
              f"DPD CI [{ci[0]:.4f}, {ci[1]:.4f}] | point rates {t_point:6.3f} s | "
              f"row bootstrap {t_rows:6.2f} s for {args.row_resamples} (~{t_rows_full:7.1f} s for "
              f"{stats.COUNT_RESAMPLES}) CI [{rows[0]:.4f}, {rows[1]:.4f}] | "
              f"row / (count+tab) ~{t_rows_full / (t_ci + t_tab):,.0f}x")
    (tab4, ci4), (tab6, ci6) = times[10**4], times[10**6]
    print(f"10^6 / 10^4 rows (rows grew 100x): CI resampling {ci6 / ci4:.1f}x, "
          f"CI resampling + tabulation {(ci6 + tab6) / (ci4 + tab4):.1f}x")


if __name__ == "__main__":
    main()
