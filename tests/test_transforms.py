"""Domain transforms: shape, range, labels and sensitive attributes kept; severity
monotone; seeded; clear errors for unknown or misapplied transforms."""

from __future__ import annotations

import numpy as np
import pytest

from audit.dataset import Dataset
from audit.errors import DataError
from audit.transforms import TRANSFORMS, apply_transform, transforms_for
from fixtures.datasets import load_fixture_dataset

IMAGE_TRANSFORMS = transforms_for("image")


@pytest.fixture(scope="module")
def shapes() -> Dataset:
    ds = load_fixture_dataset("shapes", "test")
    # a small slice with a sensitive attribute, to see it carried through
    return Dataset(name="shapes", x=ds.x[:200], y=ds.y[:200], kind="image", classes=ds.classes,
                   sensitive={"group": np.array(["a", "b"] * 100)})


@pytest.fixture(scope="module")
def adult() -> Dataset:
    ds = load_fixture_dataset("adult", "test")
    return Dataset(name="adult", x=ds.x[:2000], y=ds.y[:2000], kind="tabular", classes=ds.classes,
                   sensitive={k: v[:2000] for k, v in ds.sensitive.items()}, feature_names=ds.feature_names,
                   feature_groups=ds.feature_groups, continuous=ds.continuous)


def test_registry_covers_the_design() -> None:
    assert set(IMAGE_TRANSFORMS) >= {"gaussian_noise", "gaussian_blur", "contrast", "brightness", "rotate",
                                     "translate", "invert", "pixelate", "shot_noise", "impulse_noise"}
    assert transforms_for("tabular") == ["feature_noise", "feature_scale"]
    assert all(len(info.levels) == 5 for info in TRANSFORMS.values())


@pytest.mark.parametrize("name", IMAGE_TRANSFORMS)
def test_image_transform_keeps_shape_range_labels_and_grows_with_severity(shapes: Dataset, name: str) -> None:
    before = shapes.x.copy()
    change = []
    for severity in (1, 5):
        out = apply_transform(shapes, name, severity, np.random.default_rng(0))
        assert out.x.shape == shapes.x.shape and out.x.dtype == np.float32
        assert out.x.min() >= 0.0 and out.x.max() <= 1.0
        np.testing.assert_array_equal(out.y, shapes.y)
        np.testing.assert_array_equal(out.sensitive["group"], shapes.sensitive["group"])
        assert out.classes == shapes.classes and out.kind == "image"
        assert out.meta["transform"] == name and out.meta["severity"] == severity
        change.append(float(np.abs(out.x - shapes.x).mean()))
    np.testing.assert_array_equal(shapes.x, before)  # the source is never modified
    assert change[0] > 0 and change[1] > change[0], change


@pytest.mark.parametrize("name", IMAGE_TRANSFORMS)
def test_image_transforms_work_on_tiny_grayscale_images(name: str) -> None:
    digits = load_fixture_dataset("digits", "test")
    out = apply_transform(digits, name, 5, np.random.default_rng(0))
    assert out.x.shape == digits.x.shape and 0.0 <= out.x.min() and out.x.max() <= 1.0


def test_transforms_are_seeded(shapes: Dataset) -> None:
    a = apply_transform(shapes, "gaussian_noise", 3, np.random.default_rng(7))
    b = apply_transform(shapes, "gaussian_noise", 3, np.random.default_rng(7))
    c = apply_transform(shapes, "gaussian_noise", 3, np.random.default_rng(8))
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert a.sha256 != shapes.sha256


def test_specific_image_semantics(shapes: Dataset) -> None:
    inv = apply_transform(shapes, "invert", 5, np.random.default_rng(0))
    np.testing.assert_allclose(inv.x, 1.0 - shapes.x, atol=1e-6)
    low = apply_transform(shapes, "contrast", 5, np.random.default_rng(0))
    assert low.x.std(axis=(1, 2, 3)).mean() < 0.1 * shapes.x.std(axis=(1, 2, 3)).mean()
    pix = apply_transform(shapes, "pixelate", 5, np.random.default_rng(0))
    assert np.all(pix.x[:, :, 0::4, 0::4] == pix.x[:, :, 1::4, 1::4])  # 8x8 blocks of 4x4 pixels


@pytest.mark.parametrize("name", ["feature_noise", "feature_scale"])
def test_tabular_transforms_touch_continuous_columns_only(adult: Dataset, name: str) -> None:
    cont = adult.continuous
    changes = []
    for severity in (1, 5):
        out = apply_transform(adult, name, severity, np.random.default_rng(0))
        assert out.x.shape == adult.x.shape and out.x.dtype == np.float32
        np.testing.assert_array_equal(out.x[:, ~cont], adult.x[:, ~cont])  # one-hot stays one-hot
        np.testing.assert_array_equal(out.y, adult.y)
        assert set(out.sensitive) == {"sex", "race", "age_group"}
        changes.append(float(np.abs(out.x[:, cont] - adult.x[:, cont]).mean()))
    assert 0 < changes[0] < changes[1]
    if name == "feature_scale":
        np.testing.assert_allclose(out.x[:, cont], adult.x[:, cont] * TRANSFORMS[name].levels[4], rtol=1e-6)
    else:  # noise std is the level times each column's std
        ratio = (out.x[:, cont] - adult.x[:, cont]).std(axis=0) / adult.x[:, cont].std(axis=0)
        np.testing.assert_allclose(ratio, TRANSFORMS[name].levels[4], rtol=0.1)


def test_errors(shapes: Dataset, adult: Dataset) -> None:
    with pytest.raises(DataError, match="unknown transform 'gausian_noise'.*Did you mean 'gaussian_noise'"):
        apply_transform(shapes, "gausian_noise", 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="'rotate' applies to image data, but dataset 'adult' is tabular. "
                                        "Transforms for tabular data: feature_noise, feature_scale"):
        apply_transform(adult, "rotate", 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="severity must be 1..5"):
        apply_transform(shapes, "rotate", 6, np.random.default_rng(0))
    text = Dataset(name="reviews", x=np.zeros((2, 4), np.int64), y=np.array([0, 1]), kind="text", classes=["n", "p"])
    with pytest.raises(DataError, match="Transforms for text data: typos, case"):
        apply_transform(text, "feature_noise", 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="carries none"):  # a text transform needs the raw texts
        apply_transform(text, "typos", 1, np.random.default_rng(0))
