"""The data contract (README, "Data contract"): class order, sensitive attributes, dtypes,
input columns and image folders, each with the message a user gets when it is broken.

The headline case: scikit-learn's breast-cancer data as a CSV with string labels, and a
model trained with malignant = 0 (scikit-learn's own coding). Sorted labels would make
benign = 0 and report accuracy ~0.04: with `model.classes` the audit equals scikit-learn,
without it the audit stops and says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from audit.cli import main
from audit.errors import DataError
from audit.labels import ALPHA, label_order_problem
from tests.test_loading import load, make_ctx

# ---- the breast-cancer model ----------------------------------------------------------------
BC_FACTORY = """\
import torch


def build(n_features=30, n_outputs=2):
    return torch.nn.Linear(n_features, n_outputs)
"""


def write_breast_cancer(folder: Path) -> dict[str, Any]:
    """Writes `bc_test.csv` (30 features, `diagnosis` = 'malignant' | 'benign'), the
    factory module `bc_model.py` and `bc.safetensors`: scikit-learn's logistic regression
    (malignant = 0, benign = 1, scikit-learn's coding) as a torch Linear layer with the
    standardisation folded in. Returns the test labels and scikit-learn's predictions."""
    from safetensors.torch import save_file
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.25, random_state=0,
                                                        stratify=data.target)
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0)
    clf = LogisticRegression(max_iter=5000).fit((x_train - mu) / sd, y_train)
    w = clf.coef_[0] / sd
    b = clf.intercept_[0] - float(w @ mu)
    # two logits whose difference is the regression's score: class 1 (benign) when it is > 0
    weight = torch.tensor(np.stack([-w / 2, w / 2]), dtype=torch.float32)
    bias = torch.tensor([-b / 2, b / 2], dtype=torch.float32)
    save_file({"weight": weight, "bias": bias}, folder / "bc.safetensors")
    (folder / "bc_model.py").write_text(BC_FACTORY)
    names = np.array(["malignant", "benign"])  # index = scikit-learn's target
    df = pd.DataFrame(x_test, columns=list(data.feature_names))
    df["diagnosis"] = names[y_test]
    df.to_csv(folder / "bc_test.csv", index=False)
    with torch.no_grad():
        torch_pred = (torch.tensor(x_test, dtype=torch.float32) @ weight.T + bias).argmax(1).numpy()
    return {"y": y_test, "sklearn_pred": clf.predict((x_test - mu) / sd), "torch_pred": torch_pred}


BC_SPEC = """\
name: Breast cancer audit
device: cpu
model:
  path: bc.safetensors
  factory: bc_model:build
{classes}data:
  test: {{path: bc_test.csv, label: diagnosis}}
checks:
  - {{id: heldout, check: performance.classification, thresholds: {{accuracy: {{min: 0.9}}}}}}
"""


def bc_spec(folder: Path, classes: str | None) -> Path:
    path = folder / "audit_bc.yaml"
    path.write_text(BC_SPEC.format(classes=f"  classes: {classes}\n" if classes else ""))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_breast_cancer_with_model_classes_equals_sklearn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.metrics import accuracy_score

    ref = write_breast_cancer(tmp_path)
    assert np.array_equal(ref["torch_pred"], ref["sklearn_pred"])  # the torch copy is the same classifier
    expected = accuracy_score(ref["y"], ref["sklearn_pred"])
    out = tmp_path / "out"
    code, text = run_cli(capsys, "run", str(bc_spec(tmp_path, "[malignant, benign]")), "--out", str(out),
                         "--format", "json", "-q")
    assert code == 0, text
    results = json.loads((out / "results.json").read_text())
    assert results["checks"][0]["metrics"]["accuracy"]["value"] == expected > 0.9
    order = results["datasets"]["test"]["class_order"]
    assert order == {"classes": ["malignant", "benign"], "source": "model.classes", "declared": True}
    assert results["datasets"]["test"]["notices"] == [] and "note:" not in text


