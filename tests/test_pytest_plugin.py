"""`pytest audit_x.yaml`: one item per check, threshold table as the failure text."""

from __future__ import annotations

import pytest


SPEC = """\
name: plugin test
model: {fixture: digits-cnn}
data:
  train: {fixture: digits, split: train}
  test: {fixture: digits, split: test}
checks:
  - {id: heldout, check: performance.classification, thresholds: {accuracy: {min: 0.5}}}
  - {id: too-strict, check: performance.classification, thresholds: {accuracy: {min: 0.9999}, f1_macro: {min: 0.5}}}
  - {id: integrity, check: data.integrity}
"""


# Subprocess runs: in-process runs restore sys.modules, which breaks numpy/matplotlib reimports.
# The session's digits_cnn fixture fills the shared model cache (AUDIT_CACHE_DIR) first.
def test_one_item_per_check_and_threshold_table(pytester: pytest.Pytester, digits_cnn) -> None:
    pytester.makefile(".yaml", audit_x=SPEC)
    result = pytester.runpytest_subprocess("audit_x.yaml", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*audit_x.yaml::heldout PASSED*",
        "*audit_x.yaml::too-strict FAILED*",
        "*audit_x.yaml::integrity PASSED*",
    ])
    out = result.stdout.str()
    assert "metric" in out and "threshold" in out and ">= 0.9999" in out
    assert "f1_macro" in out


def test_audit_spec_option_and_fixtures(pytester: pytest.Pytester, digits_cnn) -> None:
    pytester.makefile(".yaml", myspec=SPEC)  # not audit*.yaml: only --audit-spec collects it
    pytester.makepyfile(test_own="""
        def test_own(audit_context, audit_model, audit_data):
            ds = audit_data["test"]
            assert len(ds) == len(audit_context.predictions("test"))
            assert audit_model.sha256
    """)
    result = pytester.runpytest_subprocess("--audit-spec", "myspec.yaml", "test_own.py",
                                          "--audit-report", "rep", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    assert (pytester.path / "rep" / "results.json").exists()
    assert (pytester.path / "rep" / "report.html").exists()
