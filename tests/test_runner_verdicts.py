"""The verdict rule: pass needs the whole CI past the threshold; a straddling interval is
inconclusive; a failed should-level threshold is a failure at should level, not inconclusive."""

from __future__ import annotations

import pytest

from audit.check import Metric
from audit.results import exit_code
from audit.verdict import judge
from audit.spec import Threshold


@pytest.mark.parametrize(
    ("value", "ci", "bound", "level", "expected"),
    [
        (0.97, (0.95, 0.99), {"min": 0.95}, "must", "pass"),   # CI touches the limit: pass
        (0.96, (0.94, 0.98), {"min": 0.95}, "must", "inconclusive"),   # CI crosses
        (0.94, (0.92, 0.96), {"min": 0.95}, "must", "fail"),   # point estimate below
        (0.94, (0.92, 0.96), {"min": 0.95}, "should", "fail"),  # a failure, at should level
        (0.03, (0.01, 0.05), {"max": 0.05}, "must", "pass"),
        (0.04, (0.02, 0.06), {"max": 0.05}, "must", "inconclusive"),
        (0.06, (0.04, 0.08), {"max": 0.05}, "must", "fail"),
        (0.97, None, {"min": 0.95}, "must", "pass"),           # no CI: value alone
        (float("nan"), None, {"min": 0.95}, "must", "fail"),   # undefined metric never passes
    ],
)
def test_judge(value, ci, bound, level, expected) -> None:
    assert judge(Metric(value, ci), Threshold(**bound, level=level)) == expected


def test_missing_metric_fails() -> None:
    assert judge(None, Threshold(min=0.5)) == "fail"


def test_exit_codes() -> None:
    base = {"pass": 1, "warn": 0, "fail": 0, "error": 0, "skipped": 0, "info": 0}
    assert exit_code({"verdict": "compliant", "summary": base}) == 0
    assert exit_code({"verdict": "compliant", "summary": {**base, "warn": 1}}) == 0
    assert exit_code({"verdict": "compliant", "summary": {**base, "warn": 1}}, strict=True) == 1
    assert exit_code({"verdict": "non-compliant", "summary": {**base, "fail": 1}}) == 1
    assert exit_code({"verdict": "error", "summary": {**base, "fail": 1, "error": 1}}) == 3
    assert exit_code({"verdict": "not assessed", "summary": {**base, "pass": 0, "info": 2}}) == 4