def test_breast_cancer_without_model_classes_stops_on_class_order(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_breast_cancer(tmp_path)
    out = tmp_path / "out"
    code, text = run_cli(capsys, "run", str(bc_spec(tmp_path, None)), "--out", str(out), "-q")
    assert code == 2 and "Traceback" not in text and not (out / "results.json").exists()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    message = errors[0]
    assert "dataset 'test': the class order looks wrong" in message
    assert "sorted labels of bc_test.csv (0=benign, 1=malignant)" in message
    assert "`model.classes: [malignant, benign]`" in message
    assert "accuracy is 0.0" in message


# ---- the label-order sanity test --------------------------------------------------------------
def one_hot_logits(pred: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[pred] * 5.0


def test_label_order_test_finds_swaps_and_leaves_poor_models_alone() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.95, y, 1 - y)
    assert label_order_problem(y, one_hot_logits(good, 2), ["a", "b"], "sorted labels of t.csv") is None
    message = label_order_problem(y, one_hot_logits(1 - good, 2), ["a", "b"], "sorted labels of t.csv")
    assert message and "`model.classes: [b, a]`" in message and "0=a, 1=b" in message
    # a single-logit binary model (class 1 when the logit is positive)
    single = np.where(1 - good == 1, 2.0, -2.0)[:, None]
    assert "`model.classes: [b, a]`" in label_order_problem(y, single, ["a", "b"], "s")
    # a constant model, even of the minority class, is poor but not mis-ordered
    skewed = (rng.random(400) < 0.2).astype(int)
    assert label_order_problem(skewed, one_hot_logits(np.ones(400, int), 2), ["a", "b"], "s") is None
    # too few samples to tell: 10 swapped samples cannot reach the test's level
    assert label_order_problem(y[:10], one_hot_logits(1 - y[:10], 2), ["a", "b"], "s") is None


def test_label_order_test_finds_a_partial_permutation_among_many_classes() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 1000)
    swap = np.array([0, 2, 1, 3, 4])  # the model's outputs 1 and 2 are the other way round
    pred = np.where(rng.random(1000) < 0.9, swap[y], rng.integers(0, 5, 1000))
    message = label_order_problem(y, one_hot_logits(pred, 5), list("abcde"), "s")
    assert message and "`model.classes: [a, c, b, d, e]`" in message


@pytest.mark.parametrize("k", [2, 3, 10])
def test_label_order_test_is_quiet_for_models_that_ignore_the_input(k: int) -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, k, 2000)
        logits = rng.normal(size=(2000, k)) + np.linspace(0, 1, k)  # skewed, label-free predictions
        assert label_order_problem(y, logits, [str(i) for i in range(k)], "s") is None, seed
    assert ALPHA <= 1e-4


# ---- where the class order comes from -------------------------------------------------------
def test_class_order_is_recorded_with_its_source(tmp_path: Path) -> None:
    df = pd.DataFrame({"f": np.arange(6.0), "label": ["yes", "no"] * 3})
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = load(tmp_path, {"path": "t.csv"})
    assert ds.meta["class_order"] == {"classes": ["no", "yes"], "source": "sorted labels of t.csv", "declared": False}
    assert ds.notices == ["dataset 'test': class order taken from the sorted labels of t.csv: 0=no, 1=yes; if the "
                          "model's outputs are in another order, declare it with `model.classes`"]
    assert ds.describe()["class_order"]["source"] == "sorted labels of t.csv" and ds.describe()["notices"] == ds.notices
    ds = load(tmp_path, {"path": "t.csv"}, model={"fixture": "digits-cnn", "classes": ["yes", "no"]})
    assert ds.meta["class_order"]["declared"] and ds.classes == ["yes", "no"] and ds.notices == []
    np.testing.assert_array_equal(ds.y, [0, 1] * 3)
    # a test set takes the train set's order (and says so once, on train)
    ctx = make_ctx(tmp_path, {"train": {"path": "t.csv"}, "test": {"path": "t.csv"}})
    test = ctx.dataset("test")
    assert test.meta["class_order"]["source"] == "dataset 'train' (sorted labels of t.csv)" and test.notices == []
    assert len(ctx.dataset("train").notices) == 1
    # a fixture's order is documented, so declared
    digits = load(tmp_path, {"fixture": "digits", "split": "test"})
    assert digits.meta["class_order"] == {"classes": [str(i) for i in range(10)], "source": "fixture digits",
                                          "declared": True}


