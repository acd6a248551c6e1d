"""The bootstrap machinery: coverage at the nominal rate, count bootstrap = row bootstrap,
the vectorised weighted ROC AUC against scikit-learn, cm_* metrics against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score, precision_score,
                             recall_score, roc_auc_score)

from audit import stats
from checks.performance.classification import RocAuc, count_bootstrap


def test_count_bootstrap_ci_covers_true_accuracy_at_nominal_rate() -> None:
    """300 simulated test sets of n=200 from a model of true accuracy 0.8: the 95% CI of
    the confusion-matrix count bootstrap should cover 0.8 in about 95% of them."""
    rng = np.random.default_rng(12345)
    p, n, reps = 0.8, 200, 300
    covered = 0
    for _ in range(reps):
        y = rng.integers(0, 3, n)
        wrong = rng.random(n) >= p
        pred = np.where(wrong, (y + rng.integers(1, 3, n)) % 3, y)
        cm = stats.confusion_counts(y, pred, 3)
        m = stats.bootstrap_counts(cm, stats.cm_accuracy, confidence=0.95, rng=rng, n_resamples=2000)
        covered += m.ci[0] <= p <= m.ci[1]
    rate = covered / reps
    print(f"coverage {rate:.3f}")
    assert 0.91 <= rate <= 0.98, rate


def test_weight_bootstrap_ci_covers_true_mean_at_nominal_rate() -> None:
    """Same for the weight bootstrap of a mean (skewed values: exponential, mean 1)."""
    rng = np.random.default_rng(2024)
    reps, n = 300, 150
    covered = 0
    for _ in range(reps):
        values = rng.exponential(1.0, n)
        m = stats.bootstrap_mean(values, confidence=0.95, rng=rng, n_resamples=500)
        assert m.value == pytest.approx(values.mean(), rel=1e-6)
        covered += m.ci[0] <= 1.0 <= m.ci[1]
    rate = covered / reps
    print(f"coverage {rate:.3f}")
    assert 0.91 <= rate <= 0.98, rate


def test_count_bootstrap_matches_row_bootstrap() -> None:
    """The multinomial over confusion-matrix cells is a row bootstrap in distribution:
    CI endpoints agree with resampling row indices (n=2000) to within 0.01."""
    rng = np.random.default_rng(7)
    n = 2000
    y = rng.integers(0, 4, n)
    pred = np.where(rng.random(n) < 0.83, y, rng.integers(0, 4, n))
    cm = stats.confusion_counts(y, pred, 4)
    counted = stats.bootstrap_counts(cm, stats.cm_accuracy, confidence=0.95, rng=np.random.default_rng(1))
    correct = (y == pred).astype(np.float64)
    idx = np.random.default_rng(2).integers(0, n, size=(10_000, n))
    rows = stats.percentile_ci(correct[idx].mean(axis=1), 0.95)
    assert counted.value == pytest.approx(correct.mean(), abs=1e-12)
    assert abs(counted.ci[0] - rows[0]) < 0.01 and abs(counted.ci[1] - rows[1]) < 0.01
    # and neither is degenerate
    assert counted.ci[1] - counted.ci[0] > 0.02


def test_cm_metrics_match_sklearn_including_absent_classes() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        k = 5
        n = 60
        y = rng.integers(0, k - 1 if trial % 2 else k, n)  # odd trials: last class absent from y
        pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
        cm = stats.confusion_counts(y, pred, k)[None].astype(np.float64)
        assert stats.cm_accuracy(cm)[0] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
        with np.errstate(invalid="ignore"):
            ours_bal = stats.cm_balanced_accuracy(cm)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns when y_pred has a class absent from y
            ref_bal = balanced_accuracy_score(y, pred)
        assert ours_bal == pytest.approx(ref_bal, abs=1e-12)
        kw = {"average": "macro", "zero_division": 0}
        with np.errstate(invalid="ignore"):  # recall of a class absent from y is NaN by design
            ours = [stats.cm_f1_macro(cm)[0], stats.cm_precision_macro(cm)[0], stats.cm_recall_macro(cm)[0]]
        assert ours[0] == pytest.approx(f1_score(y, pred, **kw), abs=1e-12)
        assert ours[1] == pytest.approx(precision_score(y, pred, **kw), abs=1e-12)
        assert ours[2] == pytest.approx(recall_score(y, pred, **kw), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_roc_auc_matches_sklearn_sample_weight(ties: bool) -> None:
    """The vectorised weighted AUC equals roc_auc_score(sample_weight=w) for every row of a
    weight batch, with and without tied scores."""
    rng = np.random.default_rng(11)
    n = 300
    t = rng.random(n) < 0.4
    score = rng.normal(size=n) + t
    if ties:
        score = np.round(score, 1)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=8).astype(np.float32)
    ours = RocAuc(score, t)(w)
    for b in range(w.shape[0]):
        assert ours[b] == pytest.approx(roc_auc_score(t, score, sample_weight=w[b]), abs=1e-12)
    assert RocAuc(score, t)(np.ones((1, n)))[0] == pytest.approx(roc_auc_score(t, score), abs=1e-12)


def test_weighted_bootstrap_of_auc_is_not_degenerate() -> None:
    rng = np.random.default_rng(5)
    n = 500
    t = rng.random(n) < 0.5
    score = rng.normal(size=n) + 1.2 * t
    m = stats.bootstrap_weighted(RocAuc(score, t), n, confidence=0.95, rng=rng)
    assert m.ci[0] < m.value < m.ci[1]
    assert 0.02 < m.ci[1] - m.ci[0] < 0.2


@pytest.mark.parametrize("k", [3, 60])  # 60 classes: two resample chunks
def test_shared_count_bootstrap_matches_bootstrap_counts(k: int) -> None:
    """One shared (chunked, for many classes) resample set gives the same CIs as
    stats.bootstrap_counts with its own draws, and per-class recall CIs bracket recall."""
    rng = np.random.default_rng(8)
    n = 3000
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n))
    cm = stats.confusion_counts(y, pred, k)
    shared, recall_ci = count_bootstrap(cm, {"accuracy": stats.cm_accuracy, "f1": stats.cm_f1_macro},
                                        confidence=0.95, rng=np.random.default_rng(1), n_resamples=2000)
    own = stats.bootstrap_counts(cm, stats.cm_accuracy, confidence=0.95, rng=np.random.default_rng(2),
                                 n_resamples=2000)
    assert shared["accuracy"].value == own.value == pytest.approx(accuracy_score(y, pred))
    assert shared["f1"].value == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert np.allclose(shared["accuracy"].ci, own.ci, atol=0.005)
    recall = recall_score(y, pred, average=None, labels=np.arange(k))
    for c in range(0, k, max(1, k // 10)):
        assert recall_ci[c][0] <= recall[c] <= recall_ci[c][1]


def test_stratified_weights_keep_each_stratum_size() -> None:
    rng = np.random.default_rng(0)
    chunks = list(stats.resample_weights(50, 300, rng, strata=[20, 30]))
    w = np.concatenate(chunks)
    assert w.shape == (300, 50)
    np.testing.assert_array_equal(w[:, :20].sum(axis=1), 20)
    np.testing.assert_array_equal(w[:, 20:].sum(axis=1), 30)
    assert w[:, :20].std() > 0  # actually resampled, not all ones
    with pytest.raises(ValueError):
        next(stats.resample_weights(50, 10, rng, strata=[20, 20]))
