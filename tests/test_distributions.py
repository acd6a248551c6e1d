"""audit.stats' distribution functions (scipy.special kernels, to spare an audit the
import of scipy.stats) against scipy.stats and statsmodels themselves: equal bit for bit,
edges included."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binom, chi2_contingency, norm, t
from statsmodels.stats.proportion import proportion_confint

from audit import stats


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_binomial_tails_equal_scipy_stats_edges_included() -> None:
    rng = np.random.default_rng(0)
    cases = [(k, n, p) for n in (0, 1, 2, 7, 50) for k in range(-2, n + 3) for p in (0.0, 0.3, 0.5, 1.0)]
    n = rng.integers(1, 10**7, 300)
    cases += list(zip((rng.random(300) * n).astype(int).tolist(), n.tolist(), rng.random(300).tolist()))
    cases += [(3, 10, -0.1), (3, 10, 1.5), (3, 10, float("nan")), (2.7, 10, 0.4)]
    for k, n, p in cases:
        assert _same(stats.binom_cdf(k, n, p), float(binom.cdf(k, n, p))), (k, n, p)
        assert _same(stats.binom_sf(k, n, p), float(binom.sf(k, n, p))), (k, n, p)


def test_normal_and_t_equal_scipy_stats() -> None:
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(size=200) * 6, [0.0, math.inf, -math.inf, 40.0, -40.0]])
    for v in z.tolist():
        assert stats.norm_cdf(v) == float(norm.cdf(v))
        assert stats.norm_cdf(-v) == float(norm.sf(v))
        for df in (1.0, 2.5, 30.0, 1e6):
            assert stats.t_cdf(v, df) == float(t.cdf(v, df)), (v, df)
            assert stats.t_cdf(-v, df) == float(t.sf(v, df)), (v, df)
    for q in np.concatenate([rng.random(200), [0.5, 0.975, 0.995, 1e-12]]).tolist():
        assert stats.norm_ppf(q) == float(norm.ppf(q))
        for df in (1.0, 4.0, 99.0, 1e6):
            assert stats.t_ppf(q, df) == float(t.ppf(q, df)), (q, df)


def test_clopper_pearson_equals_statsmodels() -> None:
    rng = np.random.default_rng(2)
    cases = [(x, n) for n in (1, 2, 5, 10, 37) for x in range(n + 1)]
    n = rng.integers(1, 10**7, 200)
    cases += list(zip((rng.random(200) * n).astype(int).tolist(), n.tolist()))
    for x, n in cases:
        for confidence in (0.9, 0.95, 0.99):
            lo, hi = proportion_confint(x, n, alpha=1 - confidence, method="beta")
            lo = 0.0 if x == 0 or not np.isfinite(lo) else float(lo)
            hi = 1.0 if x == n or not np.isfinite(hi) else float(hi)
            assert stats.clopper_pearson(x, n, confidence) == (lo, hi), (x, n, confidence)
    assert stats.clopper_pearson(10, 10, 0.95)[0] == pytest.approx(0.6915, abs=1e-4)  # never zero width


def test_chi2_contingency_pvalue_equals_scipy() -> None:
    rng = np.random.default_rng(3)
    tables = [np.array([[10, 20], [30, 40]]), np.array([[5, 0], [3, 1]]), np.array([[12, 3, 9]]),
              np.array([[500_000, 499_000], [50_000, 51_234]]), np.array([[1, 1], [1, 1]])]
    for _ in range(200):
        r, c = rng.integers(1, 6, 2)
        tables.append(rng.integers(1, 10 ** rng.integers(1, 7), size=(r, c)))
    for tab in tables:
        assert stats.chi2_contingency_pvalue(tab) == float(chi2_contingency(tab).pvalue), tab
    with pytest.raises(ValueError):
        stats.chi2_contingency_pvalue(np.array([[1, 0], [2, 0]]))


def test_an_audit_of_these_checks_does_not_import_scipy_stats() -> None:
    # the reason these functions exist: if a change brings scipy.stats back on this path,
    # the ~1.3 s import is back in every audit (benchmarks/bench_scale.py)
    code = ("import sys; import audit.stats as s, audit.labels, checks.data.integrity, "
            "checks.performance.classification, checks.performance.calibration, checks.fairness.group_gaps; "
            "s.proportion(3, 10, 0.95); s.binom_sf(2, 10, 0.5); s._quantile(0.95, 12.0); "
            "s.chi2_contingency_pvalue([[3, 4], [5, 6]]); "
            "print('scipy.stats' in sys.modules, 'statsmodels.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
