"""fairness.group: fairlearn agreement, count bootstrap vs row bootstrap, planted bias,
CI-driven verdicts, intersectional groups with insufficient data, clear data errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score

from audit.check import Measurement
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import DataError
from audit.spec import Threshold
from audit.stats import percentile_ci
from audit.verdict import judge
from checks.fairness.group_gaps import (
    GroupFairness,
    bootstrap_fairness,
    count_rates,
    gaps,
    group_counts,
    group_rates,
    make_groups,
)


def linear_model(weights: list[float], bias: float = 0.0) -> LoadedModel:
    """A single-logit (sigmoid) linear model with fixed weights."""
    lin = torch.nn.Linear(len(weights), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([weights], dtype=torch.float32))
        lin.bias.fill_(bias)
    return LoadedModel(module=lin, sha256="test", source="test", architecture="linear")


def biased_data(n: int, *, seed: int, base_shift: float = 0.0) -> Dataset:
    """Columns: [signal, is_group_B]. The label depends on the signal (and on the group
    when base_shift != 0)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    signal = rng.normal(size=n)
    logit = 2.0 * signal + base_shift * group
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    x = np.stack([signal, group], axis=1).astype(np.float32)
    race = np.where(rng.random(n) < 0.7, "White", np.where(rng.random(n) < 0.9, "Black", "Other"))
    return Dataset("test", x, y, "tabular", ["deny", "approve"],
                   sensitive={"sex": np.where(group == 1, "Female", "Male"), "race": race})


def run(ds: Dataset, model: LoadedModel, **params) -> Measurement:
    ctx = Context.from_objects({"test": ds}, model)
    p = GroupFairness.Params(**params)
    GroupFairness.preflight(ctx, p)
    return GroupFairness().run(ctx, p), ctx


def verdict(m: Measurement, metric: str = "demographic_parity_difference", **bound) -> str:
    return judge(m.metrics[metric], Threshold(**bound))


# A model whose logit is shifted down by 1.5 for group B: a planted selection-rate gap.
BIASED = linear_model([2.0, -1.5])
FAIR = linear_model([2.0, 0.0])


@pytest.fixture(scope="module")
def biased_run():
    ds = biased_data(4000, seed=1)
    m, ctx = run(ds, BIASED, sensitive=["sex"])
    return ds, m, ctx


def test_gaps_equal_fairlearn(biased_run) -> None:
    ds, m, ctx = biased_run
    y, p, s = ds.y, ctx.predictions("test"), ds.sensitive["sex"]
    ref = {
        "demographic_parity_difference": demographic_parity_difference(y, p, sensitive_features=s),
        "demographic_parity_ratio": demographic_parity_ratio(y, p, sensitive_features=s),
        "equalized_odds_difference": equalized_odds_difference(y, p, sensitive_features=s),
        "equal_opportunity_difference": equal_opportunity_difference(y, p, sensitive_features=s),
        "accuracy_difference": MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p,
                                           sensitive_features=s).difference(),
    }
    for k, v in ref.items():
        assert abs(m.metrics[k].value - v) <= 1e-9, k
        lo, hi = m.metrics[k].ci
        assert lo <= m.metrics[k].value <= hi, k
    assert m.metrics["demographic_parity_difference"].value > 0.15  # the planted gap is visible


