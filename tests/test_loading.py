"""Data and model loading: round-trips for every format, one clear error per bad input,
safe model loading, and the reference fixtures (accuracy, determinism, cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from audit.context import Context
from audit.dataset import LoadedModel
from audit.errors import DataError, ModelError, SpecError
from audit.data import file_sha256
from audit.spec import parse_spec
from audit.zoo.cnn import CNN


def make_ctx(tmp_path: Path, data: dict[str, Any], model: dict[str, Any] | None = None,
             domains: dict[str, Any] | None = None) -> Context:
    raw = {"name": "t", "seed": 0, "device": "cpu", "model": model or {"fixture": "digits-cnn"},
           "data": {**data, **({"domains": domains} if domains else {})}, "checks": []}
    return Context(parse_spec(raw, check_registry=False, base_dir=tmp_path))


def load(tmp_path: Path, entry: dict[str, Any], name: str = "test", **kw: Any):
    return make_ctx(tmp_path, {name: entry}, **kw).dataset(name)


def table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(float),
        "hours": rng.normal(40, 8, n),
        "is_owner": rng.integers(0, 2, n),
        "sex": rng.choice(["F", "M"], n),
        "income": rng.choice(["high", "low"], n),
    })


# ---- npz ------------------------------------------------------------------------------
def test_npz_image_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((30, 1, 8, 8)).astype(np.float32)
    y = np.arange(30) % 3
    sex = np.array(["F", "M"] * 15)
    np.savez(tmp_path / "d.npz", x=x, y=y, sex=sex, classes=np.array(["a", "b", "c"]))
    ds = load(tmp_path, {"path": "d.npz", "sensitive": ["sex"]})
    assert ds.kind == "image" and ds.name == "test"
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.sensitive["sex"], sex)
    assert str(tmp_path / "d.npz") in ds.source


def test_npz_kinds_and_uint8_nhwc_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "tab.npz", x=np.array([[0.5, 1.0], [2.0, 0.0], [1.5, 1.0]]), y=np.array([0, 1, 1]))
    tab = load(tmp_path, {"path": "tab.npz"})
    assert tab.kind == "tabular" and tab.x.dtype == np.float32 and tab.classes == ["0", "1"]
    assert tab.continuous.tolist() == [True, False]  # a 0/1 column is an indicator
    np.savez(tmp_path / "txt.npz", x=np.array([[1, 5, 2], [3, 0, 0]]), y=np.array(["pos", "neg"]))
    txt = load(tmp_path, {"path": "txt.npz", "kind": "text"})  # integers are token ids only when declared
    assert txt.kind == "text" and txt.x.dtype == np.int64 and txt.classes == ["neg", "pos"]
    np.testing.assert_array_equal(txt.y, [1, 0])
    img = np.full((4, 6, 5, 3), 255, dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=img, y=np.array([0, 1, 0, 1]))
    ds = load(tmp_path, {"path": "img.npz"})
    assert ds.x.shape == (4, 3, 6, 5) and ds.x.dtype == np.float32 and float(ds.x.max()) == 1.0


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 2))}, "has no array 'y'"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(4, int)}, "x has 3 rows but y has 4"),
    ({"x": np.array([[np.nan, 1.0], [np.nan, 0.0]]), "y": np.array([0, 1])}, "2 NaN values in x"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "the dataset is empty"),
    ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "non-integer"),
])
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        load(tmp_path, {"path": "bad.npz"})
    assert "dataset 'test' (bad.npz)" in str(err.value)


def test_npz_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.zeros((2, 2)), y=np.array([0, 1]), sex=np.array(["F", None], dtype=object))
    with pytest.raises(DataError, match="object arrays"):
        load(tmp_path, {"path": "obj.npz", "sensitive": ["sex"]})


def test_unknown_sensitive_attribute_names_those_that_exist(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.array([0, 1]), sex=np.array(["F", "M"]))
    with pytest.raises(DataError, match=r"unknown sensitive attribute 'sexx' \(available: 'sex'\).*Did you mean 'sex'"):
        load(tmp_path, {"path": "d.npz", "sensitive": ["sexx"]})
    table().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="unknown sensitive attribute 'race'.*'sex'"):
        load(tmp_path, {"path": "t.csv", "label": "income", "sensitive": ["race"]})


# ---- csv / parquet --------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip(tmp_path: Path, suffix: str) -> None:
    df = table()
    path = tmp_path / f"t{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    ds = load(tmp_path, {"path": path.name, "label": "income", "sensitive": ["sex"]})
    assert ds.kind == "tabular" and ds.feature_names == ["age", "hours", "is_owner"]
    np.testing.assert_allclose(ds.x, df[["age", "hours", "is_owner"]].to_numpy(np.float32))
    assert ds.classes == ["high", "low"]
    np.testing.assert_array_equal(ds.y, (df["income"] == "low").to_numpy().astype(int))
    np.testing.assert_array_equal(ds.sensitive["sex"], df["sex"].to_numpy(str))
    assert ds.continuous.tolist() == [True, True, False]
    assert ds.feature_groups == {"age": [0], "hours": [1], "is_owner": [2]}


@pytest.mark.parametrize("dictionary", [True, False])
def test_parquet_string_columns_read_as_dictionaries_give_the_csv_codes(tmp_path: Path, dictionary: bool) -> None:
    """Parquet string columns are read as dictionaries (codes without a Python string per
    row), across row groups whose dictionaries differ, and with plain encoding: the same
    labels and groups (missing and non-ASCII values included) as the CSV reader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"age": rng.normal(size=n), "hours": rng.normal(size=n),
                       "income": rng.choice(["low", "high"], n),
                       "sex": rng.choice(["F", "M", "Ünknown", None], n).astype(object)})
    df.loc[:999, "sex"] = "M"  # the first row group's dictionary lacks the other values
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "t.parquet", row_group_size=1000,
                   use_dictionary=dictionary)
    df.to_csv(tmp_path / "t.csv", index=False)
    entry = {"label": "income", "sensitive": ["sex"], "features": ["age", "hours"]}
    a = load(tmp_path, {"path": "t.parquet", **entry})
    b = load(tmp_path, {"path": "t.csv", **entry})
    assert a.classes == b.classes
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.sensitive["sex"], b.sensitive["sex"])
    assert set(np.unique(a.sensitive["sex"])) >= {"F", "M", "Ünknown"}


