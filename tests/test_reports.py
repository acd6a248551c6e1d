"""Compliance report: HTML content and escaping, sections by area key, flags and
thresholds as judged, PDF layout and URL refusal, atomic writes, and the diff between
two audits. Figures (chart kinds, the sanitizer, determinism): test_report_figures.py."""

from __future__ import annotations

import copy
import json
import os
import re

import numpy as np
import pytest

import reports
from audit.check import DEFAULT_CONFIDENCE
from audit.formatting import format_threshold, format_value
from reports.diff import diff_results, format_diff
from reports.html import CSP
from reports.view import anchor_for, headline_metric

XSS = "<script>alert(1)</script>"
CLASSES = ["zero", "one", "two", f"three {XSS}"]


def _cell(v, lo, hi):
    return {"value": v, "ci": [lo, hi]}


def _lists(a) -> list:
    """An array as results.json holds it: nested lists, None for NaN."""
    return json.loads(json.dumps(np.where(np.isfinite(a), np.round(a, 4), np.nan).tolist()).replace("NaN", "null"))


def chart_samples() -> dict[str, dict]:
    """Chart evidence `data` for every chart kind, in JSON form (lists, nested lists,
    None for NaN): what a results.json written by the runner holds."""
    rng = np.random.default_rng(0)
    conf = np.linspace(0.05, 0.95, 10)
    fpr = np.linspace(0, 1, 21)
    attributions = rng.normal(size=(30, 3))
    attributions[4, 1] = np.nan
    values = rng.normal(size=(30, 3))
    values[:, 2] = np.nan  # a one-hot group has no single value: grey dots
    image = rng.random((3, 8, 8))
    return {
        "confusion_matrix": {"cm": [[48, 1, 0, 1], [2, 45, 2, 1], [0, 3, 44, 3], [1, 0, 2, 47]], "classes": CLASSES},
        "reliability_diagram": {"bin_conf": _lists(np.r_[conf[:9], np.nan]),
                                "bin_acc": _lists(np.r_[np.clip(conf[:9] - 0.04, 0, 1), np.nan]),
                                "bin_count": [3, 5, 8, 13, 21, 34, 55, 89, 120, 0], "title": "Reliability"},
        "bar": {"labels": ["test", "rotated", "noisy $50K-$100K"], "values": [0.95, 0.64, 0.85],
                "ci_lo": [0.93, None, 0.82], "ci_hi": [0.97, None, 0.88], "title": "Accuracy per domain",
                "ylabel": "accuracy", "threshold": 0.85, "ylim": [0.0, 1.02], "highlight": [False, True, False]},
        "line": {"series": {"PGD": [[0.02, 0.05, 0.1], [0.9, 0.71, 0.52], [0.87, None, 0.47], [0.93, None, 0.58]],
                            "FGSM": [[0.02, 0.05, 0.1], [0.92, 0.8, 0.66]]},
                 "xlabel": "epsilon", "ylabel": "accuracy", "title": "Robust accuracy", "threshold": 0.5,
                 "ylim": [0.0, 1.02]},
        "roc": {"fpr": _lists(fpr), "tpr": _lists(np.sqrt(fpr)), "title": "Attack ROC", "label": "loss"},
        "image_grid": {"images": [_lists(image), _lists(image[0]), _lists(image[1]), _lists(-image[2])],
                       "titles": ["rgb", "gray", "gray 2", f"negative {XSS}"],
                       "overlays": [_lists(rng.normal(size=(8, 8))), None, _lists(rng.normal(size=(8, 8))), None],
                       "ncols": 2, "title": "Examples", "overlay_label": "|perturbation|"},
        "class_shares": {"classes": CLASSES, "splits": {"test": [[0.25] * 4, [0.2] * 4, [0.3] * 4],
                                                        "train": [[0.3, 0.2, 0.25, 0.25], [0.28, 0.18, None, 0.22],
                                                                  [0.32, 0.22, None, 0.28]]}},
        "importance_bars": {"names": ["age", "hours-per-week", "sex"], "values": [0.31, 0.12, 0.05],
                            "lo": [0.28, None, 0.03], "hi": [0.34, None, 0.07], "title": "Global importance"},
        "beeswarm": {"names": ["age", "hours-per-week", "sex"], "attributions": _lists(attributions),
                     "values": _lists(values), "title": "Attribution summary"},
        "group_rates": {"groups": ["sex=Female", "sex=Male", "sex=Other"],
                        "series": {"selection rate": [[0.11, 0.29, 0.2], [0.1, 0.28, None], [0.12, 0.3, None]],
                                   "TPR": [[0.7, 0.8, None], [0.65, 0.77, None], [0.75, 0.83, None]]},
                        "insufficient": [False, False, True], "title": "Rates by sex"},
        "severity_curves": {"severities": [1, 2, 3, 4, 5],
                            "curves": {"gaussian_noise": [0.9, 0.85, 0.7, 0.5, 0.3],
                                       "gaussian_blur": [0.93, 0.9, None, 0.8, 0.7]}, "clean": 0.95},
    }


