"""performance.classification against scikit-learn on the same predictions; the
prediction cache shared by the three first checks; a raising check becomes `error`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score, log_loss, precision_score,
                             recall_score, roc_auc_score)

from audit.check import Check, Measurement, higher
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.registry import registry
from audit.runner import Runner
from audit.spec import parse_spec
from checks.data.integrity import DataIntegrity
from checks.performance.calibration import Calibration
from checks.performance.classification import ClassificationPerformance


def blobs(n: int, k: int, d: int, seed: int, present: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around one-hot-ish centres; `present` limits the labels drawn."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, present or k, n)
    centres = 1.5 * np.eye(k, d)
    return (rng.normal(size=(n, d)) + centres[y]).astype(np.float32), y.astype(np.int64)


def linear_model(k_out: int, d: int, seed: int) -> LoadedModel:
    """A tiny imperfect linear classifier: the blob directions plus noise."""
    torch.manual_seed(seed)
    m = torch.nn.Linear(d, k_out)
    with torch.no_grad():
        if k_out == 1:  # single logit for class 1 vs class 0
            m.weight.copy_(torch.tensor(np.eye(2, d)[1] - np.eye(2, d)[0], dtype=torch.float32)[None] * 1.5)
        else:
            m.weight.mul_(0.5).add_(torch.tensor(np.eye(k_out, d), dtype=torch.float32) * 1.5)
        m.bias.mul_(0.3)
    return LoadedModel(module=m, sha256="0" * 64, source="test", architecture="linear")


def make_ctx(k: int, k_out: int, n: int = 500, seed: int = 0, present: int | None = None,
             d: int = 6) -> Context:
    classes = [f"class{c}" for c in range(k)]
    xtr, ytr = blobs(3 * n, k, d, seed + 100)
    xte, yte = blobs(n, k, d, seed, present)
    return Context.from_objects({"train": Dataset("train", xtr, ytr, "tabular", classes),
                                 "test": Dataset("test", xte, yte, "tabular", classes)},
                                linear_model(k_out, d, seed))


def run(check: type[Check], ctx: Context, **params: object) -> Measurement:
    return check().run(ctx, check.Params(**params))


def sklearn_reference(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    pred = proba.argmax(axis=1)
    k = proba.shape[1]
    present = np.unique(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes absent from y_true
        recall = recall_score(y, pred, labels=present, average=None, zero_division=0)
        ref = {
            "accuracy": accuracy_score(y, pred),
            "balanced_accuracy": balanced_accuracy_score(y, pred),
            "f1_macro": f1_score(y, pred, average="macro", zero_division=0),
            "precision_macro": precision_score(y, pred, average="macro", zero_division=0),
            "recall_macro": recall_score(y, pred, average="macro", zero_division=0),
            "log_loss": log_loss(y, proba, labels=np.arange(k)),
            "worst_class_recall": float(recall.min()),
        }
    if k == 2:
        ref["roc_auc"] = roc_auc_score(y, proba[:, 1])
    elif len(present) == k:
        ref["roc_auc"] = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    else:
        # sklearn refuses multiclass AUC with an absent class; ours is the OvR mean over present ones
        ref["roc_auc"] = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return ref


CASES = {
    "multiclass": dict(k=4, k_out=4),
    "binary-two-logits": dict(k=2, k_out=2),
    "binary-single-logit": dict(k=2, k_out=1),
    "class-absent": dict(k=4, k_out=4, present=3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_point_estimates_equal_sklearn(case: str) -> None:
    ctx = make_ctx(**CASES[case])
    m = run(ClassificationPerformance, ctx, resamples=500, weight_resamples=200)
    ds = ctx.dataset("test")
    proba = ctx.probabilities("test")
    assert proba.shape[1] == ds.n_classes
    ref = sklearn_reference(ds.y, proba)
    assert set(m.metrics) == set(ClassificationPerformance.metrics)
    for name, value in ref.items():
        assert m.metrics[name].value == pytest.approx(value, abs=1e-9), name
        lo, hi = m.metrics[name].ci
        assert lo <= m.metrics[name].value <= hi, name
    # imperfect model: the accuracy CI is a real interval, not a point
    acc = m.metrics["accuracy"]
    assert 0.5 < acc.value < 0.99 and acc.ci[1] - acc.ci[0] > 0.02


def test_absent_class_gets_a_note_and_no_recall() -> None:
    ctx = make_ctx(k=4, k_out=4, present=3)
    m = run(ClassificationPerformance, ctx, resamples=500, weight_resamples=200)
    per_class = next(e for e in m.evidence if e["type"] == "table")
    absent_row = per_class["rows"][3]
    assert absent_row[0] == "class3" and absent_row[1] == 0 and absent_row[3] is None
    assert "absent" in per_class["note"] and "class3" in per_class["note"]
    # the present classes carry a recall with a CI that brackets it
    rec = per_class["rows"][0][3]
    assert rec["ci"][0] <= rec["value"] <= rec["ci"][1]


def test_evidence_has_table_confusion_matrix_and_text() -> None:
    ctx = make_ctx(k=3, k_out=3)
    m = run(ClassificationPerformance, ctx, resamples=500, weight_resamples=200)
    kinds = [e["type"] for e in m.evidence]
    assert kinds.count("chart") == 1 and "table" in kinds and "text" in kinds
    fig = next(e for e in m.evidence if e["type"] == "chart")
    assert fig["chart"] == "confusion_matrix" and len(fig["data"]["cm"]) == len(fig["data"]["classes"])
    table = next(e for e in m.evidence if e["type"] == "table")
    assert sum(r[1] for r in table["rows"]) == len(ctx.dataset("test"))


def test_resamples_are_seeded() -> None:
    a = run(ClassificationPerformance, make_ctx(k=3, k_out=3), resamples=500, weight_resamples=200)
    b = run(ClassificationPerformance, make_ctx(k=3, k_out=3), resamples=500, weight_resamples=200)
    assert a.metrics == b.metrics


def test_one_forward_pass_per_sample_for_the_three_checks() -> None:
    ctx = make_ctx(k=3, k_out=3, n=300)
    run(ClassificationPerformance, ctx, resamples=500, weight_resamples=200)
    run(Calibration, ctx, weight_resamples=200)
    run(DataIntegrity, ctx, resamples=500)
    assert ctx.forward_samples == len(ctx.dataset("test")) == 300
    assert ctx.backward_samples == 0


class _Boom(Check):
    name = "testing.boom"
    metrics = {"x": higher("a planted metric")}

    def run(self, ctx: Context, params: object) -> Measurement:
        raise RuntimeError("planted failure")


def test_a_raising_check_becomes_error_and_the_audit_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._loaded, _Boom.name, _Boom)  # removed again after the test
    spec = parse_spec({
        "name": "runner test", "seed": 0, "device": "cpu",
        "model": {"fixture": "in-memory"},
        "data": {"train": {"fixture": "in-memory"}, "test": {"fixture": "in-memory"}},
        "checks": [
            {"id": "boom", "check": "testing.boom"},
            {"id": "heldout", "check": "performance.classification", "resamples": 500,
             "weight_resamples": 200, "thresholds": {"accuracy": {"min": 0.3}}},
        ],
    })
    runner = Runner(spec)
    ctx = make_ctx(k=3, k_out=3, n=300)
    runner.ctx = ctx
    for entry in spec.checks:
        runner.run_check(entry)
    results = runner.finish()
    boom, heldout = results.checks
    assert boom.status == "error" and "planted failure" in boom.message
    assert boom.traceback and "RuntimeError: planted failure" in boom.traceback
    assert heldout.status == "pass" and heldout.traceback is None
    assert heldout.metrics["accuracy"]["ci"][0] >= 0.3
    assert results.provenance["compute"]["forward_samples"] == 300


# ---- integration on the built-in digits CNN ---------------------------------------------
@pytest.fixture(scope="module")
def digits_ctx(digits_cnn: LoadedModel) -> Context:
    from fixtures.datasets import load_fixture_dataset

    return Context.from_objects({"train": load_fixture_dataset("digits", "train"),
                                 "test": load_fixture_dataset("digits", "test")}, digits_cnn)


def test_three_checks_on_digits_cnn(digits_ctx: Context) -> None:
    ctx = digits_ctx
    perf = run(ClassificationPerformance, ctx, resamples=2000, weight_resamples=500)
    cal = run(Calibration, ctx, weight_resamples=500)
    integ = run(DataIntegrity, ctx, resamples=2000)
    test = ctx.dataset("test")
    assert ctx.forward_samples == len(test)
    ref = sklearn_reference(test.y, ctx.probabilities("test"))
    for name, value in ref.items():
        assert perf.metrics[name].value == pytest.approx(value, abs=1e-9), name
    acc = perf.metrics["accuracy"]
    assert acc.value > 0.9 and acc.ci[0] < acc.value < acc.ci[1]
    assert 0.0 <= cal.metrics["ece"].value < 0.1
    # the fixture's stratified split has no leakage and the same label distribution
    assert integ.metrics["train_test_overlap"].value == 0.0
    assert integ.metrics["label_shift_pvalue"].value > 0.5