def test_group_rates_equal_fairlearn_metricframe_on_rows() -> None:
    """The per-group table (rates computed from the count cells) is fairlearn's MetricFrame
    on the rows, intersectional groups included; undefined TPR/FPR are NaN, not 0."""
    import pandas as pd

    ds = biased_data(3000, seed=7)
    y = ds.y.copy()
    y[(ds.sensitive["sex"] == "Female") & (ds.sensitive["race"] == ds.sensitive["race"][0])] = 0
    p = (np.random.default_rng(7).random(len(y)) < 0.4).astype(np.int64)
    groups = make_groups(ds, ["sex", "race"])
    ours = group_rates(group_counts(groups.codes, y, p, len(groups.keys)))
    mf = MetricFrame(metrics={"size": count, "base_rate": lambda t, _: float(np.mean(t)),
                              "selection_rate": selection_rate, "tpr": true_positive_rate,
                              "fpr": false_positive_rate, "accuracy": accuracy_score},
                     y_true=y, y_pred=p, sensitive_features=pd.DataFrame(ds.sensitive)[["sex", "race"]])
    ref = mf.by_group.loc[pd.MultiIndex.from_tuples(groups.keys)].astype(np.float64).to_numpy()
    undefined = ~np.isfinite(ours.to_numpy())
    assert undefined[:, list(ours.columns).index("tpr")].any()  # the planted group without positives
    assert np.all(ref[undefined] == 0)  # fairlearn's 0 for an undefined rate
    np.testing.assert_allclose(ours.to_numpy()[~undefined], ref[~undefined], rtol=0, atol=1e-12)
    assert list(ours.columns) == ["size", "base_rate", "selection_rate", "tpr", "fpr", "accuracy"]


def test_count_bootstrap_agrees_with_row_bootstrap(biased_run) -> None:
    ds, _, ctx = biased_run
    groups = make_groups(ds, ["sex"])
    y, p = ds.y, ctx.predictions("test")
    counts = group_counts(groups.codes, y, p, len(groups.keys))
    suff = np.ones(len(groups.keys), bool)
    gap_draws, _ = bootstrap_fairness(counts, suff, confidence=0.95, rng=np.random.default_rng(0), n_resamples=4000)
    gap_ci = {k: percentile_ci(d, 0.95) for k, d in gap_draws.items()}

    # Plain row bootstrap: resample row indices, recompute the gaps on each resample.
    rng = np.random.default_rng(1)
    n, draws = len(y), {k: [] for k in gap_ci}
    for _ in range(1000):
        i = rng.integers(0, n, n)
        g = gaps(count_rates(group_counts(groups.codes[i], y[i], p[i], len(groups.keys))))
        for k in draws:
            draws[k].append(float(g[k]))
    for k, ci in gap_ci.items():
        row = np.quantile(draws[k], [0.025, 0.975])
        width = ci[1] - ci[0]
        assert abs(ci[0] - row[0]) < 0.15 * width + 0.004, k
        assert abs(ci[1] - row[1]) < 0.15 * width + 0.004, k


def test_planted_bias_fails_fair_model_passes() -> None:
    ds = biased_data(20000, seed=2)
    biased, _ = run(ds, BIASED, sensitive="sex")
    fair, _ = run(ds, FAIR, sensitive="sex")
    assert verdict(biased, max=0.05) == "fail"
    assert verdict(biased, "equal_opportunity_difference", max=0.05) == "fail"
    assert verdict(biased, "demographic_parity_ratio", min=0.8) == "fail"
    # Equal base rates and a group-blind model: the whole CI sits below 0.05.
    assert fair.metrics["demographic_parity_difference"].ci[1] < 0.05
    for metric in ("demographic_parity_difference", "equalized_odds_difference", "accuracy_difference"):
        assert verdict(fair, metric, max=0.05) == "pass", metric
    assert verdict(fair, "demographic_parity_ratio", min=0.8) == "pass"


def _fixed_selection(n_a: int, sel_a: int, n_b: int, sel_b: int) -> tuple[Dataset, LoadedModel]:
    """Exactly sel_a of n_a group-A rows and sel_b of n_b group-B rows are predicted positive."""
    chosen = np.r_[np.arange(n_a) < sel_a, np.arange(n_b) < sel_b].astype(np.float32)
    x = (chosen * 2 - 1)[:, None] * 5.0
    y = chosen.astype(np.int64)
    sex = np.r_[np.full(n_a, "Male"), np.full(n_b, "Female")]
    ds = Dataset("test", x.astype(np.float32), y, "tabular", ["no", "yes"], sensitive={"sex": sex})
    return ds, linear_model([1.0])