def test_arrow_feature_columns_read_as_pandas_reads_them() -> None:
    """The streamed reader casts parquet columns into float32 without pandas: the same
    bits as the pandas reader for every numeric type, with and without nulls."""
    import pyarrow as pa

    from audit.lazy import arrow_inputs, table_inputs

    rng = np.random.default_rng(0)
    n = 500
    big = rng.integers(0, 2**62, n)
    cols = {"i8": pa.array(rng.integers(-100, 100, n).astype(np.int8)),
            "i64_null": pa.array([None if i % 7 == 0 else int(v) for i, v in enumerate(big)], pa.int64()),
            "u64": pa.array(big.astype(np.uint64)),
            "f32": pa.array(rng.normal(size=n).astype(np.float32)),
            "f64_nan_null": pa.array([None if i % 5 == 0 else (np.nan if i % 3 == 0 else float(v))
                                      for i, v in enumerate(rng.normal(size=n) * 1e5)], pa.float64())}
    for extra in ({}, {"flag": pa.array(rng.random(n) < 0.5)}):  # a bool column: pandas reads it all
        table = pa.table({**cols, **extra})
        features = list(table.column_names)
        ours, ref = arrow_inputs(table, features), table_inputs(table.to_pandas(), features)
        assert ours.dtype == ref.dtype == np.float32
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
        batch = table.to_batches(max_chunksize=128)[1]
        np.testing.assert_array_equal(arrow_inputs(batch, features), table_inputs(batch.to_pandas(), features))