def chart(kind: str, title: str, data: dict | None = None, caption: str | None = None) -> dict:
    ev = {"type": "chart", "chart": kind, "title": title, "data": data if data is not None else chart_samples()[kind]}
    if caption:
        ev["caption"] = caption
    return ev


def _check(id_: str, check: str, area: str, status: str, metrics: dict, info: dict, thresholds: list,
           message: str, evidence: list, **extra) -> dict:
    """One check result in the runner's shape (audit.results.CheckResult.to_json)."""
    return {"id": id_, "check": check, "version": 1, "clause": extra.pop("clause", None), "status": status,
            "data": "test", "area": area, "summary": extra.pop("summary", ""),
            "confidence": extra.pop("confidence", 0.95), "params": extra.pop("params", {"data": "test"}),
            "metrics": metrics, "metric_info": info, "thresholds": thresholds, "message": message,
            "flags": extra.pop("flags", []), "evidence": evidence, "duration_s": extra.pop("duration_s", 0.1),
            "traceback": extra.pop("traceback", None), **extra}


def _mi(hib: bool, description: str, unit: str = "", proportion: bool = False) -> dict:
    return {"higher_is_better": hib, "description": description, "unit": unit,
            "bounds": [0.0, 1.0] if proportion else [None, None], "proportion": proportion}


def _thr(metric: str, op: str, limit: float, status: str, value, ci, level: str = "must") -> dict:
    return {"metric": metric, "op": op, "limit": limit, "level": level, "status": status, "value": value, "ci": ci}


