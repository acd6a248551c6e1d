"""The layers go one way (DESIGN.md), checked by import-linter's contracts in
pyproject.toml: checks never import the report, the report never imports torch or
checks, the core never imports checks, only the CLI and the pytest plugin reach the
report, and the core has no import cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT + ["--no-cache"], cwd=cwd, capture_output=True, text=True)


def test_the_layer_contracts_hold() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout and "5 kept, 0 broken" in out.stdout, out.stdout


def _copy_tree(tmp_path: Path) -> Path:
    dest = tmp_path / "tree"
    for name in ("audit", "checks", "reports", "fixtures"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_a_check_that_imports_the_report_breaks_the_build(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    module = tree / "checks" / "performance" / "calibration.py"
    module.write_text(module.read_text() + "\nfrom reports import plots  # planted violation\n")
    out = _lint(tree)
    assert out.returncode != 0
    assert "checks.performance.calibration -> reports.plots" in out.stdout, out.stdout


def test_an_import_cycle_in_the_core_breaks_the_build(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    module = tree / "audit" / "spec.py"
    module.write_text(module.read_text() + "\nfrom audit import context  # planted cycle\n")
    out = _lint(tree)
    assert out.returncode != 0 and "no import cycles inside the core BROKEN" in out.stdout, out.stdout


def test_the_report_importing_torch_breaks_the_build(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    module = tree / "reports" / "diff.py"
    module.write_text(module.read_text() + "\nimport torch  # planted violation\n")
    out = _lint(tree)
    assert out.returncode != 0 and "reports.diff -> torch" in out.stdout, out.stdout
