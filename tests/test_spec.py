"""Spec loading: safe YAML, duplicate keys, YAML-path errors with did-you-mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import SpecError
from audit.spec import load_spec

BASE = """\
name: t
model: {fixture: digits-cnn}
data:
  train: {fixture: digits, split: train}
  test: {fixture: digits, split: test}
  domains:
    inverted: {from: test, transform: invert, severity: 1}
checks:
  - {id: heldout, check: performance.classification, thresholds: {accuracy: {min: 0.9}}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    return str(exc.value)


def test_valid_spec_parses(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    assert spec.checks[0].thresholds["accuracy"].limit == 0.9
    assert spec.domains["inverted"].from_ == "test"
    assert spec.base_dir == tmp_path.resolve()
    assert len(spec.sha256) == 64


def test_misspelled_check_suggests_closest(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("performance.classification", "performance.clasification"))
    assert "checks[0].check" in msg
    assert "Did you mean 'performance.classification'?" in msg
    assert "spec.yaml" in msg


def test_unknown_threshold_metric_names_yaml_path(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("accuracy: {min", "acuracy: {min"))
    assert "checks[0].thresholds.acuracy" in msg
    assert "Did you mean 'accuracy'?" in msg


def test_unknown_check_parameter(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("check: performance.classification,",
                                          "check: performance.classification, bogus_param: 3,"))
    assert "unknown parameter 'bogus_param'" in msg


def test_duplicate_keys_rejected(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "seed: 1\nseed: 2\n")
    assert "duplicate key 'seed'" in msg


def test_python_tags_are_not_executed(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    assert "invalid YAML" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "cheks: []\n")
    assert "unknown key 'cheks'" in msg and "Did you mean 'checks'?" in msg


def test_unknown_key_in_model_suggests(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("model: {fixture: digits-cnn}", "model: {fixture: digits-cnn, trust_pickel: true}"))
    assert "model.trust_pickel" in msg and "Did you mean 'trust_pickle'?" in msg


def test_threshold_needs_one_bound(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("{min: 0.9}", "{min: 0.9, max: 1.0}"))
    assert "checks[0].thresholds.accuracy" in msg and "exactly one of 'min' or 'max'" in msg


def test_unknown_dataset_reference(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("from: test", "from: tset"))
    assert "data.domains.inverted.from" in msg and "Did you mean 'test'?" in msg


def test_check_data_role_must_exist(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("thresholds: {accuracy", "data: heldout, thresholds: {accuracy"))
    assert "checks[0].data" in msg


def test_duplicate_check_ids(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "  - {id: heldout, check: performance.classification}\n")
    assert "duplicate check id 'heldout'" in msg


def test_severity_bounds(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("severity: 1", "severity: 9"))
    assert "data.domains.inverted.severity" in msg


def test_unknown_transform(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("transform: invert", "transform: invret"))
    assert "data.domains.inverted.transform" in msg and "Did you mean 'invert'?" in msg