def make_results() -> dict:
    """A realistic audit-results/1 document: every status, CIs, chart evidence of every
    kind, a legacy figure, flags, a training record, and user labels carrying a script tag."""
    checks = [
        _check("integrity", "data.integrity", "data", "pass",
               {"train_test_overlap": {"value": 0.0, "ci": [0.0, 0.0102]},
                "duplicate_fraction": _cell(0.002, 0.0, 0.006)},
               {"train_test_overlap": _mi(False, "Share of test rows also in train.", proportion=True),
                "duplicate_fraction": _mi(False, "Share of rows that are exact duplicates.", proportion=True)},
               [_thr("train_test_overlap", "max", 0.02, "pass", 0.0, [0.0, 0.0102])],
               "train_test_overlap 0.000 [0.000, 0.010] <= 0.02",
               [{"type": "table", "title": "Duplicates per split", "columns": ["split", "rows", "duplicates"],
                 "rows": [["train", 1437, 3], ["test", 360, 0]]},
                chart("class_shares", "Class distribution", caption="Share of each class per split.")],
               clause="2.3 Data quality and leakage",
               summary="Exact duplicates within and across splits, missing values, class balance."),
        _check("heldout", "performance.classification", "evaluation", "pass",
               {"accuracy": _cell(0.953, 0.931, 0.972), "f1_macro": _cell(0.951, 0.928, 0.970),
                "worst_class_recall": _cell(0.88, 0.80, 0.94)},
               {"accuracy": _mi(True, "Share of test samples classified correctly.", proportion=True),
                "f1_macro": _mi(True, "Unweighted mean of per-class F1."),
                "worst_class_recall": _mi(True, "Recall of the class the model does worst on.", proportion=True)},
               [_thr("accuracy", "min", 0.9, "pass", 0.953, [0.931, 0.972]),
                # judged on a family-wise (Holm) widened interval, not the one in the metrics table
                _thr("worst_class_recall", "min", 0.75, "pass", 0.88, [0.77, 0.96], level="should")],
               "accuracy 0.953 [0.931, 0.972] >= 0.9",
               [{"type": "table", "title": "Per-class metrics", "columns": ["class", "precision", "recall", "support"],
                 "rows": [[c, _cell(0.95, 0.9, 0.99), _cell(0.921, 0.853, 0.978), 50] for c in CLASSES],
                 "note": "Intervals: 95% bootstrap over confusion-matrix cells."},
                chart("confusion_matrix", "Confusion matrix", caption="Rows are true classes; colour is the row rate.")],
               clause=f"4.1 Held-out performance {XSS}", params={"data": "test", "confidence": 0.95, "average": "macro"},
               summary="Accuracy and per-class metrics on the held-out test set."),
        _check("calibration", "performance.calibration", "evaluation", "warn",
               {"ece": _cell(0.041, 0.022, 0.063), "brier": _cell(0.07, 0.05, 0.09)},
               {"ece": _mi(False, "Expected calibration error over 10 equal-width bins."),
                "brier": _mi(False, "Mean squared error of the predicted probabilities.")},
               [_thr("ece", "max", 0.05, "warn", 0.041, [0.022, 0.063])],
               "ece 0.041 [0.022, 0.063]: interval straddles 0.05 (inconclusive)",
               [chart("reliability_diagram", "Reliability diagram")], clause="4.2 Calibration", confidence=0.9),
        _check("domains", "shift.domain", "evaluation", "fail",
               {"max_drop": _cell(0.31, 0.26, 0.36), "mean_drop": _cell(0.2, 0.17, 0.23)},
               {"max_drop": _mi(False, "Largest accuracy drop over the domains."),
                "mean_drop": _mi(False, "Mean accuracy drop over the domains.")},
               [_thr("max_drop", "max", 0.1, "fail", 0.31, [0.26, 0.36])],
               "max_drop 0.310 [0.260, 0.360] > 0.1", [chart("bar", "Accuracy per domain")],
               clause="4.4 Cross-domain validation"),
        _check("corruption", "shift.corruption", "robustness", "info",
               {"mean_relative_accuracy": _cell(0.74, 0.7, 0.78)},
               {"mean_relative_accuracy": _mi(True, "Mean accuracy under corruption relative to clean.")},
               [], "reported without thresholds", [chart("severity_curves", "Accuracy vs severity")]),
        _check("pgd", "robustness.adversarial", "robustness", "warn",
               {"robust_accuracy": _cell(0.52, 0.47, 0.58), "attack_success_rate": _cell(0.45, 0.4, 0.5)},
               {"robust_accuracy": _mi(True, "Accuracy on adversarial inputs at the largest eps."),
                "attack_success_rate": _mi(False, "Share of correct predictions the attack flips.")},
               [_thr("robust_accuracy", "min", 0.5, "warn", 0.52, [0.47, 0.58])],
               "robust_accuracy 0.520 [0.470, 0.580]: interval straddles 0.5",
               [chart("line", "Robust accuracy by epsilon"),
                chart("image_grid", "Adversarial examples",
                      caption="Clean image with the perturbation overlaid; titles are true -> adversarial class.")],
               clause="5.1 Adversarial robustness", params={"data": "test", "attack": "pgd", "eps": [0.02, 0.05, 0.1],
                                                           "random_start": True},
               flags=[{"flag": "non_monotone", "detail": f"accuracy rose between eps 0.05 and 0.1 {XSS}"}],
               summary="PGD (Linf) accuracy under attack over an epsilon sweep."),
        _check("ig", "explain.attribution", "explainability", "skipped", {}, {}, [],
               "requires 'gradients': the model is a TorchScript module without autograd support", [],
               clause="6.1 Attributions", summary="Integrated gradients: faithfulness and randomization sanity."),
        _check("shap", "explain.attribution", "explainability", "info",
               {"deletion_faithfulness": _cell(0.21, 0.15, 0.27)},
               {"deletion_faithfulness": _mi(True, "Area between random and attribution-order deletion curves.")},
               [], "", [chart("importance_bars", "Global feature importance"),
                        chart("beeswarm", "Attribution summary")]),
        _check("gaps", "fairness.group", "fairness", "fail",
               {"demographic_parity_difference": _cell(0.18, 0.12, 0.24),
                "equalized_odds_difference": _cell(0.09, 0.05, 0.14)},
               {"demographic_parity_difference": _mi(False, "Largest gap in positive rate between groups."),
                "equalized_odds_difference": _mi(False, "Largest gap in TPR or FPR between groups.")},
               [_thr("demographic_parity_difference", "max", 0.1, "fail", 0.18, [0.12, 0.24])],
               "demographic_parity_difference 0.180 [0.120, 0.240] > 0.1",
               [{"type": "table", "title": "Per-group rates", "columns": ["group", "n", "selection rate"],
                 "rows": [["sex=Female", 5421, _cell(0.11, 0.1, 0.12)], ["sex=Male", 10860, _cell(0.29, 0.28, 0.3)]]},
                chart("group_rates", "Per-group rates"),
                {"type": "text", "title": "Method", "text": "Groups smaller than 30 are left out.\nIntervals: 95% bootstrap."}],
               clause="7.1 Group fairness", summary="Selection-rate and error-rate gaps between groups."),
        _check("mia", "privacy.membership_inference", "privacy", "pass",
               {"mia_auc": _cell(0.52, 0.49, 0.55)}, {"mia_auc": _mi(False, "ROC AUC of the attack; 0.5 is chance.")},
               [_thr("mia_auc", "max", 0.6, "pass", 0.52, [0.49, 0.55])], "mia_auc 0.520 [0.490, 0.550] <= 0.6",
               [chart("roc", "Attack ROC")], clause="8.1 Membership inference"),
        _check("latency", "efficiency.latency", "deployment", "error", {},
               {"p95_ms": _mi(False, "95th percentile latency per batch.", unit="ms")}, [],
               "RuntimeError: CUDA out of memory", [], clause="9.1 Latency",
               traceback="Traceback (most recent call last):\n  File \"checks/efficiency/latency.py\", line 40, in run\n"
                         "RuntimeError: CUDA out of memory <oops>"),
        _check("size", "efficiency.latency", "deployment", "pass", {"size_mb": {"value": 0.084, "ci": None}},
               {"size_mb": _mi(False, "Serialized model size.", unit="MB")},
               [_thr("size_mb", "max", 10.0, "pass", 0.084, None)], "size_mb 0.084 <= 10", []),
        _check("repro", "training.reproducibility", "training", "pass",
               {"prediction_agreement": {"value": 1.0, "ci": [0.995, 1.0]}},
               {"prediction_agreement": _mi(True, "Share of identical predictions across runs.", proportion=True)},
               [_thr("prediction_agreement", "min", 0.99, "pass", 1.0, [0.995, 1.0])],
               "prediction_agreement 1.000 [0.995, 1.000] >= 0.99",
               # results written before flags left the evidence still render their flags box
               [{"type": "flags", "title": "Non-determinism", "flags": []}], clause="3.2 Reproducibility"),
    ]
    summary = {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail", "error", "skipped", "info")}
    spec = {"name": "Digits CNN release audit", "seed": 0, "model": {"fixture": "digits-cnn"},
            "data": {"train": {"fixture": "digits", "split": "train"}, "test": {"fixture": "digits", "split": "test"}},
            "checks": [{"id": c["id"], "check": c["check"], "clause": c["clause"]} for c in checks]}
    layers = [{"name": f"features.{i}", "type": t, "params": p}
              for i, (t, p) in enumerate([("Conv2d", 160), ("ReLU", 0), ("Conv2d", 4640), ("ReLU", 0),
                                          ("MaxPool2d", 0), ("Linear", 16448), ("ReLU", 0), ("Linear", 650)])]
    return {
        "schema": "audit-results/1",
        "name": "Digits CNN release audit",
        "standard": "Foundation model specification",
        "verdict": "error",
        "summary": summary,
        "checks": checks,
        "datasets": {
            "train": {"name": "digits", "kind": "image", "n": 1437, "shape": [1, 8, 8], "classes": CLASSES,
                      "class_counts": {c: 359 for c in CLASSES}, "sensitive": [], "source": "fixture:digits",
                      "sha256": "a" * 64},
            "test": {"name": "digits", "kind": "image", "n": 360, "shape": [1, 8, 8], "classes": CLASSES,
                     "class_counts": {c: 90 for c in CLASSES}, "sensitive": [], "source": "fixture:digits",
                     "sha256": "b" * 64},
        },
        "model": {"architecture": "cnn", "source": "fixture:digits-cnn", "sha256": "c" * 64, "params": 21898,
                  "trainable_params": 21898, "layers": layers, "input_range": [0.0, 1.0]},
        "training": {
            "recipe": {"architecture": "cnn", "epochs": 6, "batch_size": 128, "lr": 0.001, "optimizer": "adamw",
                       "loss": "cross_entropy", "metric": "accuracy"},
            "epochs": [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.8 / e + 0.02 * e, "val_metric": 0.7 + 0.04 * e}
                       for e in range(1, 7)],
            "best_epoch": 5, "wall_s": 12.5, "device": "cpu", "seed": 0, "model_sha256": "d" * 64,
        },
        "provenance": {
            "spec_sha256": "e" * 64, "model_sha256": "c" * 64, "data_sha256": {"train": "a" * 64, "test": "b" * 64},
            "seed": 0, "device": "cpu", "versions": {"python": "3.12.1", "torch": "2.13.0", "audit": "0.1.0"},
            "started_at": "2025-01-15T09:30:00+00:00", "duration_s": 8.2,
            "compute": {"forward_samples": 12000, "backward_samples": 3000},
            "spec": spec, "timings": {"load_model": 0.4, "load_data": 0.2, "checks": 4.1},
        },
    }