def test_sensitive_column_can_also_be_a_feature(tmp_path: Path) -> None:
    df = table()
    df["sex_code"] = (df["sex"] == "F").astype(int)
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = load(tmp_path, {"path": "t.csv", "label": "income", "sensitive": ["sex_code"],
                         "features": ["age", "sex_code"]})
    assert ds.feature_names == ["age", "sex_code"] and set(ds.sensitive) == {"sex_code"}


def test_table_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset 'test' \(nope.csv\): data file not found: .*nope.csv"):
        load(tmp_path, {"path": "nope.csv"})
    df = table()
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="label column 'incom' not found.*Did you mean 'income'"):
        load(tmp_path, {"path": "t.csv", "label": "incom"})
    with pytest.raises(DataError, match=r"non-numeric feature column\(s\) 'sex'"):
        load(tmp_path, {"path": "t.csv", "label": "income"})
    df.loc[[3, 7], "age"] = np.nan
    df.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(DataError) as err:
        load(tmp_path, {"path": "nan.csv", "label": "income", "sensitive": ["sex"]})
    assert str(err.value) == "dataset 'test' (nan.csv): 2 NaN values in column 'age'"
    df = table()
    df.loc[0, "hours"] = np.inf
    df.to_parquet(tmp_path / "inf.parquet")
    with pytest.raises(DataError, match="1 infinite values in column 'hours'"):
        load(tmp_path, {"path": "inf.parquet", "label": "income", "sensitive": ["sex"]})


def test_class_indices_follow_train_and_model_classes(tmp_path: Path) -> None:
    df = table(60)
    df["grade"] = np.tile(["a", "b", "c"], 20)
    df = df.drop(columns=["sex", "income"])
    df.to_csv(tmp_path / "train.csv", index=False)
    test = df[df["grade"] != "b"]  # a class missing from test is fine
    test.to_csv(tmp_path / "test.csv", index=False)
    ctx = make_ctx(tmp_path, {"train": {"path": "train.csv", "label": "grade"},
                              "test": {"path": "test.csv", "label": "grade"}})
    ds = ctx.dataset("test")
    assert ds.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.y, np.where(test["grade"] == "a", 0, 2))
    # a label outside the declared classes is an error
    model = {"fixture": "digits-cnn", "classes": ["a", "b"]}
    with pytest.raises(DataError, match="label.*'c' are not among the classes in model.classes"):
        load(tmp_path, {"path": "test.csv", "label": "grade"}, model=model)
    model = {"fixture": "digits-cnn", "classes": ["c", "b", "a"]}
    ds = load(tmp_path, {"path": "test.csv", "label": "grade"}, model=model)
    assert ds.classes == ["c", "b", "a"]
    np.testing.assert_array_equal(ds.y, np.where(test["grade"] == "a", 2, 0))