def test_model_classes_reorder_every_format(tmp_path: Path) -> None:
    model = {"fixture": "digits-cnn", "classes": ["c", "b", "a"]}
    np.savez(tmp_path / "idx.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 2]), classes=np.array(["a", "b", "c"]))
    ds = load(tmp_path, {"path": "idx.npz"}, model=model)  # y indexes the file's `classes`: mapped by name
    assert ds.classes == ["c", "b", "a"] and ds.y.tolist() == [2, 1, 0]
    np.savez(tmp_path / "names.npz", x=np.zeros((3, 2)), y=np.array(["a", "b", "c"]))
    assert load(tmp_path, {"path": "names.npz"}, model=model).y.tolist() == [2, 1, 0]
    # a fixture in the same classes is re-indexed; other names are an error
    digits = load(tmp_path, {"fixture": "digits", "split": "test"},
                  model={"fixture": "digits-cnn", "classes": [str(i) for i in reversed(range(10))]})
    from fixtures.datasets import load_fixture_dataset

    assert np.array_equal(digits.y, 9 - load_fixture_dataset("digits", "test").y)
    with pytest.raises(DataError, match=r"model.classes \(a, b\) are not the fixture's classes"):
        load(tmp_path, {"fixture": "german"}, model={"fixture": "digits-cnn", "classes": ["a", "b"]})


def test_hugging_face_id2label_and_saved_recipe_give_the_order(tmp_path: Path) -> None:
    pd.DataFrame({"f": [0.0, 1.0, 2.0], "label": ["neg", "pos", "neg"]}).to_csv(tmp_path / "t.csv", index=False)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": {"0": "pos", "1": "neg"}}))
    ds = load(tmp_path, {"path": "t.csv"}, model={"path": "hf"})  # the config is read, the model is not loaded
    assert ds.classes == ["pos", "neg"] and ds.y.tolist() == [1, 0, 1]
    assert ds.meta["class_order"] == {"classes": ["pos", "neg"], "source": "id2label", "declared": True}
    (hf / "config.json").write_text(json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))  # defaults say nothing
    assert load(tmp_path, {"path": "t.csv"}, model={"path": "hf"}).meta["class_order"]["source"] == "sorted labels of t.csv"
    (tmp_path / "m.safetensors").write_bytes(b"")
    (tmp_path / "m.json").write_text(json.dumps({"format": "audit-model/1", "classes": ["pos", "neg"]}))
    ds = load(tmp_path, {"path": "t.csv"}, model={"path": "m.safetensors"})
    assert ds.classes == ["pos", "neg"] and ds.meta["class_order"]["source"] == "recipe saved with the model"


def test_a_spec_that_trains_its_model_declares_the_order(tmp_path: Path) -> None:
    pd.DataFrame({"f": np.arange(6.0), "label": ["b", "a"] * 3}).to_csv(tmp_path / "t.csv", index=False)
    model = {"train": {"architecture": "ft_transformer", "data": "fit"}}
    ctx = make_ctx(tmp_path, {"fit": {"path": "t.csv"}, "test": {"path": "t.csv"}}, model=model)
    assert ctx.dataset("fit").meta["class_order"]["declared"] and ctx.dataset("fit").notices == []
    assert ctx.dataset("test").meta["class_order"] == {
        "classes": ["a", "b"], "source": "dataset 'fit' (sorted labels of t.csv)", "declared": True}


