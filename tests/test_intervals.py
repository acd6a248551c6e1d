"""Intervals that hold at the edges (tiny and perfect test sets), and the verdicts that
follow from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom

from audit.check import higher
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.runner import Runner
from audit.spec import parse_spec
from audit.stats import from_draws, min_n_to_pass, proportion, resample_counts

PS = (0.5, 0.9, 0.99, 1.0)
NS = (10, 50, 200, 1000)


def exact_coverage(p: float, n: int, confidence: float = 0.95) -> float:
    """P(the interval of X ~ Binomial(n, p) contains p), summed over every outcome x."""
    xs = np.arange(n + 1)
    pmf = binom.pmf(xs, n, p)
    hit = np.array([lo <= p <= hi for lo, hi in (proportion(int(x), n, confidence).ci for x in xs)])
    return float(pmf[hit].sum())


def coverage_table() -> dict[tuple[float, int], float]:
    return {(p, n): exact_coverage(p, n) for p in PS for n in NS}


def test_exact_intervals_cover_at_least_nominally_at_the_edges() -> None:
    table = coverage_table()
    for (p, n), cov in table.items():
        assert cov >= 0.95 - 1e-9, (p, n, cov)  # Clopper-Pearson: never below nominal
    assert table[(0.5, 1000)] < 0.97  # and not absurdly conservative where data is plentiful


@pytest.mark.parametrize("n", [1, 10, 60])
def test_a_perfect_small_sample_has_a_non_degenerate_exact_interval(n: int) -> None:
    m = proportion(n, n, 0.95)
    assert m.value == 1.0 and m.ci[1] == 1.0
    assert m.ci[0] == pytest.approx(0.025 ** (1 / n), rel=1e-9)  # 10/10: 0.692; 60/60: 0.940
    assert m.n == n


def test_the_count_bootstrap_cannot_collapse_on_a_perfect_table() -> None:
    cm = np.diag([4, 3, 3])  # 10 samples, all correct
    draws = resample_counts(cm, 5000, np.random.default_rng(0))
    balanced = np.mean(np.diagonal(draws, axis1=1, axis2=2) / draws.sum(axis=2), axis=1)
    m = from_draws(1.0, balanced, 0.95, n=10, bounds=(0.0, 1.0))
    assert 0.6 < m.ci[0] < 0.95 and m.ci[1] == 1.0  # wide below, and it contains the estimate


def test_a_collapsed_bootstrap_of_a_bounded_metric_falls_back_to_hoeffding() -> None:
    m = from_draws(0.0, np.zeros(2000), 0.95, n=50, bounds=(0.0, 1.0))
    half = np.sqrt(np.log(2 / 0.05) / (2 * 50))
    assert m.ci == pytest.approx((0.0, half))


def test_min_n_to_pass() -> None:
    assert min_n_to_pass("min", 0.99, 0.95) == 368     # 0.025 ** (1 / 367) < 0.99 <= 0.025 ** (1 / 368)
    assert proportion(368, 368, 0.95).ci[0] >= 0.99 > proportion(367, 367, 0.95).ci[0]
    assert min_n_to_pass("max", 0.01, 0.95) == 368
    assert min_n_to_pass("min", 1.0, 0.95) is None


class _Perfect(torch.nn.Module):
    """Predicts the label planted in the input's first feature: every sample correct."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 0].long(), 2).float() * 10


def _ctx(n: int, classes: int = 2) -> Context:
    y = np.arange(n) % classes
    x = np.stack([y, np.ones(n)], axis=1).astype(np.float32)
    ds = Dataset("test", x, y, "tabular", ["neg", "pos"])
    return Context.from_objects({"test": ds}, LoadedModel(_Perfect(), "0" * 64, "test", "perfect"))


def _run(ctx: Context, checks: list[dict], **top) -> dict:
    spec = parse_spec({"name": "t", "model": {"fixture": "in-memory"}, "data": {"test": {"fixture": "in-memory"}},
                       "checks": checks, **top})
    runner = Runner(spec, context=ctx)
    for e in spec.checks:
        runner.run_check(e)
    return runner.finish().to_json()


def test_ten_of_ten_against_099_is_warn_not_pass() -> None:
    res = _run(_ctx(10), [{"id": "heldout", "check": "performance.classification",
                           "thresholds": {"accuracy": {"min": 0.99}}}])
    check = res["checks"][0]
    acc = check["metrics"]["accuracy"]
    assert acc["value"] == 1.0 and acc["n"] == 10
    assert acc["ci"][0] == pytest.approx(0.6915, abs=1e-4)
    assert check["status"] == "warn" and res["verdict"] == "compliant"
    t = check["thresholds"][0]
    assert t["status"] == "inconclusive" and t["reason"]["kind"] == "small_sample"
    assert "at least 368 samples are needed" in t["reason"]["text"]