def without_figures(results: dict) -> dict:
    """A copy without chart and figure evidence: for tests about everything else (drawing
    every chart again costs seconds per render)."""
    res = copy.deepcopy(results)
    for c in res["checks"]:
        c["evidence"] = [ev for ev in c["evidence"] if ev.get("type") not in ("chart", "figure")]
    res["training"] = {k: v for k, v in res["training"].items() if k != "epochs"}
    return res


def make_minimal_results() -> dict:
    """Only the keys DESIGN.md lists (no area, no confidence, no flags)."""
    return {
        "schema": "audit-results/1", "name": "Tiny", "standard": "", "verdict": "compliant",
        "summary": {"pass": 1, "warn": 0, "fail": 0, "error": 0, "skipped": 0},
        "checks": [{"id": "heldout", "check": "performance.classification", "version": 1, "clause": "4.1",
                    "status": "pass", "metrics": {"accuracy": {"value": 0.97, "ci": [0.95, 0.98]}},
                    "thresholds": [{"metric": "accuracy", "op": "min", "limit": 0.95, "level": "must", "status": "pass"}],
                    "message": "ok", "evidence": [], "duration_s": 0.1, "traceback": None}],
        "provenance": {"spec_sha256": "1" * 64, "model_sha256": "2" * 64, "data_sha256": {"test": "3" * 64},
                       "seed": 0, "device": "cpu", "versions": {}, "started_at": "2025-01-01T00:00:00",
                       "duration_s": 1.0, "compute": {"forward_samples": 0, "backward_samples": 0}},
    }