# ---- image folders --------------------------------------------------------------------
def test_image_folder_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    pixels = {}
    for cls, n in (("cat", 3), ("dog", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            pixels[(cls, i)] = arr
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(root / "dog" / "big.jpg")
    (root / "dog" / "notes.txt").write_text("ignored")
    ds = load(tmp_path, {"path": "images", "image_size": [12, 10]})  # big.jpg is resized, and that is said
    assert "dataset 'test': resized 1 of 6 images to 12x10 (image_size)" in ds.notices
    assert ds.meta["resized"] == {"n": 1, "of": 6, "to": [12, 10]}
    assert ds.kind == "image" and ds.x.shape == (6, 3, 12, 10) and ds.classes == ["cat", "dog"]
    assert ds.x.dtype == np.float32 and 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(ds.x[0], pixels[("cat", 0)].transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no PNG or JPEG images"):
        load(tmp_path, {"path": "empty"})
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load(tmp_path, {"path": "flat"})
    (tmp_path / "broken" / "cat").mkdir(parents=True)
    (tmp_path / "broken" / "cat" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*x.png"):
        load(tmp_path, {"path": "broken"})


# ---- fixtures and derived domains -----------------------------------------------------
def test_fixture_datasets() -> None:
    from fixtures.datasets import load_fixture_dataset

    digits = load_fixture_dataset("digits", "test")
    assert digits.x.shape[1:] == (1, 8, 8) and len(digits) == 540 and digits.x.max() <= 1.0
    adult_train, adult_test = load_fixture_dataset("adult", "train"), load_fixture_dataset("adult", "test")
    assert (len(adult_train), len(adult_test)) == (32561, 16281)
    assert adult_train.classes == ["<=50K", ">50K"] and 0.2 < adult_test.y.mean() < 0.3
    assert set(adult_test.sensitive) == {"sex", "race", "age_group"}
    assert set(adult_test.sensitive["age_group"]) == {"<25", "25-44", "45-64", "65+"}
    groups = adult_train.feature_groups
    assert sorted(c for cols in groups.values() for c in cols) == list(range(adult_train.x.shape[1]))
    onehot = adult_train.x[:, groups["sex"]]
    assert np.all(onehot.sum(axis=1) == 1) and not adult_train.continuous[groups["sex"]].any()
    age = adult_train.x[:, groups["age"][0]]
    assert abs(age.mean()) < 1e-3 and abs(age.std() - 1) < 1e-3  # standardized with train stats
    german = load_fixture_dataset("german", "test")
    assert german.classes == ["good", "bad"] and len(german) == 300 and set(german.sensitive["sex"]) == {"female", "male"}
    shapes = load_fixture_dataset("shapes", "test-outline")
    assert shapes.x.shape == (1000, 3, 32, 32) and np.bincount(shapes.y).tolist() == [250] * 4
    # each call is a private copy: one caller cannot change another's data
    digits.x[:] = 0
    assert load_fixture_dataset("digits", "test").x.max() == 1.0


def test_fixture_entry_errors_and_sensitive_selection(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset fixture 'digit'.*Did you mean 'digits'"):
        load(tmp_path, {"fixture": "digit"})
    with pytest.raises(DataError, match="no split 'tst'.*Did you mean 'test'"):
        load(tmp_path, {"fixture": "digits", "split": "tst"})
    with pytest.raises(DataError, match="give a `split`"):
        load(tmp_path, {"fixture": "digits"}, name="holdout")
    ds = load(tmp_path, {"fixture": "german", "sensitive": ["sex"]})  # split defaults to the role name
    assert set(ds.sensitive) == {"sex"} and len(ds) == 300
    with pytest.raises(DataError, match="unknown sensitive attribute 'race'.*'sex', 'age_group'"):
        load(tmp_path, {"fixture": "german", "sensitive": ["race"]})


def test_derived_domain_is_seeded_and_keeps_labels(tmp_path: Path) -> None:
    data = {"test": {"fixture": "digits", "split": "test"}}
    domains = {"rotated": {"from": "test", "transform": "rotate", "severity": 3}}
    a = make_ctx(tmp_path, data, domains=domains)
    b = make_ctx(tmp_path, data, domains=domains)
    rot = a.dataset("rotated")
    assert rot.name == "rotated" and "rotate at severity 3" in rot.source
    np.testing.assert_array_equal(rot.y, a.dataset("test").y)
    assert not np.allclose(rot.x, a.dataset("test").x)
    np.testing.assert_array_equal(rot.x, b.dataset("rotated").x)
    bad = {"wobbly": {"from": "test", "transform": "rotat"}}
    # caught when the spec is parsed, before anything loads
    with pytest.raises(SpecError, match="data.domains.wobbly.transform: unknown transform 'rotat'.*Did you mean 'rotate'"):
        make_ctx(tmp_path, data, domains=bad)


# ---- models ---------------------------------------------------------------------------
FACTORY = {"factory": "audit.zoo.cnn:CNN", "factory_kwargs": {"in_channels": 1, "num_classes": 10, "widths": [8, 16]}}


def small_cnn() -> CNN:
    torch.manual_seed(0)
    return CNN(in_channels=1, num_classes=10, widths=[8, 16]).eval()


def outputs(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(x)


def model_ctx(tmp_path: Path, **model: Any) -> Context:
    return make_ctx(tmp_path, {"test": {"fixture": "digits", "split": "test"}}, model=model)


def test_safetensors_and_state_dict_with_factory(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = small_cnn()
    x = torch.rand(5, 1, 8, 8)
    save_file(net.state_dict(), tmp_path / "cnn.safetensors")
    torch.save(net.state_dict(), tmp_path / "cnn.pt")
    torch.save({"epoch": 3, "model_state_dict": net.state_dict()}, tmp_path / "ckpt.pt")
    for name in ("cnn.safetensors", "cnn.pt", "ckpt.pt"):
        loaded = model_ctx(tmp_path, path=name, **FACTORY).model
        assert torch.equal(outputs(loaded.module, x), outputs(net, x)), name
        assert loaded.sha256 == file_sha256(tmp_path / name)
        fresh = loaded.factory()  # same architecture, new weights
        assert isinstance(fresh, CNN) and not torch.equal(outputs(fresh, x), outputs(net, x))
    with pytest.raises(ModelError, match="weights only: give `factory"):
        model_ctx(tmp_path, path="cnn.safetensors").model
    wrong = {**FACTORY, "factory_kwargs": {"in_channels": 1, "num_classes": 3, "widths": [8, 16]}}
    with pytest.raises(ModelError, match=r"shape mismatch head.4.weight: file \(10, 128\) vs model \(3, 128\)"):
        model_ctx(tmp_path, path="cnn.safetensors", **wrong).model
    with pytest.raises(ModelError, match="has no callable 'CN'.*Did you mean 'CNN'"):
        model_ctx(tmp_path, path="cnn.safetensors", factory="audit.zoo.cnn:CN").model
    with pytest.raises(ModelError, match="cannot import factory module 'nowhere'"):
        model_ctx(tmp_path, path="cnn.safetensors", factory="nowhere:build").model


def test_factory_module_beside_the_spec(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "my_models_beside_spec.py").write_text(
        "from audit.zoo.cnn import CNN\n\ndef build(n):\n    return CNN(in_channels=1, num_classes=n, widths=[8, 16])\n")
    net = small_cnn()
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    loaded = model_ctx(tmp_path, path="w.safetensors", factory="my_models_beside_spec:build",
                       factory_kwargs={"n": 10}).model
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(outputs(loaded.module, x), outputs(net, x))


def test_factory_modules_of_the_same_name_beside_two_specs(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    for width, folder in ((3, tmp_path / "a"), (5, tmp_path / "b")):
        folder.mkdir()
        (folder / "same_name_model.py").write_text(
            f"import torch\n\ndef build():\n    return torch.nn.Linear(64, {width})\n")
        save_file(torch.nn.Linear(64, width).state_dict(), folder / "w.safetensors")
    for width, folder in ((3, tmp_path / "a"), (5, tmp_path / "b"), (3, tmp_path / "a")):
        loaded = model_ctx(folder, path="w.safetensors", factory="same_name_model:build").model
        assert loaded.module.out_features == width  # each spec's own module, not the one imported first


def test_torchscript(tmp_path: Path) -> None:
    net = small_cnn()
    x = torch.rand(4, 1, 8, 8)
    torch.jit.save(torch.jit.trace(net, x), str(tmp_path / "scripted.pt"))
    loaded = model_ctx(tmp_path, path="scripted.pt", input_range=[0.0, 1.0]).model
    assert torch.allclose(outputs(loaded.module, x), outputs(net, x), atol=1e-6)
    assert loaded.factory is None and loaded.input_range == (0.0, 1.0)
    assert loaded.sha256 == file_sha256(tmp_path / "scripted.pt")


def test_full_pickle_needs_trust(tmp_path: Path) -> None:
    net = small_cnn()
    torch.save(net, tmp_path / "whole.pt")  # pickles the class: loading it runs code
    with pytest.raises(ModelError, match="full pickle.*trust_pickle: true.*state_dict"):
        model_ctx(tmp_path, path="whole.pt").model
    loaded = model_ctx(tmp_path, path="whole.pt", trust_pickle=True).model
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(outputs(loaded.module, x), outputs(net, x)) and loaded.factory is None


def test_model_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model.path: model file not found"):
        model_ctx(tmp_path, path="missing.safetensors", **FACTORY).model
    (tmp_path / "weights").mkdir()  # a folder without config.json is no Hugging Face model
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        model_ctx(tmp_path, path="weights").model
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="unsupported model file type '.onnx'"):
        model_ctx(tmp_path, path="m.onnx").model
    with pytest.raises(ModelError, match="unknown model fixture 'digits_cnn'.*Did you mean 'digits-cnn'"):
        model_ctx(tmp_path, fixture="digits_cnn").model


# ---- reference fixtures ---------------------------------------------------------------
def test_digits_cnn_through_a_spec(tmp_path: Path, digits_cnn: LoadedModel) -> None:
    ctx = model_ctx(tmp_path, fixture="digits-cnn")
    model = ctx.model
    assert model.sha256 == digits_cnn.sha256 and model.architecture == "cnn"
    assert model.input_range == (0.0, 1.0) and model.classes == [str(i) for i in range(10)]
    acc = float((ctx.predictions("test") == ctx.dataset("test").y).mean())
    assert acc > 0.95, acc


def test_adult_transformer_accuracy(adult_transformer: LoadedModel) -> None:
    from fixtures.datasets import load_fixture_dataset

    test = load_fixture_dataset("adult", "test")
    ctx = Context.from_objects({"test": test}, adult_transformer)
    acc = float((ctx.predictions("test") == test.y).mean())
    assert acc > 0.82, acc
    assert adult_transformer.architecture == "ft_transformer"


def test_fixture_training_is_deterministic_and_cached(audit_cache_dir: Path, digits_cnn: LoadedModel) -> None:
    from fixtures.models import MODEL_FIXTURES, cached_weights, fixture_record, load_fixture_model, train_fixture

    path = cached_weights("digits-cnn")
    assert path.parent == audit_cache_dir / "models" and MODEL_FIXTURES["digits-cnn"].key() in path.name
    mtime = path.stat().st_mtime_ns
    again = load_fixture_model("digits-cnn")  # from the cache, no retraining
    assert path.stat().st_mtime_ns == mtime and again.sha256 == file_sha256(path) == digits_cnn.sha256
    record = fixture_record("digits-cnn")
    assert record["recipe"]["architecture"] == "cnn" and record["training"]["train_seconds"] > 0
    assert json.loads(path.with_suffix(".json").read_text()) == record
    retrained, _ = train_fixture("digits-cnn")  # from scratch, same recipe and seed
    cached = digits_cnn.module.state_dict()
    for key, value in retrained.state_dict().items():
        assert torch.equal(value, cached[key]), key
    # a fresh factory model has the same architecture but different weights
    fresh = digits_cnn.factory()
    assert fresh.state_dict().keys() == cached.keys()
    assert not torch.equal(fresh.state_dict()["head.4.weight"], cached["head.4.weight"])


def test_a_content_hash_computed_on_a_worker_thread_is_the_same_and_not_copied() -> None:
    import dataclasses

    import pandas as pd

    from audit.dataset import Dataset
    from audit.lazy import ArrayInputs

    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 4)).astype(np.float32)
    ds = Dataset(name="t", x=ArrayInputs(x, "tabular", shards=2), y=rng.integers(0, 3, 3000), kind="tabular",
                 classes=["a", "b", "c"], sensitive={"g": pd.Categorical(rng.choice(["u", "v"], 3000))})
    assert ds.y.dtype == np.int8  # streamed: compact labels
    digests = [bytes([i]) * 32 for i in range(3)]
    want = ds.content_sha256(digests)
    ds.hash_later(digests)
    copy = dataclasses.replace(ds, y=ds.y[::-1].copy())
    assert copy._sha256_job is None  # a copy with other labels does not inherit the pending hash
    assert ds.sha256 == want and ds._sha256_job is None
    # compact labels hash as the int64 labels of the same data
    wide = dataclasses.replace(ds, x=x, y=ds.y.astype(np.int64), _sha256=None)
    assert wide.content_sha256(digests) == want