def test_tiny_sample_with_small_gap_is_inconclusive() -> None:
    # Selection rates 0.32 vs 0.30 on 100 rows each: the gap (0.02) is under the limit,
    # but the CI is far too wide to claim parity -> warn, not pass.
    ds, model = _fixed_selection(100, 32, 100, 30)
    m, _ = run(ds, model, sensitive="sex")
    dpd = m.metrics["demographic_parity_difference"]
    assert dpd.value == pytest.approx(0.02, abs=1e-12)
    assert dpd.ci[1] > 0.05
    assert verdict(m, max=0.05) == "inconclusive"
    # The same rates on 100x the data are conclusive.
    ds, model = _fixed_selection(10000, 3200, 10000, 3000)
    m, _ = run(ds, model, sensitive="sex")
    assert verdict(m, max=0.05) == "pass"


def test_intersectional_groups_mark_small_ones_insufficient() -> None:
    ds = biased_data(3000, seed=3)
    m, ctx = run(ds, BIASED, sensitive=["sex", "race"], min_group_size=100)
    groups = make_groups(ds, ["sex", "race"])
    sizes = np.bincount(groups.codes)
    small = {groups.keys[g] for g in np.flatnonzero(sizes < 100)}
    assert small, "the fixture should contain small intersectional groups"
    table = next(e for e in m.evidence if e["type"] == "table" and e["title"].startswith("Per-group"))
    assert table["columns"][:2] == ["sex", "race"]
    assert table["columns"][2:4] == ["size", "data"]
    marked = {(r[0], r[1]) for r in table["rows"] if r[3] == "insufficient"}
    assert marked == small
    # The gaps are those of fairlearn on the rows of the groups with enough data.
    keep = np.isin(groups.codes, np.flatnonzero(sizes >= 100))
    sf = {"sex": ds.sensitive["sex"][keep], "race": ds.sensitive["race"][keep]}
    import pandas as pd

    ref = demographic_parity_difference(ds.y[keep], ctx.predictions("test")[keep],
                                        sensitive_features=pd.DataFrame(sf))
    assert abs(m.metrics["demographic_parity_difference"].value - ref) <= 1e-9
    assert any(e["type"] == "chart" and e["chart"] == "group_rates" for e in m.evidence)


def test_multiclass_is_one_vs_rest_for_the_positive_class() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = x.argmax(1).astype(np.int64)
    sex = np.where(rng.random(n) < 0.5, "F", "M")
    x[sex == "F", 2] -= 0.7  # class 'c2' predicted less often for F
    lin = torch.nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
        lin.bias.zero_()
    model = LoadedModel(module=lin, sha256="t", source="t", architecture="linear")
    ds = Dataset("test", x, y, "tabular", ["c0", "c1", "c2"], sensitive={"sex": sex})
    m, ctx = run(ds, model, sensitive="sex", positive_label="c2")
    yb, pb = (y == 2).astype(int), (ctx.predictions("test") == 2).astype(int)
    assert abs(m.metrics["demographic_parity_difference"].value
               - demographic_parity_difference(yb, pb, sensitive_features=sex)) <= 1e-9
    assert abs(m.metrics["equalized_odds_difference"].value
               - equalized_odds_difference(yb, pb, sensitive_features=sex)) <= 1e-9
    explain = next(e for e in m.evidence if e["type"] == "text")["text"]
    assert "one-vs-rest" in explain and "'c2'" in explain
    # Index form and default (last class) pick the same class.
    assert run(ds, model, sensitive="sex", positive_label=2)[0].metrics == m.metrics
    assert run(ds, model, sensitive="sex")[0].metrics == m.metrics


def test_group_without_positives_has_undefined_tpr() -> None:
    ds = biased_data(2000, seed=5)
    ds.y[ds.sensitive["sex"] == "Female"] = 0  # no true positives among Female
    m, _ = run(ds, BIASED, sensitive="sex")
    rows = next(e for e in m.evidence if e["type"] == "table" and e["title"].startswith("Per-group"))["rows"]
    female = next(r for r in rows if r[0] == "Female")
    assert female[5]["value"] is None  # TPR column: undefined, not fairlearn's 0
    assert np.isnan(m.metrics["equal_opportunity_difference"].value)  # one group left: no gap