def check_section(html: str, anchor: str) -> str:
    part = html[html.index(f'id="{anchor}"'):]
    return part[:part.index("</article>")]


@pytest.fixture(scope="module")
def results() -> dict:
    return make_results()


@pytest.fixture(scope="module")
def html(results) -> str:
    return reports.render_html(results)


@pytest.fixture(scope="module")
def written(results, tmp_path_factory):
    """The full report written once (json, html, pdf); URLs the PDF fetcher refused."""
    import logging

    refused: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            refused.append(record.getMessage())

    grab = Grab(level=logging.WARNING)
    logging.getLogger("reports.pdf").addHandler(grab)
    try:
        out = tmp_path_factory.mktemp("report")
        paths = reports.write_report(results, out, {"json", "html", "pdf"})
    finally:
        logging.getLogger("reports.pdf").removeHandler(grab)
    return out, paths, refused


# --------------------------------------------------------------------------- HTML


def test_html_cover_and_verdict(html, results):
    assert html.startswith("<!DOCTYPE html>")
    assert '<h1 class="title">Digits CNN release audit</h1>' in html
    assert "Foundation model specification" in html
    assert 'class="verdict-box v-error"' in html
    assert ">Error</div>" in html
    # counts per status on the cover
    for status, n in results["summary"].items():
        assert re.search(rf'class="count st-{status}[^"]*"><span class="n">{n}</span>', html), status
    assert "2025-01-15 09:30 UTC" in html
    assert "cccccccccccc" in html and "eeeeeeeeeeee" in html  # short model/spec hashes
    assert "How to read this report" in html


def test_html_verdict_follows_results(results):
    ok = without_figures(results)
    ok["verdict"] = "compliant"
    out = reports.render_html(ok)
    assert 'class="verdict-box v-compliant"' in out and ">Compliant</div>" in out
    ok["verdict"] = "not assessed"
    out = reports.render_html(ok)
    assert 'class="verdict-box v-not-assessed"' in out and ">Not assessed</div>" in out


def test_content_security_policy(html):
    head = html[:html.index("</head>")]
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    assert meta in head and head.index(meta) < head.index("<style>")  # before anything it governs
    assert "default-src 'none'" in CSP and "img-src data:" in CSP and "script-src" not in CSP


def test_compliance_matrix_rows_link_to_sections(html, results):
    matrix = html[html.index('id="compliance-matrix"'):html.index('id="sec-data"')]
    rows = re.findall(r'<tr class="row-(\w+)">', matrix)
    assert rows == [c["status"] for c in results["checks"]]
    for c in results["checks"]:
        anchor = anchor_for(c["id"])
        assert f'href="#{anchor}"' in matrix
        assert f'id="{anchor}"' in html  # the target exists
    # headline metric with CI and threshold text
    assert "0.953 [0.931, 0.972]" in matrix
    assert "≥ 0.9 (must)" in matrix
    assert "≤ 0.1 (must)" in matrix
    # status is text, not colour alone
    assert "FAIL" in matrix.upper() and "✗" in matrix


def test_matrix_shows_what_the_headline_threshold_was_judged_on(results):
    res = without_figures(results)
    heldout = next(c for c in res["checks"] if c["id"] == "heldout")
    heldout["thresholds"][0]["ci"] = [0.921, 0.979]  # e.g. widened for a family-wise error rate
    out = reports.render_html(res)
    matrix = out[out.index('id="compliance-matrix"'):out.index('id="sec-data"')]
    assert "0.953 [0.921, 0.979]" in matrix and "0.953 [0.931, 0.972]" not in matrix
    section = check_section(out, "heldout")
    assert "judged on 0.953 [0.921, 0.979]" in section


def test_threshold_judged_value_shown_when_it_differs(html):
    heldout = check_section(html, "heldout")
    # worst_class_recall: metric 0.880 [0.800, 0.940], judged on 0.880 [0.770, 0.960]
    assert re.search(r"≥ 0.75 \(should\)<span class=\"judged\">judged on 0.880 \[0.770, 0.960\]</span>", heldout)
    assert heldout.count("judged on") == 1  # accuracy was judged on the interval shown beside it


