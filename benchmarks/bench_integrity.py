"""data.integrity's RowIndex on the hashes of a streamed audit: index both sets, find the
duplicates of the test set and the test rows that also occur in the train set.

    python benchmarks/bench_integrity.py [--rows 1e7] [--train-rows 1e6] [--repeats 1]

The data: N random uint64 test hashes with `--dups` rows copied from earlier rows and
`--shared` rows copied from the train set (M random hashes). Each row is one 8-byte word
equal to its hash (fetch reads it back from the hashes array), so the byte comparison
runs without holding any data beside the hashes. Prints the wall time and the
tracemalloc peak of what RowIndex allocates beyond the two hashes arrays (numpy reports
its allocations to tracemalloc), per test row. Run it from another checkout
(PYTHONPATH=DIR) for the "before" column.

Measured (2 cores shared with other jobs, load ~0.9), N = 10^7, M = 10^6, 20,000 copies,
10,000 shared rows: before (pd.factorize hash table, a per-row `rep`, an unchunked
searchsorted of 10^7 random queries) 14.8 s, peak 590 MiB (61.9 B/row); after (one sorted
copy per set, chunked lookups behind a bucket table) 0.97-1.20 s, peak 100 MiB (10.5 B/row:
the sorted copies, 8.8 B/row, and chunks of bounded size; 1.3 s at load average 4).
Mostly copies (N = 2x10^6, --dups 1000000 --shared 500000): before 3.2 s, 101 MiB; after
1.6 s, 76 MiB (the rows holding a repeated value are gathered: O(those rows) temporaries).
Sorting the hashes' top 32 bits instead of the whole hash (2026-11-30, load ~1): 0.67 s,
peak 58 MiB (6.0 B/row); about 2 x 10^4 rows share a prefix by chance at 10^7 and are
told apart by their full hash. Repeated prefixes compared in chunks and scans of 2^18
rows (2026-11-30, second session): 0.40 s, peak 48 MiB (5.1 B/row).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from checks.data.integrity import RowIndex


def synthetic(n: int, m: int, dups: int, shared: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    train = rng.integers(0, 2**64, m, dtype=np.uint64, endpoint=False)
    at = rng.choice(n, dups + shared, replace=False)
    copies, leaks = at[:dups], at[dups:]
    test[copies] = test[rng.integers(0, n, dups)]  # a copy of some other row (earlier or later)
    test[leaks] = train[rng.integers(0, m, shared)]
    return test, train


def index(h: np.ndarray) -> RowIndex:
    words = h.reshape(-1, 1)  # the row's bytes are its hash: nothing held beside it
    return RowIndex.from_hashes(h, lambda i: words[i], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--train-rows", type=float, default=1e6)
    ap.add_argument("--dups", type=int, default=20_000)
    ap.add_argument("--shared", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    n, m = int(a.rows), int(a.train_rows)
    test, train = synthetic(n, m, a.dups, a.shared)
    for _ in range(a.repeats):
        tracemalloc.start()
        t0 = time.perf_counter()
        idx, tidx = index(test), index(train)
        t1 = time.perf_counter()
        dup_rows, dup_of = idx.duplicates()
        t2 = time.perf_counter()
        hit, where = tidx.find(idx)
        t3 = time.perf_counter()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"N={n:.0e} M={m:.0e}: index {t1 - t0:.2f} s, duplicates {t2 - t1:.2f} s, find {t3 - t2:.2f} s, "
              f"total {t3 - t0:.2f} s; tracemalloc peak {peak / 2**20:.0f} MiB ({peak / n:.1f} B/test row); "
              f"{dup_rows.size} duplicates, {hit.size} rows in train")
        del idx, tidx, dup_rows, dup_of, hit, where


if __name__ == "__main__":
    main()