def test_data_errors_are_clear() -> None:
    ds = biased_data(500, seed=6)
    ctx = Context.from_objects({"test": ds}, FAIR)
    with pytest.raises(DataError, match=r"'gender'.*it has: race, sex"):
        GroupFairness.preflight(ctx, GroupFairness.Params(sensitive=["gender"]))
    with pytest.raises(DataError, match=r"positive_label 'maybe'.*deny, approve"):
        GroupFairness.preflight(ctx, GroupFairness.Params(sensitive=["sex"], positive_label="maybe"))
    with pytest.raises(DataError, match="min_group_size=1000"):
        GroupFairness.preflight(ctx, GroupFairness.Params(sensitive=["sex"], min_group_size=1000))
    ds.sensitive["const"] = np.full(len(ds), "x")
    with pytest.raises(DataError, match="single value"):
        GroupFairness.preflight(ctx, GroupFairness.Params(sensitive=["const"]))
    ds.sensitive["short"] = np.array(["a", "b"])
    with pytest.raises(DataError, match="2 values for 500 rows"):
        GroupFairness.preflight(ctx, GroupFairness.Params(sensitive=["short"]))


# ---- the Adult reference model, through the runner -------------------------------------
@pytest.fixture(scope="module")
def adult_audit(adult_transformer):
    from audit.runner import Runner
    from audit.spec import parse_spec

    spec = parse_spec({
        "name": "adult fairness", "seed": 0, "device": "cpu", "model": {"fixture": "adult-transformer"},
        "data": {"test": {"fixture": "adult", "split": "test"}},
        "checks": [
            {"id": "sex", "check": "fairness.group", "sensitive": ["sex"],
             "thresholds": {"demographic_parity_difference": {"max": 0.05}}},
            {"id": "sex-race", "check": "fairness.group", "sensitive": ["sex", "race"], "min_group_size": 100},
            {"id": "mia", "check": "privacy.membership_inference"},
        ]})
    runner = Runner(spec)
    runner.prepare()
    return runner, {e.id: runner.run_check(e) for e in spec.checks}


def test_adult_sex_gap_matches_fairlearn_and_fails(adult_audit) -> None:
    runner, results = adult_audit
    res = results["sex"]
    ds = runner.ctx.dataset("test")
    ref = demographic_parity_difference(ds.y, runner.ctx.predictions("test"), sensitive_features=ds.sensitive["sex"])
    dpd = res.metrics["demographic_parity_difference"]
    assert abs(dpd["value"] - ref) <= 1e-9
    assert dpd["ci"][0] < dpd["value"] < dpd["ci"][1]
    assert res.status == "fail" and res.thresholds[0].status == "fail"
    assert "demographic_parity_difference" in res.message
    assert runner.ctx.forward_samples == len(ds)  # one cached pass over the test set


def test_adult_intersectional_groups(adult_audit) -> None:
    _, results = adult_audit
    res = results["sex-race"]
    table = next(e for e in res.evidence if e["type"] == "table" and e["title"].startswith("Per-group"))
    assert len(table["rows"]) == 10  # 2 sexes x 5 races, all observed
    small = [r for r in table["rows"] if r[2] < 100]
    assert small and all(r[3] == "insufficient" for r in small)
    assert all(r[3] == "ok" for r in table["rows"] if r[2] >= 100)


def test_privacy_skipped_without_train(adult_audit) -> None:
    _, results = adult_audit
    assert results["mia"].status == "skipped" and "train" in results["mia"].message


def test_unknown_attribute_is_a_data_error_before_any_check(adult_transformer) -> None:
    from audit.runner import Runner
    from audit.spec import parse_spec

    spec = parse_spec({"name": "bad", "device": "cpu", "model": {"fixture": "adult-transformer"},
                       "data": {"test": {"fixture": "adult", "split": "test"}},
                       "checks": [{"id": "gaps", "check": "fairness.group", "sensitive": ["sex", "Race"]}]})
    with pytest.raises(DataError, match=r"'Race'.*it has: age_group, race, sex.*Did you mean 'race'"):
        Runner(spec).prepare()