def test_flags_are_shown(html):
    pgd = check_section(html, "pgd")
    assert 'class="evidence ev-flags has-flags"' in pgd and "Sanity flags" in pgd
    assert '<span class="flag-name">non_monotone</span> — accuracy rose between eps 0.05 and 0.1' in pgd
    assert XSS not in pgd  # flag details are data
    assert "Sanity flags" not in check_section(html, "heldout")  # no flags, no box
    repro = check_section(html, "repro")  # a legacy flags evidence item still renders
    assert 'class="evidence ev-flags no-flags"' in repro and "No flags raised." in repro


def test_confidence_comes_from_the_result(html, results):
    assert "90% CI" in check_section(html, "calibration")
    assert "95% CI" in check_section(html, "heldout")
    res = without_figures(results)
    del res["checks"][2]["confidence"]  # older results: the one documented default
    assert f"{DEFAULT_CONFIDENCE * 100:g}% CI" in check_section(reports.render_html(res), "calibration")


def test_params_and_units_are_shown(html):
    pgd = check_section(html, "pgd")
    assert "<code>attack</code> = <code>pgd</code>" in pgd
    assert "<code>eps</code> = <code>[0.02, 0.05, 0.1]</code>" in pgd
    assert "<code>random_start</code> = <code>true</code>" in pgd
    assert "<code>data</code> =" not in pgd  # shown in the header already
    assert "0.084 MB" in check_section(html, "size")


def test_anchor_is_dotted_lowercase():
    assert anchor_for("HeldOut Acc/v2") == "heldout.acc.v2"
    assert anchor_for("heldout") == "heldout"


def test_user_text_is_escaped(html):
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "&lt;oops&gt;" in html  # traceback text is escaped too


def test_no_external_resources(html):
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)', html)
    assert refs, "expected anchors"
    for ref in refs:
        assert ref.startswith("#") or ref.startswith("data:image/svg+xml;base64,"), ref
    assert "<link" not in html and "@import" not in html and "<script" not in html
    assert "<svg" not in html  # figures are images, never inline markup


def test_sections_in_specification_order(html):
    titles = re.findall(r'<h2 class="section-title area-title"><span class="num">\d+</span> ([^<]+)</h2>', html)
    assert titles == ["Data specification", "Algorithm specification", "Training specification",
                      "Evaluation and validation", "Robustness", "Explainability", "Fairness", "Privacy", "Deployment"]
    assert html.index('id="heldout"') < html.index('id="pgd"') < html.index('id="gaps"')


def _section_of(html: str, anchor: str) -> str:
    """The area key of the section holding the check `anchor`."""
    pos = html.index(f'id="{anchor}"')
    return re.findall(r'<section class="area[^"]*" id="sec-([\w-]+)"', html[:pos])[-1]


def test_area_grouping_uses_the_area_key(html, results):
    for c in results["checks"]:
        assert _section_of(html, anchor_for(c["id"])) == c["area"], c["id"]
    res = without_figures(results)
    by_id = {c["id"]: c for c in res["checks"]}
    by_id["heldout"]["area"] = "fairness"  # the key decides, not the check's name
    del by_id["mia"]["area"]  # nothing is guessed from "privacy.*"
    by_id["domains"]["area"] = "Evaluation and validation"  # a title is not a key
    out = reports.render_html(res)
    assert _section_of(out, "heldout") == "fairness"
    assert _section_of(out, "mia") == "other" and _section_of(out, "domains") == "other"
    assert "Other checks" in out
    privacy = out[out.index('id="sec-privacy"'):out.index('id="sec-deployment"')]
    assert "No checks in this audit cover this area." in privacy


def test_check_sections_render_every_evidence_type(html):
    heldout = check_section(html, "heldout")
    assert "0.921 [0.853, 0.978]" in heldout  # CI table cell
    assert '<img class="chart" src="data:image/svg+xml;base64,' in heldout and 'alt="Confusion matrix"' in heldout
    assert "Share of test samples classified correctly." in heldout  # metric description
    assert "≥ 0.75 (should)" in heldout
    assert 'class="prose"' in html and "Groups smaller than 30" in html
    assert '<pre class="traceback">' in html and "CUDA out of memory" in html
    assert "Reason:</span> requires &#39;gradients&#39;" in html
    assert "Cannot draw this figure" not in html
    assert "No checks in this audit cover this area." not in html[html.index('id="sec-privacy"'):html.index('id="sec-deployment"')]


def test_info_status_is_reported_not_judged(html):
    corruption = check_section(html, "corruption")
    assert '<article class="check st-info" id="corruption">' in html
    assert "INFO" in corruption.upper() and "reported" in corruption


def test_long_layer_list_collapses_in_print(results, html):
    res = without_figures(results)
    res["model"]["layers"] = [{"name": f"blocks.{i}.attn", "type": "MultiheadAttention", "params": 4160}
                              for i in range(40)]
    algo = reports.render_html(res)
    algo = algo[algo.index('id="sec-algorithm"'):algo.index('id="sec-training"')]
    assert '<div class="screen-only">' in algo and "The full list of 40 layers is in the HTML report." in algo
    assert re.search(r"<code>MultiheadAttention</code></td><td class=\"num\">40</td><td class=\"num\">166,400", algo)
    assert '<div class="screen-only">' not in html


