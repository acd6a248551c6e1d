"""`audit diff` gates CI: exit 1 when a check's status got worse or a judged metric crossed
its threshold, 0 otherwise; both verdicts are printed, and differences whose intervals
overlap are marked as within noise."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from audit.cli import main
from reports.diff import diff_results, format_diff, regressions
from tests.tiny import Workspace, base_spec, drop_workspace, make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    w = make_workspace(tmp_path_factory.mktemp("tiny-diff"))
    yield w
    drop_workspace(w)


def _run(ws: Workspace, out: Path, model: Path | None = None) -> Path:
    d = base_spec(ws)
    d["checks"][0]["thresholds"] = {"accuracy": {"min": 0.8}}
    d["checks"].append({"id": "calibration", "check": "performance.calibration", "thresholds": {"ece": {"max": 0.5}}})
    if model is not None:
        d["model"]["path"] = str(model)
    spec = out.parent / f"{out.name}.yaml"
    spec.write_text(yaml.safe_dump(d))
    code = main(["run", str(spec), "--out", str(out), "-q", "--format", "json"])
    assert code in (0, 1)
    return out / "results.json"


def _diff(capsys: pytest.CaptureFixture[str], old: Path, new: Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["diff", str(old), str(new)])
    return code, capsys.readouterr().out


def test_rerun_with_the_same_seed_exits_0(ws: Workspace, tmp_path: Path, capsys) -> None:
    first, second = _run(ws, tmp_path / "first"), _run(ws, tmp_path / "second")
    code, out = _diff(capsys, first, second)
    assert code == 0, out
    assert "old verdict: compliant" in out and "new verdict: compliant" in out
    assert "No differences." in out


def test_planted_regression_exits_1(ws: Workspace, tmp_path: Path, capsys) -> None:
    """The same audit of a model with a planted defect (its bias pushes every sample
    towards class 0)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(ws.model))
    state["lin.bias"] = torch.tensor([3.0, -3.0])
    defect = tmp_path / "defect.safetensors"
    save_file(state, str(defect))
    good, bad = _run(ws, tmp_path / "good"), _run(ws, tmp_path / "bad", model=defect)
    code, out = _diff(capsys, good, bad)
    assert code == 1, out
    assert "old verdict: compliant" in out and "new verdict: non-compliant" in out
    assert "verdict: compliant -> non-compliant (worse)" in out
    assert "~ heldout (performance.classification): pass -> fail (worse)" in out
    assert "accuracy crossed its threshold ≥ 0.8 (must)" in out and "(REGRESSION)" in out
    assert "model_sha256" in out
    assert out.strip().splitlines()[-1].startswith("REGRESSION: ")
    # and the other way round it is an improvement: exit 0
    code, out = _diff(capsys, bad, good)
    assert code == 0 and "fail -> pass (better)" in out and out.strip().endswith("No regression.")


def test_edited_status_is_a_regression(ws: Workspace, tmp_path: Path, capsys) -> None:
    """A status that got worse, with nothing else changed (pass -> warn), gates."""
    old = _run(ws, tmp_path / "run")
    doc = json.loads(old.read_text())
    doc["checks"][1]["status"] = "warn"
    new = tmp_path / "edited.json"
    new.write_text(json.dumps(doc))
    code, out = _diff(capsys, old, new)
    assert code == 1 and "calibration (performance.calibration): pass -> warn (worse)" in out


# ---------------------------------------------------------------------------------------------- the rules
def _check(status: str, value: float, ci: tuple[float, float], *, op: str = "min", limit: float = 0.8,
           level: str = "must") -> dict[str, Any]:
    return {"id": "heldout", "check": "performance.classification", "status": status,
            "metrics": {"accuracy": {"value": value, "ci": list(ci)}},
            "metric_info": {"accuracy": {"higher_is_better": True}},
            "thresholds": [{"metric": "accuracy", "op": op, "limit": limit, "level": level, "status": "pass",
                            "value": value, "ci": list(ci)}]}


def _doc(*checks: dict[str, Any], verdict: str = "compliant") -> dict[str, Any]:
    return {"schema": "audit-results/1", "name": "x", "verdict": verdict, "checks": list(checks),
            "provenance": {"seed": 0}}


def test_difference_inside_the_intervals_is_within_noise() -> None:
    old, new = _doc(_check("pass", 0.90, (0.85, 0.94))), _doc(_check("pass", 0.88, (0.83, 0.92)))
    rows = diff_results(old, new)
    assert regressions(rows) == []
    text = format_diff(rows, old=old, new=new)
    assert "accuracy: 0.900 [0.850, 0.940] -> 0.880 [0.830, 0.920]" in text
    assert "within noise: the intervals overlap" in text and text.endswith("No regression.")
    far = _doc(_check("pass", 0.82, (0.81, 0.84)))
    assert "intervals do not overlap" in format_diff(diff_results(old, far))


def test_crossing_a_threshold_gates_even_when_the_status_stays() -> None:
    """A should-level threshold: the check is `warn` before and after, but the point
    estimate moved from above the limit to below it."""
    old = _doc(_check("warn", 0.81, (0.70, 0.90), level="should"))
    new = _doc(_check("warn", 0.79, (0.69, 0.88), level="should"))
    rows = diff_results(old, new)
    [crossed] = regressions(rows)
    assert crossed["kind"] == "crossed" and crossed["direction"] == "worse"
    text = format_diff(rows, old=old, new=new)
    assert "accuracy crossed its threshold ≥ 0.8 (should): 0.810 -> 0.790, now below it (REGRESSION)" in text
    assert "within noise" in text
    # a `max` threshold, moving down across it, is a recovery
    old_max, new_max = (_doc(_check("fail", v, (v - 0.01, v + 0.01), op="max", limit=0.1)) for v in (0.12, 0.08))
    rows = diff_results(old_max, new_max)
    assert regressions(rows) == [] and any(r["kind"] == "crossed" and r["direction"] == "better" for r in rows)


@pytest.mark.parametrize(("before", "after", "worse"), [
    ("pass", "warn", True), ("warn", "fail", True), ("pass", "error", True), ("fail", "error", True),
    ("error", "pass", False), ("fail", "pass", False), ("pass", "skipped", False), ("info", "info", False),
])
def test_status_changes(before: str, after: str, worse: bool) -> None:
    old, new = _doc(_check(before, 0.9, (0.85, 0.95))), _doc(_check(after, 0.9, (0.85, 0.95)))
    assert bool(regressions(diff_results(old, new))) is worse


def test_verdicts_are_printed_even_without_differences() -> None:
    doc = _doc(_check("pass", 0.9, (0.85, 0.95)))
    text = format_diff(diff_results(doc, copy.deepcopy(doc)), old=doc, new=doc)
    assert text.splitlines() == ["old verdict: compliant  (x)", "new verdict: compliant  (x)", "No differences."]


def test_a_threshold_new_in_the_new_audit_judges_the_old_metric() -> None:
    """The old audit had no threshold on the metric: its value is judged against the new
    limit (and not confused with the new value)."""
    old = _check("pass", 0.9, (0.85, 0.95))
    old["thresholds"] = []
    new = _check("fail", 0.7, (0.6, 0.8))
    [crossed] = [r for r in diff_results(_doc(old), _doc(new)) if r["kind"] == "crossed"]
    assert (crossed["old"], crossed["new"], crossed["direction"]) == (0.9, 0.7, "worse")
