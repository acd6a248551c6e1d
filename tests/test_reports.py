"""Compliance report: HTML content and escaping, PDF layout and URL refusal,
atomic writes, plots, and the diff between two audits."""

from __future__ import annotations

import copy
import json
import os
import re

import numpy as np
import pytest

import reports
from reports import plots
from reports.diff import diff_results, format_diff
from reports.html import anchor_for, format_threshold, format_value, headline_metric, sanitize_svg

XSS = "<script>alert(1)</script>"
CLASSES = ["zero", "one", "two", f"three {XSS}"]


def _cell(v, lo, hi):
    return {"value": v, "ci": [lo, hi]}


def make_results() -> dict:
    """A realistic audit-results/1 document: every status, CIs, every evidence type,
    a training record, and a user label carrying a script tag."""
    rng = np.random.default_rng(0)
    cm = np.array([[48, 1, 0, 1], [2, 45, 2, 1], [0, 3, 44, 3], [1, 0, 2, 47]])
    conf = np.linspace(0.05, 0.95, 10)
    fpr = np.linspace(0, 1, 21)
    mi = lambda hib, d: {"higher_is_better": hib, "description": d}  # noqa: E731
    checks = [
        {
            "id": "integrity", "check": "data.integrity", "version": 1, "area": "Data specification",
            "clause": "2.3 Data quality and leakage", "status": "pass", "data": "test",
            "summary": "Exact duplicates within and across splits, missing values, class balance.",
            "metrics": {"train_test_overlap": {"value": 0.0, "ci": None},
                        "duplicate_fraction": {"value": 0.002, "ci": [0.0, 0.006]}},
            "metric_info": {"train_test_overlap": mi(False, "Share of test rows also in train."),
                            "duplicate_fraction": mi(False, "Share of rows that are exact duplicates.")},
            "thresholds": [{"metric": "train_test_overlap", "op": "max", "limit": 0.0, "level": "must", "status": "pass"}],
            "message": "train_test_overlap 0.000 <= 0", "duration_s": 0.04, "traceback": None,
            "evidence": [{"type": "table", "title": "Duplicates per split", "columns": ["split", "rows", "duplicates"],
                          "rows": [["train", 1437, 3], ["test", 360, 0]]}],
        },
        {
            "id": "heldout", "check": "performance.classification", "version": 1,
            "area": "Evaluation and validation", "clause": f"4.1 Held-out performance {XSS}", "status": "pass",
            "data": "test", "summary": "Accuracy and per-class metrics on the held-out test set.",
            "metrics": {"accuracy": _cell(0.953, 0.931, 0.972), "f1_macro": _cell(0.951, 0.928, 0.970),
                        "worst_class_recall": _cell(0.88, 0.80, 0.94)},
            "metric_info": {"accuracy": mi(True, "Share of test samples classified correctly."),
                            "f1_macro": mi(True, "Unweighted mean of per-class F1."),
                            "worst_class_recall": mi(True, "Recall of the class the model does worst on.")},
            "thresholds": [{"metric": "accuracy", "op": "min", "limit": 0.9, "level": "must", "status": "pass"},
                           {"metric": "worst_class_recall", "op": "min", "limit": 0.75, "level": "should", "status": "pass"}],
            "message": "accuracy 0.953 [0.931, 0.972] >= 0.9", "duration_s": 0.31, "traceback": None,
            "evidence": [
                {"type": "table", "title": "Per-class metrics", "columns": ["class", "precision", "recall", "support"],
                 "rows": [[c, _cell(0.95, 0.9, 0.99), _cell(0.921, 0.853, 0.978), 50] for c in CLASSES],
                 "note": "Intervals: 95% bootstrap over confusion-matrix cells."},
                {"type": "figure", "title": "Confusion matrix", "svg": plots.confusion_matrix_svg(cm, CLASSES),
                 "caption": "Rows are true classes; colour is the row rate."},
            ],
        },
        {
            "id": "calibration", "check": "performance.calibration", "version": 1,
            "area": "Evaluation and validation", "clause": "4.2 Calibration", "status": "warn", "data": "test",
            "summary": "Whether predicted confidence matches observed accuracy.",
            "metrics": {"ece": _cell(0.041, 0.022, 0.063), "brier": _cell(0.07, 0.05, 0.09)},
            "metric_info": {"ece": mi(False, "Expected calibration error over 10 equal-width bins."),
                            "brier": mi(False, "Mean squared error of the predicted probabilities.")},
            "thresholds": [{"metric": "ece", "op": "max", "limit": 0.05, "level": "must", "status": "warn"}],
            "message": "ece 0.041 [0.022, 0.063]: interval straddles 0.05 (inconclusive)", "duration_s": 0.2,
            "traceback": None,
            "evidence": [{"type": "figure", "title": "Reliability diagram",
                          "svg": plots.reliability_diagram_svg(conf, np.clip(conf - 0.04, 0, 1), rng.integers(1, 90, 10))}],
        },
        {
            "id": "domains", "check": "shift.domain", "version": 1, "area": "Evaluation and validation",
            "clause": "4.4 Cross-domain validation", "status": "fail", "data": "test",
            "summary": "Accuracy drop from the test set to each shifted domain.",
            "metrics": {"max_drop": _cell(0.31, 0.26, 0.36), "mean_drop": _cell(0.2, 0.17, 0.23)},
            "metric_info": {"max_drop": mi(False, "Largest accuracy drop over the domains."),
                            "mean_drop": mi(False, "Mean accuracy drop over the domains.")},
            "thresholds": [{"metric": "max_drop", "op": "max", "limit": 0.1, "level": "must", "status": "fail"}],
            "message": "max_drop 0.310 [0.260, 0.360] > 0.1", "duration_s": 0.5, "traceback": None,
            "evidence": [{"type": "figure", "title": "Accuracy per domain",
                          "svg": plots.bar_chart_svg(["test", "rotated", "noisy"], [0.95, 0.64, 0.85],
                                                     [0.93, 0.6, 0.82], [0.97, 0.69, 0.88], title="Accuracy per domain",
                                                     ylabel="accuracy", threshold=0.85)}],
        },
        {
            "id": "pgd", "check": "robustness.adversarial", "version": 1, "area": "Robustness",
            "clause": "5.1 Adversarial robustness", "status": "warn", "data": "test",
            "summary": "PGD (Linf) accuracy under attack over an epsilon sweep.",
            "metrics": {"robust_accuracy": _cell(0.52, 0.47, 0.58), "attack_success_rate": _cell(0.45, 0.4, 0.5)},
            "metric_info": {"robust_accuracy": mi(True, "Accuracy on adversarial inputs at the largest eps."),
                            "attack_success_rate": mi(False, "Share of correct predictions the attack flips.")},
            "thresholds": [{"metric": "robust_accuracy", "op": "min", "limit": 0.5, "level": "must", "status": "warn"}],
            "message": "robust_accuracy 0.520 [0.470, 0.580]: interval straddles 0.5", "duration_s": 2.4,
            "traceback": None,
            "evidence": [
                {"type": "figure", "title": "Robust accuracy by epsilon",
                 "svg": plots.line_chart_svg({"PGD": ([0.02, 0.05, 0.1], [0.9, 0.71, 0.52], [0.87, 0.66, 0.47], [0.93, 0.75, 0.58]),
                                              "FGSM": ([0.02, 0.05, 0.1], [0.92, 0.8, 0.66])},
                                             "epsilon", "accuracy", "Robust accuracy", threshold=0.5)},
                {"type": "figure", "title": "Adversarial examples",
                 "svg": plots.image_grid_svg([rng.random((8, 8)) for _ in range(6)],
                                             [f"{c} -> {CLASSES[(i + 1) % 4]}" for i, c in enumerate(CLASSES + CLASSES[:2])],
                                             overlays=[rng.normal(size=(8, 8)) for _ in range(6)],
                                             overlay_label="|perturbation|"),
                 "caption": "Clean image with the perturbation overlaid; titles are true -> adversarial class."},
                {"type": "flags", "title": "Gradient-masking sanity checks",
                 "flags": [{"flag": "non_monotone", "detail": "accuracy rose between eps 0.05 and 0.1"}]},
            ],
        },
        {
            "id": "ig", "check": "explain.attribution", "version": 1, "area": "Explainability",
            "clause": "6.1 Attributions", "status": "skipped", "data": "test",
            "summary": "Integrated gradients: faithfulness and randomization sanity.",
            "metrics": {}, "metric_info": {}, "thresholds": [],
            "message": "requires 'gradients': the model is a TorchScript module without autograd support",
            "duration_s": 0.0, "traceback": None, "evidence": [],
        },
        {
            "id": "gaps", "check": "fairness.group", "version": 1, "area": "Fairness",
            "clause": "7.1 Group fairness", "status": "fail", "data": "test",
            "summary": "Selection-rate and error-rate gaps between groups.",
            "metrics": {"demographic_parity_difference": _cell(0.18, 0.12, 0.24),
                        "equalized_odds_difference": _cell(0.09, 0.05, 0.14)},
            "metric_info": {"demographic_parity_difference": mi(False, "Largest gap in positive rate between groups."),
                            "equalized_odds_difference": mi(False, "Largest gap in TPR or FPR between groups.")},
            "thresholds": [{"metric": "demographic_parity_difference", "op": "max", "limit": 0.1, "level": "must",
                            "status": "fail"}],
            "message": "demographic_parity_difference 0.180 [0.120, 0.240] > 0.1", "duration_s": 0.7,
            "traceback": None,
            "evidence": [{"type": "table", "title": "Per-group rates", "columns": ["group", "n", "selection rate"],
                          "rows": [["sex=Female", 5421, _cell(0.11, 0.1, 0.12)], ["sex=Male", 10860, _cell(0.29, 0.28, 0.3)]]},
                         {"type": "text", "title": "Method", "text": "Groups smaller than 30 are left out.\nIntervals: 95% bootstrap."}],
        },
        {
            "id": "mia", "check": "privacy.membership_inference", "version": 1, "area": "Privacy",
            "clause": "8.1 Membership inference", "status": "pass", "data": "test",
            "summary": "Loss-threshold membership-inference attack.",
            "metrics": {"mia_auc": _cell(0.52, 0.49, 0.55)},
            "metric_info": {"mia_auc": mi(False, "ROC AUC of the attack; 0.5 is chance.")},
            "thresholds": [{"metric": "mia_auc", "op": "max", "limit": 0.6, "level": "must", "status": "pass"}],
            "message": "mia_auc 0.520 [0.490, 0.550] <= 0.6", "duration_s": 0.1, "traceback": None,
            "evidence": [{"type": "figure", "title": "Attack ROC", "svg": plots.roc_curve_svg(fpr, np.sqrt(fpr))}],
        },
        {
            "id": "latency", "check": "efficiency.latency", "version": 1, "area": "Deployment",
            "clause": "9.1 Latency", "status": "error", "data": "test",
            "summary": "Inference latency and throughput.",
            "metrics": {}, "metric_info": {"p95_ms": mi(False, "95th percentile latency per batch.")},
            "thresholds": [], "message": "RuntimeError: CUDA out of memory", "duration_s": 0.02,
            "traceback": "Traceback (most recent call last):\n  File \"checks/efficiency/latency.py\", line 40, in run\n"
                         "RuntimeError: CUDA out of memory <oops>",
            "evidence": [],
        },
        {
            "id": "repro", "check": "training.reproducibility", "version": 1, "area": "Training specification",
            "clause": "3.2 Reproducibility", "status": "pass", "data": "test",
            "summary": "Repeated inference gives the same predictions.",
            "metrics": {"prediction_agreement": {"value": 1.0, "ci": [0.995, 1.0]}},
            "metric_info": {"prediction_agreement": mi(True, "Share of identical predictions across runs.")},
            "thresholds": [{"metric": "prediction_agreement", "op": "min", "limit": 0.99, "level": "must", "status": "pass"}],
            "message": "prediction_agreement 1.000 [0.995, 1.000] >= 0.99", "duration_s": 0.05, "traceback": None,
            "evidence": [{"type": "flags", "title": "Non-determinism", "flags": []}],
        },
    ]
    summary = {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail", "error", "skipped")}
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


def make_minimal_results() -> dict:
    """Only the keys DESIGN.md lists."""
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
    ok = copy.deepcopy(results)
    ok["verdict"] = "compliant"
    out = reports.render_html(ok)
    assert 'class="verdict-box v-compliant"' in out and ">Compliant</div>" in out


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
        assert ref.startswith("#") or ref.startswith("data:image/"), ref
    assert "<link" not in html and "@import" not in html and "<script" not in html


def test_sections_in_specification_order(html):
    titles = re.findall(r'<h2 class="section-title area-title"><span class="num">\d+</span> ([^<]+)</h2>', html)
    assert titles == ["Data specification", "Algorithm specification", "Training specification",
                      "Evaluation and validation", "Robustness", "Explainability", "Fairness", "Privacy", "Deployment"]
    assert html.index('id="heldout"') < html.index('id="pgd"') < html.index('id="gaps"')


def test_check_sections_render_every_evidence_type(html):
    heldout = html[html.index('<article class="check st-pass" id="heldout"'):]
    heldout = heldout[:heldout.index("</article>")]
    assert "0.921 [0.853, 0.978]" in heldout  # CI table cell
    assert "<svg" in heldout and 'class="chart"' in heldout  # inline figure
    assert "Share of test samples classified correctly." in heldout  # metric description
    assert "≥ 0.75 (should)" in heldout
    assert 'class="evidence ev-flags has-flags"' in html and "non_monotone" in html
    assert "No flags raised." in html
    assert 'class="prose"' in html and "Groups smaller than 30" in html
    assert '<pre class="traceback">' in html and "CUDA out of memory" in html
    assert "Reason:</span> requires &#39;gradients&#39;" in html
    assert "No checks in this audit cover this area." not in html[html.index('id="sec-privacy"'):html.index('id="sec-deployment"')]


def test_long_layer_list_collapses_in_print(results, html):
    res = copy.deepcopy(results)
    res["model"]["layers"] = [{"name": f"blocks.{i}.attn", "type": "MultiheadAttention", "params": 4160}
                              for i in range(40)]
    algo = reports.render_html(res)
    algo = algo[algo.index('id="sec-algorithm"'):algo.index('id="sec-training"')]
    assert '<div class="screen-only">' in algo and "The full list of 40 layers is in the HTML report." in algo
    assert re.search(r"<code>MultiheadAttention</code></td><td class=\"num\">40</td><td class=\"num\">166,400", algo)
    assert '<div class="screen-only">' not in html


def test_empty_area_and_untrained_model(results):
    res = copy.deepcopy(results)
    res["checks"] = [c for c in res["checks"] if c["id"] != "mia"]
    res["training"] = None
    out = reports.render_html(res)
    privacy = out[out.index('id="sec-privacy"'):out.index('id="sec-deployment"')]
    assert "No checks in this audit cover this area." in privacy
    assert "The model was loaded, not trained by this audit." in out


def test_training_record_and_model_card(html):
    training = html[html.index('id="sec-training"'):html.index('id="sec-evaluation"')]
    assert "Loss per epoch" in training and training.count("<svg") == 2
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
    """Only the keys DESIGN.md lists: the report still renders."""
    minimal = make_minimal_results()
    out = reports.render_html(minimal)
    assert 'id="heldout"' in out and "0.970 [0.950, 0.980]" in out
    # performance.* falls in Evaluation without an explicit area
    ev = out[out.index('id="sec-evaluation"'):out.index('id="sec-robustness"')]
    assert 'id="heldout"' in ev


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


# --------------------------------------------------------------------------- SVG


def test_sanitize_svg_strips_active_content():
    evil = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" onload="alert(1)">'
            '<script>alert(1)</script><foreignObject><div>x</div></foreignObject>'
            '<style>body{display:none}</style>'
            '<image xlink:href="https://evil.example/x.png"/><image href="data:image/png;base64,AAAA"/>'
            '<a href="javascript:alert(1)"><rect id="r" width="1" height="1"/></a>'
            '<use xlink:href="#r"/><rect style="fill:url(https://evil.example/f)" clip-path="url(#r)"/></svg>')
    out = str(sanitize_svg(evil, prefix="f9"))
    low = out.lower()
    assert "script" not in low and "onload" not in low and "foreignobject" not in low
    assert "evil.example" not in low and "javascript" not in low and "display:none" not in low
    assert "data:image/png;base64,AAAA" in out
    assert 'href="#f9-r"' in out and "url(#f9-r)" in out  # ids and references prefixed


