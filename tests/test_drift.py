"""shift.drift: calibrated under no drift (false-positive rate over 100 random halves of
the digits test split), flags Gaussian noise and the shapes style domains, names a
shifted tabular feature, and computes PSI, KS and MMD as Evidently does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.errors import SpecError
from audit.runner import Runner, run_audit
from audit.spec import parse_spec
from audit.transforms import apply_transform
from checks.shift.drift import (Drift, DriftParams, Side, combined_pvalue, drift_tests, ks_columns,
                                mmd_permutation_test, psi)

ALPHA = 0.05


@pytest.fixture(scope="module")
def digits_test() -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    return load_fixture_dataset("digits", "test")


def _tests_table(m) -> dict[str, list]:
    tab = next(e for e in m.evidence if e["type"] == "table" and e["title"] == "Two-sample tests")
    return {row[0]: row for row in tab["rows"]}


def test_no_drift_between_random_halves_of_the_test_split_at_the_nominal_rate(digits_cnn: LoadedModel,
                                                                               digits_test: Dataset) -> None:
    ctx = Context.from_objects({"test": digits_test}, digits_cnn)
    emb = ctx.embeddings("test")  # outputs and embeddings in one pass; the splits reuse them
    full = Side(ctx.probabilities("test"), emb)
    assert ctx.forward_samples == len(digits_test)
    rng = np.random.default_rng(2024)
    p = []
    with threadpool_limits(1):
        for _ in range(100):
            perm = rng.permutation(len(full))
            half = len(perm) // 2
            tests = drift_tests(full.take(perm[:half]), full.take(perm[half:]), permutations=100, n_max=1000,
                                rng=rng)
            p.append([t.pvalue for t in tests] + [combined_pvalue(tests)])
    fpr = (np.array(p) < ALPHA).mean(axis=0)  # BBSD KS, embedding KS, MMD, combined
    # at most alpha in expectation; 10/100 is beyond the binomial(100, 0.05) 97th percentile
    assert (fpr <= 0.10).all(), fpr
    assert fpr[2] > 0.0  # the permutation test is exact, not vacuous
    assert ctx.forward_samples == len(digits_test)


def test_the_test_split_against_itself_is_not_flagged(digits_cnn: LoadedModel, digits_test: Dataset) -> None:
    ctx = Context.from_objects({"test": digits_test}, digits_cnn)
    m = Drift().run(ctx, DriftParams(current="test", permutations=200))
    assert m.metrics["drift_pvalue"].value >= ALPHA
    lo, hi = m.metrics["domain_classifier_auc"].ci
    assert lo <= 0.5 <= hi
    assert m.metrics["drifted_feature_share"].value == 0.0
    note = next(e for e in m.evidence if e["title"] == "Two-sample tests")["note"]
    assert "disjoint random halves" in note and "270 reference, 270 current" in note


def test_gaussian_noise_severity_3_is_flagged_from_the_cached_pass(digits_cnn: LoadedModel) -> None:
    spec = parse_spec({
        "name": "drift", "seed": 0, "device": "cpu", "model": {"fixture": "digits-cnn"},
        "data": {"test": {"fixture": "digits", "split": "test"},
                 "domains": {"noisy": {"from": "test", "transform": "gaussian_noise", "severity": 3}}},
        "checks": [{"id": "drift", "check": "shift.drift", "current": "noisy", "permutations": 200,
                    "thresholds": {"drift_pvalue": {"min": ALPHA}, "domain_classifier_auc": {"max": 0.6}}}]})
    runner = Runner(spec)
    runner.prepare()  # the shared pass of 'test' takes its embeddings too (embedding_datasets)
    result = runner.run_check(spec.checks[0])
    n = len(runner.ctx.dataset("test"))
    # one pass per dataset: the check reran nothing
    assert runner.ctx.forward_samples == 2 * n
    assert result.status == "fail", result.message
    assert result.metrics["drift_pvalue"]["value"] < 1e-6
    assert result.metrics["domain_classifier_auc"]["ci"][0] > 0.6
    rows = {r[0]: r for r in next(e for e in result.evidence if e["title"] == "Two-sample tests")["rows"]}
    assert rows["BBSD: KS per class probability"][-1] == "yes"
    assert rows["MMD (Gaussian kernel), permutation test"][-1] == "yes"


@pytest.fixture(scope="module")
def shapes_model() -> LoadedModel:
    """A small CNN trained briefly on the shapes fixture (seconds on a CPU)."""
    from audit.zoo.cnn import CNN
    from fixtures.datasets import load_fixture_dataset

    train = load_fixture_dataset("shapes", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = CNN(in_channels=3, num_classes=4, widths=(8, 16), hidden=32, dropout=0.0)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        x, y = torch.from_numpy(train.x[:1200]), torch.from_numpy(train.y[:1200])
        for _ in range(3):
            for i in range(0, len(y), 64):
                loss = torch.nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return LoadedModel(module=net.eval(), sha256="0" * 64, source="test", architecture="small cnn")


@pytest.mark.parametrize("style", ["test-outline", "test-texture"])
def test_shapes_style_domains_are_flagged(shapes_model: LoadedModel, style: str) -> None:
    from fixtures.datasets import load_fixture_dataset

    def first(split: str, name: str, n: int = 400) -> Dataset:
        ds = load_fixture_dataset("shapes", split)
        return Dataset(name, ds.x[:n], ds.y[:n], "image", list(ds.classes))

    ctx = Context.from_objects({"test": first("test", "test"), "style": first(style, "style")}, shapes_model)
    m = Drift().run(ctx, DriftParams(current="style", permutations=200))
    assert m.metrics["drift_pvalue"].value < 1e-4
    assert m.metrics["domain_classifier_auc"].ci[0] > 0.7
    assert ctx.forward_samples == 800  # outputs and embeddings from one pass per dataset


def test_text_domain_is_flagged() -> None:
    from fixtures.datasets import load_fixture_dataset
    from fixtures.models import load_fixture_model

    books, electronics = load_fixture_dataset("reviews", "test"), load_fixture_dataset("reviews", "test-electronics")
    ctx = Context.from_objects({"test": books, "electronics": electronics}, load_fixture_model("text-transformer"))
    m = Drift().run(ctx, DriftParams(current="electronics", permutations=200, n_max=400))
    assert m.metrics["drift_pvalue"].value < 1e-4


def test_a_tabular_feature_shifted_by_half_a_standard_deviation_is_named(adult_transformer: LoadedModel) -> None:
    from fixtures.datasets import load_fixture_dataset

    full = load_fixture_dataset("adult", "test")
    perm = np.random.default_rng(0).permutation(len(full))[:6000]
    ref_idx, cur_idx = perm[:3000], perm[3000:]

    def part(idx: np.ndarray, name: str) -> Dataset:
        return dataclasses.replace(full, name=name, x=full.x[idx].copy(), y=full.y[idx], sensitive={},
                                   _sha256=None)

    ref, cur = part(ref_idx, "test"), part(cur_idx, "production")
    j = full.feature_names.index("hours-per-week")
    cur.x[:, j] += 0.5 * full.x[:, j].std()
    ctx = Context.from_objects({"test": ref, "production": cur}, adult_transformer)
    m = Drift().run(ctx, DriftParams(current="production", permutations=100, n_max=500))
    tab = next(e for e in m.evidence if e["title"] == "Per-feature drift")
    rows = tab["rows"]
    assert rows[0][0] == "hours-per-week" and rows[0][-1] == "yes"  # first: smallest p-value
    assert rows[0][7].startswith("+0.5")  # the mean shift in reference standard deviations
    assert [r[0] for r in rows if r[-1] == "yes"] == ["hours-per-week"]  # the only one named
    n_features = len(full.feature_groups)
    assert m.metrics["drifted_feature_share"].value == pytest.approx(1 / n_features)
    assert m.metrics["drift_pvalue"].value < 1e-6
    assert any(e["type"] == "chart" and e["title"] == "PSI per feature" for e in m.evidence)


def _evidently_stattests():
    """Evidently's legacy stat tests, where Evidently imports (0.7.x does not with pandas 3)."""
    try:
        from evidently.legacy.calculations import stattests
        from evidently.legacy.calculations.stattests import mmd_stattest
        from evidently.legacy.core import ColumnType
    except ImportError as exc:
        pytest.skip(f"Evidently does not import here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    return stattests, mmd_stattest, ColumnType


def _samples() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=800), rng.normal(0.3, 1.2, size=600)
    cat_ref = rng.integers(0, 5, 800).astype(float)
    cat_cur = rng.choice(6, 600, p=[.3, .2, .2, .1, .1, .1]).astype(float)
    return ref, cur, cat_ref, cat_cur