# ---- sensitive attributes --------------------------------------------------------------------
def test_every_other_npz_array_is_a_sensitive_attribute(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 12
    arrays = {"x": rng.random((n, 3)), "target": np.arange(n) % 2, "y": np.zeros(n), "classes": np.array(["a", "b"]),
              "sex": np.array(["F", "M"] * 6), "race": np.repeat(["p", "q", "r"], 4)}
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load(tmp_path, {"path": "d.npz", "label": "target"})  # x, y, classes and the label are reserved
    assert sorted(ds.sensitive) == ["race", "sex"] and ds.classes == ["a", "b"]
    assert sorted(load(tmp_path, {"path": "d.npz", "label": "target", "sensitive": ["sex"]}).sensitive) == ["sex"]
    np.savez(tmp_path / "bad.npz", x=arrays["x"], y=arrays["target"], weights=rng.random((n, 2)))
    with pytest.raises(DataError, match=r"array 'weights' has shape \(12, 2\), but every npz array other than "
                                        r"classes, x, y is a sensitive attribute"):
        load(tmp_path, {"path": "bad.npz"})


def test_fairness_group_uses_the_npz_attributes_undeclared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", x=x, y=y, sex=rng.choice(["F", "M"], n), race=rng.choice(["p", "q"], n))
    (tmp_path / "lin.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(3, 2)\n")
    save_file({"weight": torch.tensor([[-1.0, 0, 0], [1.0, 0, 0]]), "bias": torch.zeros(2)}, tmp_path / "lin.safetensors")
    spec = tmp_path / "audit_fair.yaml"
    spec.write_text("name: fair\ndevice: cpu\nmodel: {path: lin.safetensors, factory: 'lin:build', classes: ['0', '1']}\n"
                    "data:\n  test: {path: d.npz}\n"
                    "checks:\n  - {id: gaps, check: fairness.group, min_group_size: 10}\n")
    code, text = run_cli(capsys, "run", str(spec), "--out", str(tmp_path / "o"), "--format", "json", "-q")
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    gaps = results["checks"][0]
    assert gaps["status"] == "info", gaps["message"]
    assert results["datasets"]["test"]["sensitive"] == ["race", "sex"]
    assert "race" in json.dumps(gaps["evidence"]) and "sex" in json.dumps(gaps["evidence"])


# ---- dtypes and input columns ----------------------------------------------------------------
def test_integers_are_token_ids_only_for_text(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(-5, 5, (8, 4)).astype(np.int8)
    np.savez(tmp_path / "int8.npz", x=x, y=np.arange(8) % 2)
    ds = load(tmp_path, {"path": "int8.npz"})
    assert ds.kind == "tabular" and ds.x.dtype == np.float32 and np.array_equal(ds.x, x.astype(np.float32))
    assert any("x holds integers (int8) and is read as tabular features" in n for n in ds.notices)
    text = load(tmp_path, {"path": "int8.npz", "kind": "text"})
    assert text.kind == "text" and text.x.dtype == np.int64
    np.savez(tmp_path / "float.npz", x=np.zeros((4, 3)), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"`kind: text` needs x of integer token ids"):
        load(tmp_path, {"path": "float.npz", "kind": "text"})
    with pytest.raises(DataError, match=r"`kind: image` does not fit x of shape \(4, 3\)"):
        load(tmp_path, {"path": "float.npz", "kind": "image"})
    pd.DataFrame({"a": [1, 2], "label": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="`kind: text` in a .csv file: name the column holding the raw text with `text:`"):
        load(tmp_path, {"path": "t.csv", "kind": "text"})


def test_features_fix_the_input_columns_and_their_order(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0], "c": [0, 1, 0], "label": ["x", "y", "x"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = load(tmp_path, {"path": "t.csv", "features": ["b", "a"]})
    assert ds.feature_names == ["b", "a"] and ds.x[:, 0].tolist() == [10.0, 20.0, 30.0]
    assert load(tmp_path, {"path": "t.csv"}).feature_names == ["a", "b", "c"]  # default: file order
    # npz: 1-D arrays stacked as columns, in the order given; the rest are sensitive attributes
    np.savez(tmp_path / "cols.npz", age=np.array([30, 40, 50]), hours=np.array([1.5, 2.5, 3.5]),
             y=np.array([0, 1, 0]), sex=np.array(["F", "M", "F"]))
    ds = load(tmp_path, {"path": "cols.npz", "features": ["hours", "age"]})
    assert ds.kind == "tabular" and ds.feature_names == ["hours", "age"] and list(ds.sensitive) == ["sex"]
    np.testing.assert_array_equal(ds.x, [[1.5, 30], [2.5, 40], [3.5, 50]])
    with pytest.raises(DataError, match="feature array 'agee' not found.*Did you mean 'age'"):
        load(tmp_path, {"path": "cols.npz", "features": ["agee"]})
    np.savez(tmp_path / "both.npz", x=np.zeros((3, 1)), age=np.arange(3), y=np.arange(3))
    with pytest.raises(DataError, match="either as an array `x` or as `features` arrays, not both"):
        load(tmp_path, {"path": "both.npz", "features": ["age"]})
    with pytest.raises(DataError, match="'y' is a reserved array name"):
        load(tmp_path, {"path": "cols.npz", "features": ["age", "y"]})


# ---- image folders ---------------------------------------------------------------------------
def image_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_mixed_image_sizes_are_an_error_unless_image_size(tmp_path: Path) -> None:
    image_folder(tmp_path / "imgs", {"cat": [(8, 8), (8, 8)], "dog": [(8, 8), (16, 12)]})
    with pytest.raises(DataError) as err:
        load(tmp_path, {"path": "imgs"})
    assert str(err.value) == ("dataset 'test' (imgs): images differ in size: cat/0.png is 8x8 but dog/1.png is 16x12 "
                              "(HxW); set `image_size: [H, W]` on the data entry to resize them all to one size "
                              "(the report records it)")
    ds = load(tmp_path, {"path": "imgs", "image_size": [10, 6]})
    assert ds.x.shape == (4, 3, 10, 6) and ds.meta["resized"] == {"n": 4, "of": 4, "to": [10, 6]}
    assert "dataset 'test': resized 4 of 4 images to 10x6 (image_size)" in ds.describe()["notices"]
    with pytest.raises(DataError, match="`image_size` applies to image folders"):
        pd.DataFrame({"a": [1], "label": [0]}).to_csv(tmp_path / "t.csv", index=False)
        load(tmp_path, {"path": "t.csv", "image_size": [4, 4]})


def test_empty_class_folder_is_kept_and_said(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs", {"ant": [(6, 6)], "cat": [(6, 6), (6, 6)]})
    (root / "bee").mkdir()
    ds = load(tmp_path, {"path": "imgs"})
    assert ds.classes == ["ant", "bee", "cat"] and ds.describe()["class_counts"] == [1, 0, 2]
    assert ("dataset 'test': class folder 'bee' holds no images; class 'bee' is kept, with no samples"
            in ds.notices)
    # with declared classes, a folder outside them is an error even when empty
    with pytest.raises(DataError, match=r"label\(s\) 'bee' are not among the classes in model.classes"):
        load(tmp_path, {"path": "imgs"}, model={"fixture": "digits-cnn", "classes": ["ant", "cat"]})


def test_grayscale_and_colour_images_load_as_colour(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "gray", {"a": [(5, 5)]}, mode="L")
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(root / "a" / "rgb.png")
    ds = load(tmp_path, {"path": "gray"})
    assert ds.x.shape == (2, 3, 5, 5)


def test_a_streamed_image_folder_reads_what_the_in_memory_load_holds(tmp_path: Path) -> None:
    """`execution: {engine: streaming}` decodes an image folder in batches on demand: the
    same inputs (resized, grayscale made colour), labels, classes and content hash as
    loading it whole."""
    from audit.context import Context
    from audit.spec import parse_spec

    root = image_folder(tmp_path / "imgs", {"cat": [(8, 8)] * 5, "dog": [(8, 8), (6, 9), (8, 8)]})
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8)).save(root / "dog" / "gray.png")
    entry = {"path": "imgs", "image_size": [8, 8]}
    whole = load(tmp_path, entry)
    raw = {"name": "t", "seed": 0, "device": "cpu", "model": {"fixture": "digits-cnn"},
           "data": {"test": entry}, "checks": [], "execution": {"engine": "streaming"}}
    streamed = Context(parse_spec(raw, check_registry=False, base_dir=tmp_path)).dataset("test")
    assert streamed.lazy and not whole.lazy
    assert streamed.x.shape == whole.x.shape == (9, 3, 8, 8)
    np.testing.assert_array_equal(streamed.take(np.arange(9)), whole.x)
    np.testing.assert_array_equal(streamed.take(np.array([7, 2])), whole.x[[7, 2]])  # any order
    assert streamed.y.tolist() == whole.y.tolist() and streamed.classes == whole.classes == ["cat", "dog"]
    assert streamed.sha256 == whole.sha256