def test_sanitize_svg_rejects_entities():
    from reports.html import UnsafeSVG

    with pytest.raises(UnsafeSVG):
        sanitize_svg('<!DOCTYPE svg [<!ENTITY a "b">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>')
    with pytest.raises(UnsafeSVG):
        sanitize_svg("<svg><g></svg>")


def test_bad_figure_does_not_break_report(results):
    res = copy.deepcopy(results)
    res["checks"][0]["evidence"].append({"type": "figure", "title": "Broken", "svg": "<svg><g></svg>"})
    out = reports.render_html(res)
    assert "Figure not shown" in out


def test_plots_are_deterministic_svg():
    a = plots.bar_chart_svg(["a", "b"], [0.5, 0.7], [0.4, 0.6], [0.6, 0.8], title="t", ylabel="y", threshold=0.55)
    b = plots.bar_chart_svg(["a", "b"], [0.5, 0.7], [0.4, 0.6], [0.6, 0.8], title="t", ylabel="y", threshold=0.55)
    assert a == b and a.startswith("<svg") and "<?xml" not in a and "DOCTYPE" not in a
    grid = plots.image_grid_svg([np.zeros((8, 8)), np.ones((3, 8, 8))], ["a", "b"],
                                overlays=[np.eye(8), np.eye(8)])
    assert "data:image/png;base64," in grid
    with pytest.raises(ValueError):
        plots.confusion_matrix_svg(np.zeros((2, 3)), ["a", "b"])


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