def test_psi_and_ks_match_evidently() -> None:
    import pandas as pd

    stattests, _, column_type = _evidently_stattests()
    ref, cur, cat_ref, cat_cur = _samples()
    ev_psi = stattests.psi_stat_test(pd.Series(ref), pd.Series(cur), column_type.Numerical, None).drift_score
    assert psi(ref, cur, categorical=False) == pytest.approx(ev_psi, rel=1e-12)
    ev_cat = stattests.psi_stat_test(pd.Series(cat_ref), pd.Series(cat_cur), column_type.Categorical, None)
    assert psi(cat_ref, cat_cur, categorical=True) == pytest.approx(ev_cat.drift_score, rel=1e-12)
    ev_ks = stattests.ks_stat_test(pd.Series(ref), pd.Series(cur), column_type.Numerical, None).drift_score
    assert ks_columns(ref[:, None], cur[:, None])[1][0] == pytest.approx(ev_ks, rel=1e-12)


def test_mmd_statistic_matches_evidently() -> None:
    _, mmd_mod, _ = _evidently_stattests()
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 1)), rng.normal(0.5, 1.0, size=(40, 1))
    _, sigma = mmd_mod.rbf(x, x, pass_sigma=None)  # Evidently's bandwidth, from the reference
    km = mmd_mod.kernel_matrix(x, y)
    expected = mmd_mod.mmd_2samp(km - np.diag(np.diagonal(km)), y.shape[0], permute=False)
    ours, p = mmd_permutation_test(x, y, 200, rng, gamma=1.0 / (2.0 * sigma ** 2))
    assert ours == pytest.approx(expected, rel=1e-10)