def test_empty_area_and_untrained_model(results):
    res = without_figures(results)
    res["checks"] = [c for c in res["checks"] if c["id"] != "mia"]
    res["training"] = None
    out = reports.render_html(res)
    privacy = out[out.index('id="sec-privacy"'):out.index('id="sec-deployment"')]
    assert "No checks in this audit cover this area." in privacy
    assert "The model was loaded, not trained by this audit." in out


def test_training_record_and_model_card(html):
    training = html[html.index('id="sec-training"'):html.index('id="sec-evaluation"')]
    assert "Loss per epoch" in training and training.count('<img class="chart"') == 2
    assert 'alt="Loss per epoch"' in training and "the dotted line marks the best epoch (5)" in training
    assert '<tr class="best">' in training
    assert "dddddddddddd" in training  # saved model hash
    algo = html[html.index('id="sec-algorithm"'):html.index('id="sec-training"')]
    assert "21,898" in algo and "Conv2d" in algo and "adamw" in algo


def test_provenance_appendix(html):
    prov = html[html.index('id="provenance"'):]
    assert "e" * 64 in prov and "a" * 64 in prov and "d" * 64 in prov
    assert "2.13.0" in prov and "12,000" in prov and "Forward samples" in prov
    assert "digits-cnn" in prov  # spec as run
    assert "Reviewed by" in prov and "Signature" in prov


def test_minimal_design_results_render():
    """Only the keys DESIGN.md lists: the report still renders; with no area key the
    check is listed under Other checks (never guessed from its name)."""
    out = reports.render_html(make_minimal_results())
    assert 'id="heldout"' in out and "0.970 [0.950, 0.980]" in out
    assert _section_of(out, "heldout") == "other"
    assert f"{DEFAULT_CONFIDENCE * 100:g}% CI" in out


def test_formatting_helpers():
    assert format_value({"value": 0.9534, "ci": [0.9211, 0.9782]}) == "0.953 [0.921, 0.978]"
    assert format_value({"value": None, "ci": None}) == "n/a"
    assert format_value(12345) == "12,345"
    assert format_value(0.00003) == "3.0e-05"
    assert format_threshold({"op": "min", "limit": 0.95, "level": "must"}) == "≥ 0.95 (must)"
    assert format_threshold({"op": "max", "limit": 0.1, "level": "should"}) == "≤ 0.1 (should)"
    check = {"metrics": {"a": {}, "b": {}, "c": {}}, "metric_info": {"c": {}, "b": {}, "a": {}},
             "thresholds": [{"metric": "a"}, {"metric": "b"}]}
    assert headline_metric(check) == "b"  # metric_info order, first with a threshold
    assert headline_metric({"metrics": {"x": {}}, "thresholds": []}) == "x"


def test_pdf_draws_every_figure(html, tmp_path):
    """Each <img> figure is laid out in the PDF as an SVG image with a size."""
    from weasyprint.images import SVGImage

    from reports.pdf import pdf_document

    doc = pdf_document(html, tmp_path)
    images = []

    def walk(box):
        if getattr(box, "replacement", None) is not None:
            images.append(box)
        for child in getattr(box, "children", []) or []:
            walk(child)

    for page in doc.pages:
        walk(page._page_box)
    assert len(images) == html.count('<img class="chart"') == len(chart_samples()) + 2  # + training curves
    for box in images:
        assert isinstance(box.replacement, SVGImage)
        assert 40 < box.width <= doc.pages[0].width and box.height > 40


# --------------------------------------------------------------------------- PDF


def pdf_page_count(data: bytes) -> int:
    """Page objects in a PDF, including those inside compressed object streams."""
    import zlib

    chunks = [data]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            chunks.append(zlib.decompress(m.group(1)))
        except zlib.error:
            pass
    return sum(len(re.findall(rb"/Type\s*/Page\b", c)) for c in chunks)


def test_pdf_has_several_pages(written):
    out, paths, refused = written
    data = paths["pdf"].read_bytes()
    assert data.startswith(b"%PDF") and pdf_page_count(data) > 5
    assert refused == []  # the report itself needs nothing from outside
    assert sorted(os.listdir(out)) == ["report.html", "report.pdf", "results.json"]  # no temp files left
    assert paths["html"].read_text(encoding="utf-8") == reports.render_html(json.loads(paths["json"].read_text()))


def test_pdf_page_count_matches_layout(tmp_path):
    from reports.pdf import pdf_document

    doc = pdf_document("<p>one</p><p style='break-before: page'>two</p>", tmp_path)
    assert len(doc.pages) == 2 and pdf_page_count(doc.write_pdf()) == 2


