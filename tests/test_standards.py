"""Standard profiles: the shipped files, validation of a user's profile (exit 2 with the
file, the YAML path and a suggestion), selection from a spec, the coverage of clauses by
an audit's results, and the per-profile matrix the report draws from results.json alone."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from audit.cli import main
from audit.errors import SpecError
from audit.results import CheckResult, Results
from audit.spec import parse_spec
from audit.standards import (ALIASES, attach_standards, builtin_names, check_metric_names, coverage, load_profile,
                             parse_profile)
from reports import render_html

SPEC = """\
name: Standards test
{standard}
model: {{fixture: digits-cnn}}
data:
  test: {{fixture: digits, split: test}}
checks:
  - {{id: heldout, check: performance.classification}}
"""


def write_spec(tmp_path: Path, standard: str = "", name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(SPEC.format(standard=standard))
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


# --------------------------------------------------------------------------- shipped profiles


def test_shipped_profiles() -> None:
    names = builtin_names()
    assert {"professional", "eu-ai-act-art10", "eu-ai-act-art15", "eu-ai-act-annex-iv",
            "nist-ai-rmf-measure"} <= set(names)
    for alias, parts in ALIASES.items():
        assert alias not in names and set(parts) <= set(names)
    art15 = {c.id for c in load_profile("eu-ai-act-art15").clauses}
    assert {"15(1)", "15(3)", "15(4) ¶1", "15(5) ¶3 evasion"} <= art15
    nist = {c.id for c in load_profile("nist-ai-rmf-measure").clauses}
    assert {"MEASURE 2.3", "MEASURE 2.5", "MEASURE 2.6", "MEASURE 2.7", "MEASURE 2.9", "MEASURE 2.10",
            "MEASURE 2.11"} <= nist
    assert {"10(2)(f)", "10(2)(h)"} <= {c.id for c in load_profile("eu-ai-act-art10").clauses}
    assert "2(g) accuracy" in {c.id for c in load_profile("eu-ai-act-annex-iv").clauses}


@pytest.mark.parametrize("name", ["professional", "eu-ai-act-art10", "eu-ai-act-art15", "eu-ai-act-annex-iv",
                                  "nist-ai-rmf-measure"])
def test_profiles_cite_numbers_with_our_own_short_titles(name: str) -> None:
    """Clause numbers and short summaries, never the regulation's wording: no title reads
    like a provision ("shall", "must"), none is longer than a line."""
    p = load_profile(name)
    assert p.source and p.title
    for c in p.clauses:
        assert re.search(r"\d", c.id), c.id
        assert len(c.title) <= 90, c.title
        assert not re.search(r"\b(shall|must|referred to in|pursuant)\b", c.title, re.I), c.title
        assert c.attestation or c.evidence


def test_professional_profile_covers_every_area_of_the_builtin_checks() -> None:
    """Every area the built-in checks report under has clauses in the report's own
    specification. (Mapping a new check to a clause is a compliance decision made in the
    profile, apart from the commit that adds the check.)"""
    from audit.registry import registry

    profile = load_profile("professional")
    mapped = {e.check for c in profile.clauses for e in c.evidence if e.check}
    areas: dict[str, set[str]] = {}
    for name in registry.names():
        cls = registry.get(name)
        if cls.__module__.startswith("checks."):
            areas.setdefault(cls.area, set()).add(name)
    for area, names in areas.items():
        assert names & mapped, f"no clause of the professional profile evidences a check of area '{area}'"


def test_metric_names_read_from_source_match_the_classes() -> None:
    from audit.registry import registry

    for name in builtin_names():
        for c in load_profile(name).clauses:
            for e in c.evidence:
                if e.check:
                    assert set(e.metrics) <= set(registry.get(e.check).metrics)
    assert check_metric_names("performance.calibration") == list(registry.get("performance.calibration").metrics)


# --------------------------------------------------------------------------- a user's profile

PROFILE = """\
name: house-rules
title: House rules for model releases
clauses:
  - id: "1"
    title: Accuracy on held-out data
    evidence:
      - {check: performance.classification, metrics: [accuracy]}
  - id: "2"
    title: Release approved
    attestation: true
