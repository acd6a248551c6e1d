"""Intervals whose cost does not grow with resamples x N, each held to the row bootstrap
they replace: DeLong's interval for ROC AUC (binary and macro one-vs-rest), Student's t
interval for means (log loss, Brier), and the cell-count bootstrap of ECE and MCE.

Coverage is simulated cheaply (a few hundred small test sets); the row bootstrap is the
weight bootstrap of audit.stats (resampling weights x per-sample values), the method the
fast intervals replace."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from audit import stats
from audit.context import Context, logits_to_proba
from audit.dataset import Dataset, LoadedModel
from checks.performance.calibration import BinnedCalibration
from checks.performance.classification import RocAuc
from tests.test_intervals import _run

# ---- DeLong ------------------------------------------------------------------------------


def _delong_variance_by_definition(score: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) with the O(m n) kernel matrix: AUC and S10/m + S01/n."""
    x, y = score[pos], score[~pos]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(auc), float(v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(y))


def _scored(seed: int, n: int, share: float, shift: float, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scores of positives (a `share` of n) shifted by `shift`; rounded to one decimal for ties."""
    rng = np.random.default_rng(seed)
    pos = rng.random(n) < share
    score = rng.normal(size=n) + shift * pos
    return (np.round(score, 1) if ties else score), pos


@pytest.mark.parametrize("ties", [False, True])
def test_auc_components_give_sklearn_auc_and_delong_variance(ties: bool) -> None:
    score, pos = _scored(0, 400, 0.35, 0.8, ties)
    auc, comp = stats.auc_components(score, pos)
    ref_auc, ref_var = _delong_variance_by_definition(score, pos)
    assert auc == pytest.approx(roc_auc_score(pos, score), abs=1e-12) == pytest.approx(ref_auc)
    assert float(np.sum(comp ** 2)) == pytest.approx(ref_var, rel=1e-10)


@pytest.mark.parametrize("ties", [False, True])
def test_delong_on_sorted_sides_equals_the_per_sample_components(ties: bool) -> None:
    """The binary fast path (both sides sorted, components summed in sorted order, queries
    in chunks) gives the AUC and interval of the per-sample components, and sklearn's AUC."""
    score, pos = _scored(3, 5000, 0.3, 1.0, ties)
    ref = stats.delong_auc([score], [pos], confidence=0.95)
    old_chunk = stats._QUERY_CHUNK
    stats._QUERY_CHUNK = 700  # several chunks on each side
    try:
        fast = stats.delong_binary(score[pos].copy(), score[~pos].copy(), confidence=0.95)
    finally:
        stats._QUERY_CHUNK = old_chunk
    assert fast.value == pytest.approx(roc_auc_score(pos, score), abs=1e-12)
    assert fast.value == pytest.approx(ref.value, abs=1e-12)
    assert fast.ci == pytest.approx(ref.ci, abs=1e-12)


def test_streamed_predictions_are_the_arg_max_of_the_logits_as_of_the_probabilities() -> None:
    """A streamed dataset's predictions are the logits' arg-max (no softmax pass): equal to
    the probabilities' arg-max, ties and extreme scales included."""
    rng = np.random.default_rng(0)
    for scale in (1.0, 100.0, 1e4, 1e-6):
        z = (rng.normal(size=(20_000, 5)) * scale).astype(np.float32)
        z[::7, 2] = z[::7, 1]
        z[::11] = 0
        np.testing.assert_array_equal(z.argmax(axis=1), logits_to_proba(z).argmax(axis=1))


def test_the_two_class_softmax_is_the_general_formula_bit_for_bit() -> None:
    """logits_to_proba's two-class path (no row-wise max and sum) gives the same bits as
    exp(z - max) / sum over the row, ties, tiny and huge differences included."""
    rng = np.random.default_rng(1)
    for scale in (1.0, 30.0, 1e4, 1e-7, 1e30):
        z = (rng.normal(size=(50_000, 2)) * scale).astype(np.float32)
        z[::5, 1] = z[::5, 0]
        z[::7] = [1e20, -1e-20]
        zz = z.astype(np.float64)
        e = np.exp(zz - zz.max(axis=1, keepdims=True))
        ref = e / e.sum(axis=1, keepdims=True)
        np.testing.assert_array_equal(logits_to_proba(z).view(np.uint64), ref.view(np.uint64))


def test_two_class_brier_and_top_class_are_the_general_formulas_bit_for_bit() -> None:
    from checks.performance.calibration import brier_per_sample, top_class

    rng = np.random.default_rng(5)
    z = (rng.normal(size=(50_000, 2)) * 4).astype(np.float32)
    z[:20] = 0.0  # ties: class 0, as argmax says
    z[20:40, 1] = z[20:40, 0] + np.float32(1e-6)
    proba, y = logits_to_proba(z), rng.integers(0, 2, len(z)).astype(np.int8)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    assert np.array_equal(brier_per_sample(proba, y), ((proba - onehot) ** 2).sum(axis=1))
    confidence, predicted = top_class(proba)
    assert np.array_equal(confidence, proba.max(axis=1)) and np.array_equal(predicted, proba.argmax(axis=1))
    three = logits_to_proba(rng.normal(size=(100, 3)))
    assert np.array_equal(top_class(three)[1], three.argmax(axis=1))


def test_row_argmax_is_numpy_argmax_ties_and_nan_included() -> None:
    from audit.stats import row_argmax

    rng = np.random.default_rng(6)
    for k in (2, 3):
        a = rng.integers(-2, 3, size=(5000, k)).astype(np.float32)  # many ties
        a[rng.random(a.shape) < 0.05] = np.nan
        a[:4, :2] = [[np.nan, np.nan], [np.nan, 1.0], [1.0, np.nan], [0.0, -0.0]]
        assert np.array_equal(row_argmax(a), a.argmax(axis=1))
        assert np.array_equal(row_argmax(a, np.int8), a.argmax(axis=1).astype(np.int8))
    ints = rng.integers(0, 3, size=(1000, 2))
    assert np.array_equal(row_argmax(ints), ints.argmax(axis=1))


def test_moments_merged_over_chunks_equal_the_whole_array() -> None:
    v = np.random.default_rng(4).lognormal(size=10_001) + 1e6  # a large mean: a naive sum of squares loses digits
    m = stats.Moments()
    for s in range(0, v.size, 999):
        m.add(v[s:s + 999])
    assert m.n == v.size and m.mean == pytest.approx(v.mean(), rel=1e-14)
    assert m.variance == pytest.approx(v.var(ddof=1), rel=1e-9)
    whole = stats.mean_interval(v, confidence=0.95)
    assert stats.mean_interval_of(m, confidence=0.95).ci == pytest.approx(whole.ci, rel=1e-12)


@pytest.mark.parametrize("k", [2, 4])
def test_checks_reduce_chunk_by_chunk_to_the_reference_values(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """performance.classification and performance.calibration read per-sample values in
    chunks of rows (bounded memory at any N): with chunks of 1,000 rows out of 4,000 they
    give sklearn's ROC AUC, log loss and Brier score, and the same numbers as one chunk."""
    from sklearn.metrics import log_loss

    import audit.context

    ctx = _ctx(4000, k)
    spec = [{"id": "c", "check": "performance.classification"}, {"id": "cal", "check": "performance.calibration"}]
    whole = _run(ctx, spec)
    monkeypatch.setattr(audit.context, "_CHUNK_ROWS", 1000)
    chunked = _run(_ctx(4000, k), spec)
    y = ctx.dataset("test").y
    proba = logits_to_proba(ctx.logits("test"))
    onehot = np.eye(k)[y]
    ref = {"roc_auc": roc_auc_score(y, proba[:, 1]) if k == 2 else roc_auc_score(y, proba, multi_class="ovr"),
           "log_loss": log_loss(y, proba), "brier": float(((proba - onehot) ** 2).sum(axis=1).mean())}
    for cw, cc in zip(whole["checks"], chunked["checks"]):
        for name, mw in cw["metrics"].items():
            mc = cc["metrics"][name]
            assert mc["value"] == pytest.approx(mw["value"], abs=1e-12), name
            if mw["ci"]:
                assert mc["ci"] == pytest.approx(mw["ci"], abs=1e-9), name
            if name in ref:
                assert mc["value"] == pytest.approx(ref[name], abs=1e-12), name


def _binormal(rng: np.random.Generator, n: int, d: float, share: float) -> tuple[np.ndarray, np.ndarray]:
    pos = rng.random(n) < share
    return rng.normal(size=n) + d * pos, pos


def test_delong_covers_the_true_auc_like_the_row_bootstrap() -> None:
    """Binormal scores (true AUC = Phi(d / sqrt 2)), 300 test sets of n = 300: DeLong's
    interval covers at about the nominal rate, as the row bootstrap does on the same sets."""
    rng = np.random.default_rng(1)
    d, n, reps = 1.0, 300, 300
    truth = norm.cdf(d / math.sqrt(2))
    hit_delong = hit_rows = 0
    for _ in range(reps):
        s, pos = _binormal(rng, n, d, 0.4)
        m = stats.delong_auc([s], [pos], confidence=0.95)
        b = stats.bootstrap_weighted(RocAuc(s, pos), n, confidence=0.95, rng=rng, n_resamples=400)
        hit_delong += m.ci[0] <= truth <= m.ci[1]
        hit_rows += b.ci[0] <= truth <= b.ci[1]
    cov_d, cov_r = hit_delong / reps, hit_rows / reps
    print(f"coverage DeLong {cov_d:.3f}, row bootstrap {cov_r:.3f}")
    assert 0.91 <= cov_d <= 0.98, cov_d
    assert abs(cov_d - cov_r) <= 0.04, (cov_d, cov_r)


@pytest.mark.parametrize("k", [2, 5])
def test_delong_endpoints_match_the_row_bootstrap(k: int) -> None:
    """Binary and macro one-vs-rest (the AUCs share samples: covariances count): the
    interval endpoints agree with 4,000 row-bootstrap resamples within 5% of its width."""
    rng = np.random.default_rng(2 + k)
    n = 3000
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    proba = logits_to_proba(logits)
    cls = [1] if k == 2 else list(range(k))
    m = stats.delong_auc([proba[:, c] for c in cls], [y == c for c in cls], confidence=0.95)
    aucs = [RocAuc(proba[:, c], y == c) for c in cls]
    b = stats.bootstrap_weighted(lambda w: np.mean([a(w) for a in aucs], axis=0), n, confidence=0.95,
                                 rng=rng, n_resamples=4000)
    ref = roc_auc_score(y, proba[:, 1]) if k == 2 else roc_auc_score(y, proba, multi_class="ovr")
    assert m.value == pytest.approx(ref, abs=1e-12) == pytest.approx(b.value, abs=1e-12)
    width = b.ci[1] - b.ci[0]
    assert abs(m.ci[0] - b.ci[0]) < 0.05 * width and abs(m.ci[1] - b.ci[1]) < 0.05 * width, (m.ci, b.ci)


def test_a_perfect_auc_keeps_a_hoeffding_interval_and_a_p_value() -> None:
    pos = np.arange(40) % 2 == 0
    score = pos + np.linspace(0, 0.1, 40)  # every positive above every negative
    m = stats.delong_auc([score], [pos], confidence=0.95)
    assert m.value == 1.0 and m.ci[1] == 1.0
    half = stats.hoeffding_half_width((0.0, 1.0), 20, 0.95)  # 20 on the smaller side
    assert m.ci[0] == pytest.approx(1.0 - half)
    p = stats.p_wrong_side(m, "min", 0.5)
    assert p is not None and 0.0 <= p < 0.025


# ---- means ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dist", ["exponential", "lognormal"])
def test_the_t_interval_of_a_mean_covers_like_the_row_bootstrap(dist: str) -> None:
    """Skewed per-sample values (losses are), 300 samples of n = 200: the t interval covers
    the true mean at about the nominal rate, like the row bootstrap on the same samples."""
    rng = np.random.default_rng(3)
    reps, n = 300, 200
    draw = {"exponential": lambda: rng.exponential(1.0, n), "lognormal": lambda: rng.lognormal(0.0, 0.75, n)}[dist]
    truth = {"exponential": 1.0, "lognormal": math.exp(0.75 ** 2 / 2)}[dist]
    hit_t = hit_rows = 0
    for _ in range(reps):
        v = draw()
        m = stats.mean_interval(v, confidence=0.95)
        b = stats.bootstrap_mean(v, confidence=0.95, rng=rng, n_resamples=400)
        assert m.value == pytest.approx(v.mean())
        hit_t += m.ci[0] <= truth <= m.ci[1]
        hit_rows += b.ci[0] <= truth <= b.ci[1]
    cov_t, cov_r = hit_t / reps, hit_rows / reps
    print(f"{dist}: coverage t {cov_t:.3f}, row bootstrap {cov_r:.3f}")
    assert 0.91 <= cov_t <= 0.98, cov_t
    assert abs(cov_t - cov_r) <= 0.04, (cov_t, cov_r)


def test_the_t_interval_matches_the_row_bootstrap_and_inverts_into_its_p_value() -> None:
    rng = np.random.default_rng(4)
    v = rng.exponential(0.3, 5000)
    m = stats.mean_interval(v, confidence=0.95, bounds=(0.0, None))
    b = stats.bootstrap_mean(v, confidence=0.95, rng=rng, n_resamples=4000)
    width = b.ci[1] - b.ci[0]
    assert abs(m.ci[0] - b.ci[0]) < 0.05 * width and abs(m.ci[1] - b.ci[1]) < 0.05 * width
    # the one-sided p-value at an interval end is (1 - confidence) / 2: Holm tests what the interval shows
    assert stats.p_wrong_side(m, "min", m.ci[0]) == pytest.approx(0.025, rel=1e-6)
    assert stats.p_wrong_side(m, "max", m.ci[1]) == pytest.approx(0.025, rel=1e-6)


def test_a_constant_bounded_mean_falls_back_to_hoeffding() -> None:
    m = stats.mean_interval(np.zeros(50), confidence=0.95, bounds=(0.0, 2.0))
    assert m.value == 0.0 and m.ci == pytest.approx((0.0, stats.hoeffding_half_width((0.0, 2.0), 50, 0.95)))
    assert m.n == 50 and stats.p_wrong_side(m, "max", 1.0) < 0.025


# ---- ECE / MCE as resampled cell counts ---------------------------------------------------------

def _calibration_sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    conf = rng.beta(5.0, 1.5, size=n)
    correct = (rng.random(n) < 0.95 * conf).astype(np.float64)
    return conf, correct


@pytest.mark.parametrize("n", [500, 20_000])
def test_cell_bootstrap_of_ece_and_mce_matches_the_row_bootstrap(n: int) -> None:
    rng = np.random.default_rng(5)
    conf, correct = _calibration_sample(rng, n)
    b = BinnedCalibration(conf, correct, 15)
    ece, mce = b.cell_draws(4000, rng)
    for draws, stat in ((ece, b.ece), (mce, b.mce)):
        ours = stats.percentile_ci(draws, 0.95)
        rows = stats.bootstrap_weighted(stat, n, confidence=0.95, rng=rng, n_resamples=4000).ci
        width = rows[1] - rows[0]
        assert abs(ours[0] - rows[0]) < 0.1 * width and abs(ours[1] - rows[1]) < 0.1 * width, (ours, rows)


def test_cell_bootstrap_of_ece_covers_like_the_row_bootstrap() -> None:
    """200 test sets of n = 1,000 from one population: the cell bootstrap covers the
    population's binned ECE as often as the row bootstrap does (both are percentile
    intervals of a biased statistic: the point is that they agree)."""
    rng = np.random.default_rng(6)
    big = _calibration_sample(rng, 2_000_000)
    truth = BinnedCalibration(*big, 15).ece(np.ones((1, big[0].size)))[0]
    hit_cells = hit_rows = 0
    reps, n = 200, 1000
    for _ in range(reps):
        b = BinnedCalibration(*_calibration_sample(rng, n), 15)
        cells = stats.percentile_ci(b.cell_draws(1000, rng)[0], 0.95)
        rows = stats.bootstrap_weighted(b.ece, n, confidence=0.95, rng=rng, n_resamples=400).ci
        hit_cells += cells[0] <= truth <= cells[1]
        hit_rows += rows[0] <= truth <= rows[1]
    print(f"ECE coverage: cells {hit_cells / reps:.3f}, rows {hit_rows / reps:.3f}")
    assert abs(hit_cells - hit_rows) / reps <= 0.05


# ---- the checks ------------------------------------------------------------------------------------


def _ctx(n: int, k: int, seed: int = 0) -> Context:
    import torch

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, k)).astype(np.float32)
    x[np.arange(n), y] += 1.5

    class Identity(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t * 1.0

    ds = Dataset("test", x, y, "tabular", [f"c{i}" for i in range(k)])
    return Context.from_objects({"test": ds}, LoadedModel(Identity(), "0" * 64, "test", "identity"))


@pytest.mark.parametrize("k", [2, 4])
def test_fast_and_row_bootstrap_intervals_agree_in_the_checks(k: int) -> None:
    """performance.classification and performance.calibration: the same point estimates
    and nearly the same intervals with `intervals: fast` (default) and `row_bootstrap`."""
    ctx = _ctx(4000, k)
    fast = _run(ctx, [{"id": "c", "check": "performance.classification"},
                      {"id": "cal", "check": "performance.calibration"}])
    rows = _run(ctx, [{"id": "c", "check": "performance.classification", "intervals": "row_bootstrap"},
                      {"id": "cal", "check": "performance.calibration", "intervals": "row_bootstrap"}])
    for cf, cr in zip(fast["checks"], rows["checks"]):
        for name in ("roc_auc", "log_loss", "ece", "mce", "brier"):
            if name not in cf["metrics"]:
                continue
            f, r = cf["metrics"][name], cr["metrics"][name]
            assert f["value"] == pytest.approx(r["value"], abs=1e-12) and f["n"] == r["n"] == 4000
            width = r["ci"][1] - r["ci"][0]
            assert abs(f["ci"][0] - r["ci"][0]) < 0.12 * width and abs(f["ci"][1] - r["ci"][1]) < 0.12 * width, \
                (name, f, r)


def test_holm_gets_p_values_from_the_fast_intervals() -> None:
    res = _run(_ctx(3000, 3), [{"id": "c", "check": "performance.classification",
                                "thresholds": {"roc_auc": {"min": 0.6}, "log_loss": {"max": 2.0}}},
                               {"id": "cal", "check": "performance.calibration",
                                "thresholds": {"brier": {"max": 1.5}, "ece": {"max": 0.5}}}],
               familywise="holm")
    for c in res["checks"]:
        for t in c["thresholds"]:
            assert t["p_value"] is not None and t["p_value"] < 0.01, t
            assert t["status"] == "pass" and t["p_holm"] is not None