def test_url_fetcher_refuses_outside_resources(tmp_path):
    from reports.pdf import ExternalResourceRefused, make_url_fetcher

    inside = tmp_path / "img.svg"
    inside.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("secret")
    fetcher = make_url_fetcher(tmp_path)
    for url in ("https://example.com/x.png", "http://127.0.0.1/x.css", "ftp://example.com/x",
                outside.as_uri(), (tmp_path / ".." / outside.name).as_uri(), "file://remotehost/etc/passwd"):
        with pytest.raises(ExternalResourceRefused):
            fetcher.fetch(url)
    assert len(fetcher.refused) == 6
    fetcher.fetch(inside.as_uri()).close()
    fetcher.fetch("data:text/plain;base64,aGk=").close()


def test_pdf_render_never_fetches_external(tmp_path):
    from reports.pdf import make_url_fetcher, pdf_document

    html = ('<html><head><link rel="stylesheet" href="https://example.com/x.css"></head><body>'
            '<img src="http://example.com/x.png"><img src="../outside.png"><p>hi</p></body></html>')
    fetcher = make_url_fetcher(tmp_path)
    doc = pdf_document(html, tmp_path, fetcher)
    assert len(doc.pages) == 1
    assert "https://example.com/x.css" in fetcher.refused
    assert "http://example.com/x.png" in fetcher.refused
    assert any(u.endswith("/outside.png") for u in fetcher.refused)


# --------------------------------------------------------------------------- files


def test_write_report_atomic(results, tmp_path, monkeypatch):
    out = tmp_path / "report"
    paths = reports.write_report(results, out, {"json", "html"})
    assert set(paths) == {"json", "html"}
    assert json.loads(paths["json"].read_text())["verdict"] == "error"
    assert "Compliance matrix" in paths["html"].read_text()
    assert sorted(os.listdir(out)) == ["report.html", "results.json"]

    # a failure while rendering leaves the previous files intact and no temp files
    before = paths["html"].read_bytes()
    import reports.html as rh

    def boom(_results):
        raise RuntimeError("render failed")

    monkeypatch.setattr(rh, "render_html", boom)
    with pytest.raises(RuntimeError):
        reports.write_report(results, out, {"json", "html"})
    assert paths["html"].read_bytes() == before
    assert sorted(os.listdir(out)) == ["report.html", "results.json"]

    # a failure while writing removes the temp file
    def bad_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", bad_replace)
    with pytest.raises(OSError):
        reports.atomic_write_text(out / "x.txt", "data")
    assert sorted(os.listdir(out)) == ["report.html", "results.json"]


def test_write_report_rejects_unknown_format(results, tmp_path):
    with pytest.raises(ValueError, match="unknown report format"):
        reports.write_report(results, tmp_path, {"docx"})


def test_results_json_is_strict(tmp_path):
    res = {"schema": "audit-results/1", "x": float("nan"), "y": np.float32(0.5), "z": np.arange(2)}
    text = reports.results_json(res)
    assert json.loads(text) == {"schema": "audit-results/1", "x": None, "y": 0.5, "z": [0, 1]}


# --------------------------------------------------------------------------- diff


def test_diff_detects_changes(results):
    new = copy.deepcopy(results)
    heldout = next(c for c in new["checks"] if c["id"] == "heldout")
    heldout["status"] = "fail"
    heldout["metrics"]["accuracy"] = {"value": 0.88, "ci": [0.85, 0.91]}
    new["checks"] = [c for c in new["checks"] if c["id"] != "mia"]
    new["checks"].append({"id": "quant", "check": "efficiency.quantization", "status": "pass", "metrics": {}})
    new["verdict"] = "non-compliant"
    new["provenance"]["model_sha256"] = "f" * 64
    rows = diff_results(results, new)
    kinds = {(r["kind"], r.get("id")) for r in rows}
    assert ("verdict", None) in kinds
    assert ("status", "heldout") in kinds
    assert ("metric", "heldout") in kinds
    assert ("removed", "mia") in kinds and ("added", "quant") in kinds
    assert any(r["kind"] == "hash" and r["field"] == "model_sha256" for r in rows)
    metric = next(r for r in rows if r["kind"] == "metric")
    assert metric["metric"] == "accuracy" and metric["direction"] == "worse"
    assert metric["delta"] == pytest.approx(0.88 - 0.953)
    text = format_diff(rows)
    assert "error -> non-compliant" in text
    assert "pass -> fail" in text
    assert "0.953 [0.931, 0.972] -> 0.880 [0.850, 0.910]" in text
    assert "worse" in text and "+ quant" in text and "- mia" in text
    json.dumps(rows)  # rows are JSON-ready for a --json output


def test_diff_identical_is_empty(results):
    assert diff_results(results, copy.deepcopy(results)) == []
    assert format_diff([]) == "No differences."