"""


@pytest.mark.parametrize(("body", "where", "message"), [
    (PROFILE.replace("performance.classification", "performance.clasification"),
     "clauses[0].evidence[0].check", "unknown check 'performance.clasification'. Did you mean 'performance.classification'?"),
    (PROFILE.replace('id: "2"', 'id: "1"'),
     "clauses[1].id", "duplicate clause id '1' (also clauses[0])"),
    (PROFILE.replace("[accuracy]", "[acuracy]"),
     "clauses[0].evidence[0].metrics[0]", "unknown metric 'acuracy' for performance.classification. Did you mean 'accuracy'?"),
    (PROFILE.replace("    attestation: true", "    attestation: true\n    atestation: true"),
     "clauses[1].atestation", "unknown key 'atestation'. Did you mean 'attestation'?"),
    (PROFILE.replace("    attestation: true", "    attestation: true\n    title: again"),
     "", "duplicate key 'title'"),
    (PROFILE.replace("    attestation: true", "    note: x"),
     "clauses[1]", "give the clause 'evidence' (checks or records) or 'attestation: true'"),
    (PROFILE.replace("{check: performance.classification, metrics: [accuracy]}", "{record: modle}"),
     "clauses[0].evidence[0].record", "unknown record 'modle'. Did you mean 'model'?"),
    (PROFILE.replace("Release approved", "x" * 200),
     "clauses[1].title", "short summary in your own words"),
    ("name: a\ntitle: &t A\nclauses:\n  - {id: '1', title: *t, attestation: true}\n",
     "", "aliases (*name) are not allowed"),
])
def test_bad_profile_exits_2_naming_file_path_and_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     body: str, where: str, message: str) -> None:
    prof = tmp_path / "house.yaml"
    prof.write_text(body)
    spec = write_spec(tmp_path, "standards: [house.yaml]")
    code, out = run(capsys, "validate", str(spec))
    assert code == 2, out
    text = " ".join(out.split())
    assert f"{prof}: {where}" in text and message in text, text
    assert "standards[0]" in text and "Traceback" not in out
    # the profile on its own, through `audit standards FILE`
    code, out = run(capsys, "standards", str(prof))
    assert code == 2 and message in " ".join(out.split())


def test_good_user_profile_lists_its_clauses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "house.yaml").write_text(PROFILE)
    code, out = run(capsys, "standards", str(tmp_path / "house.yaml"))
    assert code == 0 and "house-rules" in out and "Release approved" in out
    code, out = run(capsys, "standards")
    assert code == 0 and "eu-ai-act-art15" in out


# --------------------------------------------------------------------------- selection from a spec


def _parse(tmp_path: Path, line: str):
    import yaml

    return parse_spec(yaml.safe_load(SPEC.format(standard=line)), source=str(tmp_path / "spec.yaml"),
                      base_dir=tmp_path)


def test_selection(tmp_path: Path) -> None:
    sub = tmp_path / "profiles"
    sub.mkdir()
    (sub / "house.yaml").write_text(PROFILE)
    assert [p.name for p in _parse(tmp_path, "standards: [professional, profiles/house.yaml]").profiles] == [
        "professional", "house-rules"]
    assert [p.name for p in _parse(tmp_path, "standards: eu-ai-act").profiles] == list(ALIASES["eu-ai-act"])
    # a known name in `standard:` selects it; any other string stays the subtitle
    spec = _parse(tmp_path, "standard: eu-ai-act-art15")
    assert [p.name for p in spec.profiles] == ["eu-ai-act-art15"]
    for subtitle in ("Foundation model specification (demo)", "ISO/IEC 42001 (internal reading)"):
        spec = _parse(tmp_path, f"standard: {subtitle}")
        assert spec.profiles == [] and spec.standard == subtitle


@pytest.mark.parametrize(("line", "where", "message"), [
    ("standards: [eu-ai-act-art-15]", "standards[0]", "Did you mean 'eu-ai-act-art15'?"),
    ("standards: [missing.yaml]", "standards[0]", "profile file not found"),
    ("standards: [professional, professional]", "standards[1]", "selected twice"),
    ("standard: eu-ai-act-art15\nstandards: [eu-ai-act]", "standards[0]", "selected twice"),
    ("standardz: [professional]", "standardz", "Did you mean 'standard'?"),
])
def test_selection_errors(tmp_path: Path, line: str, where: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        _parse(tmp_path, line)
    assert f"spec.yaml: {where}" in str(exc.value) and message in str(exc.value)


# --------------------------------------------------------------------------- coverage


def _check(id_: str, check: str, status: str, metrics: dict, thresholds: list | None = None) -> dict:
    return {"id": id_, "check": check, "status": status, "message": "no sensitive attributes" if status == "skipped" else "",
            "metrics": {k: {"value": v, "ci": None if v is None else [v - 0.01, v + 0.01]} for k, v in metrics.items()},
            "metric_info": {k: {} for k in metrics}, "thresholds": thresholds or []}


def results_doc() -> dict:
    return {
        "schema": "audit-results/1", "name": "Coverage test", "standard": None, "verdict": "non-compliant",
        "summary": {"pass": 1, "warn": 0, "fail": 1, "error": 0, "skipped": 1, "info": 0},
        "checks": [
            _check("heldout", "performance.classification", "fail", {"accuracy": 0.81, "balanced_accuracy": 0.8},
                   [{"metric": "accuracy", "op": "min", "limit": 0.9, "level": "must", "status": "fail"}]),
            _check("repro", "training.reproducibility", "pass", {"prediction_agreement": 1.0}),
            _check("gaps", "fairness.group", "skipped", {}),
        ],
        "datasets": {"test": {"n": 360}}, "model": {"params": 10}, "training": None, "provenance": {},
    }


PROFILE_COVERAGE = {
    "name": "cov", "title": "Coverage", "clauses": [
        {"id": "A", "title": "all there", "evidence": [{"check": "performance.classification", "metrics": ["accuracy"]},
                                                       {"check": "training.reproducibility"}]},
        {"id": "B", "title": "half there", "evidence": [{"check": "training.reproducibility", "metrics": []},
                                                        {"check": "shift.domain", "metrics": ["max_drop"]}]},
        {"id": "C", "title": "absent", "evidence": [{"check": "privacy.membership_inference", "metrics": []}]},
        {"id": "D", "title": "skipped", "evidence": [{"check": "fairness.group", "metrics": []}]},
        {"id": "E", "title": "not measured", "evidence": [
            {"check": "training.reproducibility", "metrics": ["retrain_agreement"]}]},
        {"id": "F", "title": "records", "evidence": [{"record": "model"}, {"record": "training"}]},
        {"id": "G", "title": "process", "attestation": True},
    ],
}


def test_coverage_of_each_clause() -> None:
    profile = parse_profile(PROFILE_COVERAGE)
    cov = coverage(profile, results_doc())
    rows = {r["id"]: r for r in cov["clauses"]}
    assert {k: r["coverage"] for k, r in rows.items()} == {
        "A": "evidenced", "B": "partial", "C": "not_evidenced", "D": "not_evidenced", "E": "not_evidenced",
        "F": "partial", "G": "attestation"}
    # evidenced by a failing check: shown as failing, never as a plain "covered"
    assert rows["A"]["status"] == "fail" and rows["B"]["status"] == "pass" and rows["C"]["status"] is None
    head = rows["A"]["evidence"][0]["results"][0]
    assert head["figures"][0]["metric"] == "accuracy" and head["figures"][0]["value"] == 0.81
    assert head["figures"][0]["thresholds"][0]["status"] == "fail"
    # no metrics named: the check's headline metric
    assert rows["A"]["evidence"][1]["results"][0]["figures"][0]["metric"] == "prediction_agreement"
    assert rows["D"]["evidence"][0]["state"] == "not_measured"
    assert rows["D"]["evidence"][0]["results"][0]["message"] == "no sensitive attributes"
    assert rows["E"]["evidence"][0]["results"][0]["missing_metrics"] == ["retrain_agreement"]
    assert cov["summary"] == {"evidenced": 1, "partial": 2, "not_evidenced": 3, "attestation": 1, "failing": 1}
    # pure: the same results give the same rows, and the results are untouched
    doc = results_doc()
    before = copy.deepcopy(doc)
    assert coverage(profile, doc) == cov and doc == before
    json.dumps(cov, allow_nan=False)


def test_results_json_carries_the_mapping() -> None:
    check = CheckResult(id="heldout", check="performance.classification", version=1, clause=None, status="pass",
                        data="test", area="evaluation", summary="", metrics={"accuracy": {"value": 0.97, "ci": [0.95, 0.98]}},
                        metric_info={"accuracy": {}}, thresholds=(), message="", confidence=0.95)
    results = Results(name="x", standard=None, checks=(check,), provenance={})
    assert results.to_json()["standards"] == []
    with_std = attach_standards(results, [load_profile("eu-ai-act-art15")])
    doc = with_std.to_json()
    assert [s["name"] for s in doc["standards"]] == ["eu-ai-act-art15"]
    rows = {r["id"]: r for r in doc["standards"][0]["clauses"]}
    assert rows["15(1)"]["coverage"] == "partial"  # accuracy measured, reproducibility not run
    assert rows["15(5) ¶3 evasion"]["coverage"] == "not_evidenced"
    assert doc["standards"][0]["file"] == "builtin:eu-ai-act-art15" and len(doc["standards"][0]["sha256"]) == 64


# --------------------------------------------------------------------------- the report


def test_report_draws_the_matrix_from_results_alone() -> None:
    doc = results_doc()
    prof = {**PROFILE_COVERAGE, "title": "House <script>alert(1)</script> rules"}
    doc["standards"] = [coverage(parse_profile(PROFILE_COVERAGE), doc) | {"title": prof["title"]}]
    html = render_html(json.loads(json.dumps(doc)))
    assert 'id="std-cov"' in html and 'href="#std-cov"' in html
    section = html[html.index('id="std-cov"'):]
    section = section[:section.index("</section>")]
    assert "<script>alert" not in html and "&lt;script&gt;" in section
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    assert "Evidenced A" in text and "Partially evidenced B, F" in text
    assert "Not evidenced C, D, E" in text and "Attestation G" in text
    assert "accuracy 0.810 [0.800, 0.820] — ≥ 0.9 (must) fail" in text
    assert "did not measure retrain_agreement" in text and "not in this audit" in text
    assert "Attested by" in text and "Remark" in text
    assert 'class="cov-row cov-evidenced cov-failing"' in section  # evidenced, by a failing check
    assert 'href="#heldout"' in section


def test_report_tolerates_malformed_standards() -> None:
    doc = results_doc()
    doc["standards"] = [None, {"name": "x", "clauses": [None, {"id": 3, "coverage": "weird", "evidence": [7]}]}]
    html = render_html(doc)
    assert "Standard: x" in html


def test_signed_cover_note() -> None:
    doc = results_doc()
    doc["signing"] = {"signer": "CN=demo", "throwaway": True, "files": ["results.json", "report.pdf"]}
    html = render_html(doc)
    cover = html[:html.index('id="compliance-matrix"')]
    assert "Digitally signed." in cover and "CN=demo" in cover
    assert "Signed with a throw-away demo key — not a trusted signature." in cover
    doc["signing"]["throwaway"] = False
    assert "throw-away" not in render_html(doc)[:html.index('id="compliance-matrix"')]