def test_one_sample_passes_nothing() -> None:
    res = _run(_ctx(1), [{"id": "heldout", "check": "performance.classification", "resamples": 200,
                          "weight_resamples": 200, "thresholds": {"accuracy": {"min": 0.5}}}])
    assert res["checks"][0]["status"] == "warn"  # 1/1: exact interval [0.025, 1]


def test_a_test_set_missing_a_class_is_flagged() -> None:
    ctx = _ctx(20, classes=1)  # every label is 'neg'; the model also knows 'pos'
    res = _run(ctx, [{"id": "heldout", "check": "performance.classification",
                      "thresholds": {"worst_class_recall": {"min": 0.5}}}])
    check = res["checks"][0]
    assert check["status"] == "warn"
    assert any(r["kind"] == "flag" and "absent" in r["text"] for r in check["reasons"])


def test_a_spec_with_no_thresholds_is_not_assessed() -> None:
    res = _run(_ctx(50), [{"id": "heldout", "check": "performance.classification"}])
    assert res["checks"][0]["status"] == "info"
    assert res["verdict"] == "not assessed"
    res = _run(_ctx(50), [])
    assert res["verdict"] == "not assessed"


def test_a_failed_should_threshold_is_a_failure_at_should_level() -> None:
    res = _run(_ctx(400), [{"id": "heldout", "check": "performance.classification",
                            "thresholds": {"accuracy": {"max": 0.5, "level": "should"}}}])
    check = res["checks"][0]
    assert check["status"] == "warn" and res["verdict"] == "compliant"
    assert check["thresholds"][0]["status"] == "fail" and check["thresholds"][0]["level"] == "should"
    assert [r["kind"] for r in check["reasons"]] == ["should_fail"]


def test_holm_keeps_the_family_wise_error_rate() -> None:
    ctx = _ctx(400)
    checks = [{"id": "a", "check": "performance.classification", "thresholds": {
        "accuracy": {"min": 0.98}, "balanced_accuracy": {"min": 0.5}}}]
    plain = _run(ctx, checks)
    holm = _run(ctx, checks, familywise="holm")
    t_plain = {t["metric"]: t for t in plain["checks"][0]["thresholds"]}
    t_holm = {t["metric"]: t for t in holm["checks"][0]["thresholds"]}
    assert t_plain["accuracy"]["status"] == "pass"  # 400/400 >= 0.98: p = 0.98 ** 400 = 3e-4
    assert t_plain["accuracy"]["p_value"] == pytest.approx(0.98 ** 400, rel=1e-6)
    assert t_holm["accuracy"]["status"] == "pass" and t_holm["balanced_accuracy"]["status"] == "pass"
    # three borderline passes: 370/370 >= 0.99 passes alone (p = 0.99 ** 370 = 0.0243 <= 0.025),
    # but Holm at 0.05 over three needs the smallest p <= 0.05 / 3: none survives
    three = [{"id": f"c{i}", "check": "performance.classification", "resamples": 200, "weight_resamples": 200,
              "thresholds": {"accuracy": {"min": 0.99}}} for i in range(3)]
    plain = _run(_ctx(370), three)
    holm = _run(_ctx(370), three, familywise="holm")
    assert [c["status"] for c in plain["checks"]] == ["pass"] * 3
    for c in holm["checks"]:
        t = c["thresholds"][0]
        assert t["status"] == "inconclusive" and t["reason"]["kind"] == "holm", t
        assert t["p_holm"] == pytest.approx(3 * 0.99 ** 370, rel=1e-6)
        assert c["status"] == "warn"


def test_metric_specs_know_their_proportions() -> None:
    assert higher("x.", proportion=True).bounds == (0.0, 1.0)


@pytest.mark.parametrize(("threshold", "message"), [
    ({"min": float("nan")}, "must be a finite number"),
    ({"min": 1.5}, "min 1.5 would never pass"),
    ({"max": 1.5}, "max 1.5 would always pass"),
])
def test_thresholds_the_metric_cannot_reach_are_spec_errors(threshold: dict, message: str) -> None:
    from audit.errors import SpecError

    with pytest.raises(SpecError, match=message):
        parse_spec({"name": "t", "model": {"fixture": "digits-cnn"}, "data": {"test": {"fixture": "digits"}},
                    "checks": [{"id": "a", "check": "performance.classification",
                                "thresholds": {"accuracy": threshold}}]})
