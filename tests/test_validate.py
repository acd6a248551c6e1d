"""`audit validate` checks everything that needs no forward pass: a spec it calls valid
runs, and each broken spec is refused with exit 2 and one message (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from audit.cli import main
from tests.test_data_contract import BC_SPEC, write_breast_cancer

VALID = BC_SPEC.format(classes="  classes: [malignant, benign]\n")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture()
def bc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_breast_cancer(tmp_path)
    monkeypatch.chdir(tmp_path)  # a shell command would leave its file here
    return tmp_path


def write_spec(folder: Path, text: str) -> Path:
    path = folder / "audit_v.yaml"
    path.write_text(text)
    return path


def rejected(capsys: pytest.CaptureFixture[str], spec: Path) -> str:
    """The one error line validate prints for a spec it refuses with exit 2."""
    code, out = run(capsys, "validate", str(spec))
    assert code == 2, out
    assert "Traceback" not in out and "valid (" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


def test_a_spec_validate_calls_valid_runs(bc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(bc, VALID)
    code, out = run(capsys, "validate", str(spec))
    assert code == 0, out
    assert "valid (1 checks, datasets: test)" in out
    assert f"imports module 'bc_model' from {bc / 'bc_model.py'}" in out  # says what it will import
    assert "fit Linear built by bc_model:build" in out
    assert "143 samples, 30 feature columns" in out and "classes (model.classes): 0=malignant, 1=benign" in out
    code, out = run(capsys, "run", str(spec), "--out", str(bc / "out"), "--format", "json", "-q")
    assert code == 0, out


def test_validate_reads_npz_and_image_headers_and_says_what_it_found(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.random((20, 1, 8, 8)).astype(np.float32), y=np.arange(20) % 10,
             site=np.array(["a", "b"] * 10))
    for cls in ("0", "1"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "imgs" / cls / "a.png")
    spec = write_spec(tmp_path, "name: v\nmodel: {fixture: digits-cnn}\n"
                                "data:\n  test: {path: t.npz}\n  extra: {path: imgs}\n"
                                "checks:\n  - {id: gaps, check: fairness.group}\n")
    code, out = run(capsys, "validate", str(spec))
    assert code == 0, out
    assert "model: built-in fixture digits-cnn" in out
    assert "npz file" in out and "20 samples, x float32 of shape [1, 8, 8] per sample" in out
    assert "sensitive: site" in out and "2 samples, 1x8x8 images" in out
    # class indices 0..K-1 name the outputs themselves: no order to announce; folder names do
    assert "class order taken from the class indices" not in out
    assert "class order taken from the sorted class folders of imgs: 0=0, 1=1" in out


@pytest.mark.parametrize("factory, kwargs, message", [
    ("os:system", {"command": "touch PWNED"}, "'os:system' is in the Python standard library (os)"),
    ("builtins:eval", {"source": "1"}, "'builtins:eval' is in the Python standard library (builtins)"),
    ("subprocess:run", {"args": ["touch", "PWNED"]}, "standard library (subprocess)"),
    ("evil:build", {"command": "touch PWNED"}, "'evil:build' is posix.system from the Python standard library"),
    ("torch:load", {"f": "x.pt"}, "'torch:load' is a torch function, not a model class"),
    ("notmodel:build", {}, "factory notmodel:build returned a dict, not a torch.nn.Module"),
    ("notmodel:Thing", {}, "'notmodel:Thing' is the class Thing, not a torch.nn.Module"),
])
def test_validate_refuses_factories_that_are_not_user_model_code(bc: Path, capsys: pytest.CaptureFixture[str],
                                                                  factory: str, kwargs: dict, message: str) -> None:
    (bc / "evil.py").write_text("from os import system as build\n")
    (bc / "notmodel.py").write_text("def build():\n    return {'a': 1}\n\nclass Thing:\n    pass\n")
    spec = write_spec(bc, VALID.replace("factory: bc_model:build",
                                        f"factory: '{factory}'\n  factory_kwargs: {json.dumps(kwargs)}"))
    error = rejected(capsys, spec)
    assert message in error and "model.factory" in error and str(spec) in error
    assert not (bc / "PWNED").exists()
    # the audit itself refuses it the same way
    code, out = run(capsys, "run", str(spec), "--out", str(bc / "out"), "-q")
    assert code == 2 and message in out and not (bc / "PWNED").exists()


def test_validate_refuses_weights_that_do_not_fit_the_factory(bc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(bc, VALID.replace("factory: bc_model:build",
                                        "factory: bc_model:build\n  factory_kwargs: {n_outputs: 3}"))
    error = rejected(capsys, spec)
    assert "the weights in" in error and "do not fit the model built by bc_model:build" in error
    assert "shape mismatch weight: file (2, 30) vs model (3, 30)" in error
    torch.save({"layer.weight": torch.zeros(2, 30)}, bc / "other.pt")
    error = rejected(capsys, write_spec(bc, VALID.replace("bc.safetensors", "other.pt")))
    assert "missing 2 (e.g. weight, bias); unexpected 1 (e.g. layer.weight) keys" in error


def test_validate_refuses_missing_label_and_sensitive_columns(bc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = rejected(capsys, write_spec(bc, VALID.replace("label: diagnosis", "label: diagnose")))
    assert "dataset 'test' (bc_test.csv): label column 'diagnose' not found" in error
    assert "Did you mean 'diagnosis'?" in error
    error = rejected(capsys, write_spec(bc, VALID.replace("label: diagnosis", "label: diagnosis, sensitive: [sex]")))
    assert "dataset 'test' (bc_test.csv): unknown sensitive attribute 'sex' (available:" in error
    # a check naming an attribute the dataset does not have
    spec = VALID + "  - {id: gaps, check: fairness.group, sensitive: [age]}\n"
    error = rejected(capsys, write_spec(bc, spec))
    assert "checks[1].sensitive: 'age' is not among the sensitive attributes of dataset 'test' (none)" in error


def test_validate_refuses_bad_data_it_can_see_without_a_forward_pass(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    head = "name: v\nmodel: {fixture: digits-cnn}\ndata:\n  test: %s\nchecks:\n  - {id: h, check: performance.classification}\n"
    df = pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": ["u", "v", "w"], "label": [0, 1, 0]})
    df.to_csv(tmp_path / "t.csv", index=False)
    error = rejected(capsys, write_spec(tmp_path, head % "{path: t.csv}"))
    assert "non-numeric feature column(s) 'b'" in error
    error = rejected(capsys, write_spec(tmp_path, head % "{path: t.csv, features: [a]}"))
    assert "1 NaN values in column 'a'" in error
    for cls, size in (("0", (8, 8)), ("1", (9, 8))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros(size, dtype=np.uint8)).save(tmp_path / "imgs" / cls / "a.png")
    error = rejected(capsys, write_spec(tmp_path, head % "{path: imgs}"))
    assert "images differ in size: 0/a.png is 8x8 but 1/a.png is 9x8" in error
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 2)), y=np.array([0, 1]), g=np.array(["a", None], dtype=object))
    assert "holds Python objects" in rejected(capsys, write_spec(tmp_path, head % "{path: o.npz}"))
    domain = (head % "{path: t.csv, features: [a]}").replace("checks:", "  domains:\n    rot: {from: test, transform: rotate}\nchecks:")
    df.fillna(0.0).to_csv(tmp_path / "t.csv", index=False)
    assert "transform 'rotate' applies to image data, but the data are tabular" in rejected(
        capsys, write_spec(tmp_path, domain))
    assert "model file not found" in rejected(capsys, write_spec(tmp_path, (head % "{path: t.csv, features: [a]}")
                                                            .replace("{fixture: digits-cnn}", "{path: none.pt}")))