def test_psi_follows_evidentlys_binning_by_hand() -> None:
    """The same statistic, computed the way Evidently's `get_binned_data` documents it,
    here without Evidently: Sturges bins over both samples, empty bins at 0.0001."""
    ref, cur, cat_ref, cat_cur = _samples()
    edges = np.histogram_bin_edges(np.r_[ref, cur], bins="sturges")
    r, c = np.histogram(ref, edges)[0] / ref.size, np.histogram(cur, edges)[0] / cur.size
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    assert psi(ref, cur, categorical=False) == pytest.approx(np.sum((r - c) * np.log(r / c)), rel=1e-12)
    keys = np.arange(6)
    r = np.array([(cat_ref == k).mean() for k in keys])
    c = np.array([(cat_cur == k).mean() for k in keys])
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)  # class 5 never occurs in the reference
    assert psi(cat_ref, cat_cur, categorical=True) == pytest.approx(np.sum((r - c) * np.log(r / c)), rel=1e-12)
    assert psi(ref, ref, categorical=False) == 0.0


def test_vectorised_ks_and_the_mmd_permutation_test_match_direct_computation() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(120, 4)), rng.normal(0.2, 1.0, size=(90, 4))
    stat, p = ks_columns(a, b)
    for j in range(4):
        ref = ks_2samp(a[:, j], b[:, j])
        assert stat[j] == pytest.approx(ref.statistic) and p[j] == pytest.approx(ref.pvalue)
    # MMD^2_u by its definition, and the permutation p-value by a direct loop
    x, y = a[:30], b[:20]
    z = np.r_[x, y]
    sd = z.std(axis=0)
    z = (z - z.mean(axis=0)) / sd
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    gamma = 1.0 / np.median(d2[np.triu_indices(50, 1)])
    k = np.exp(-gamma * d2)

    def mmd(ix: np.ndarray, iy: np.ndarray) -> float:
        kxx, kyy, kxy = k[np.ix_(ix, ix)], k[np.ix_(iy, iy)], k[np.ix_(ix, iy)]
        return ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (20 * 19)
                - 2 * kxy.mean())

    observed = mmd(np.arange(30), np.arange(30, 50))
    value, pval = mmd_permutation_test(x, y, 300, np.random.default_rng(6))
    assert value == pytest.approx(observed, rel=1e-10)
    loop = np.random.default_rng(6)
    perms = loop.permuted(np.tile(np.arange(50), (300, 1)), axis=1)
    exceed = sum(mmd(np.flatnonzero(o < 30), np.flatnonzero(o >= 30)) >= observed - 1e-12 for o in perms)
    assert pval == pytest.approx((1 + exceed) / 301)


def test_current_is_required_and_named_like_a_dataset() -> None:
    base = {"name": "t", "model": {"fixture": "digits-cnn"},
            "data": {"test": {"fixture": "digits", "split": "test"},
                     "production": {"fixture": "digits", "split": "train"}}}
    with pytest.raises(SpecError, match="needs `current`"):
        parse_spec({**base, "checks": [{"id": "d", "check": "shift.drift"}]})
    with pytest.raises(SpecError, match="Did you mean 'production'"):
        parse_spec({**base, "checks": [{"id": "d", "check": "shift.drift", "current": "prodution"}]})
    spec = parse_spec({**base, "checks": [{"id": "d", "check": "shift.drift", "current": "production"}]})
    assert Drift.embedding_datasets(spec.checks[0].typed_params) == ("test", "production")


def test_run_audit_reports_drift_in_the_deployment_area(digits_test: Dataset) -> None:
    spec = parse_spec({
        "name": "drift", "seed": 0, "device": "cpu", "model": {"fixture": "digits-cnn"},
        "data": {"test": {"fixture": "digits", "split": "test"}},
        "checks": [{"id": "drift", "check": "shift.drift", "current": "test", "permutations": 100,
                    "thresholds": {"drift_pvalue": {"min": ALPHA}}}]})
    results = run_audit(spec).to_json()
    check = results["checks"][0]
    assert check["area"] == "deployment" and check["status"] == "pass", check["message"]
    assert results["provenance"]["compute"]["forward_samples"] == len(digits_test)
