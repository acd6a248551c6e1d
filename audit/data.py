"""Loading the datasets a spec names. Every user mistake becomes a DataError that names
the file and the problem.

Datasets: a fixture (`fixture` + `split`), a file or folder (`path`: .npz, .csv,
.parquet, or an image folder with one sub-folder per class), or a transform of another
dataset (`from` + `transform` + `severity`). Class indices must agree across datasets:
labels are mapped to `model.classes` when the spec gives them, else to the classes of
the `train` dataset (so a test set that lacks a class keeps the same indices), else to
the dataset's own sorted labels.

An npz file holds `x`, `y` (or the array named by `label`), optionally `classes`, and one
array per sensitive attribute; a CSV/Parquet file has a `label` column (default 'label').

The loader sees the spec and a `get_dataset` callable for the datasets this one depends
on (a `from` source, the `train` classes), never the audit Context.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.dataset import Dataset
from audit.errors import DataError, did_you_mean
from audit.seeding import seeded_rng
from audit.spec import AuditSpec, DataEntry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".parquet")


class DatasetStore:
    """The datasets of one spec, each loaded once, on first use."""

    def __init__(self, spec: AuditSpec, timings: dict[str, float] | None = None) -> None:
        self.spec = spec
        self.timings = timings if timings is not None else {}
        self._loaded: dict[str, Dataset] = {}

    def add(self, datasets: dict[str, Dataset]) -> None:
        """Datasets already in memory (tests, notebooks)."""
        self._loaded.update(datasets)

    def has(self, name: str) -> bool:
        return name in self._loaded or name in self.spec.data or name in self.spec.domains

    def get(self, name: str) -> Dataset:
        if name not in self._loaded:
            if not self.has(name):
                raise DataError(f"the spec defines no dataset '{name}'.{did_you_mean(name, self.spec.dataset_names())}")
            t0 = time.perf_counter()
            self._loaded[name] = load_dataset(self.spec, name, get_dataset=self.get)
            self.timings[f"load:{name}"] = time.perf_counter() - t0
        return self._loaded[name]

    @property
    def loaded(self) -> dict[str, Dataset]:
        return dict(self._loaded)


@dataclass(frozen=True)
class _Source:
    """What a dataset loader may consult: the spec, and the other datasets it names."""

    spec: AuditSpec
    dataset: Callable[[str], Dataset]

    def rng(self, purpose: str) -> np.random.Generator:
        return seeded_rng(self.spec.seed, purpose)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# =======================================================================================
# datasets
# =======================================================================================
def load_dataset(spec: AuditSpec, name: str, *, get_dataset: Callable[[str], Dataset]) -> Dataset:
    """Load dataset `name` of `spec`; `get_dataset` returns (and caches) the others."""
    src = _Source(spec, get_dataset)
    entry = spec.data.get(name) or spec.domains.get(name)
    if entry is None:
        raise DataError(f"the spec defines no dataset '{name}'.{did_you_mean(name, spec.dataset_names())}")
    if entry.from_:
        ds = src.dataset(entry.from_)
    elif entry.fixture:
        ds = _load_fixture(src, name, entry)
    else:
        ds = _load_path(src, name, entry)
    if entry.transform:
        try:
            ds = _transform(ds, entry, src.rng(f"domain:{name}"))
        except DataError as exc:
            raise DataError(str(exc), where=f"dataset '{name}'") from None
    # a copy when renaming, so a `from` source held by the context keeps its own name
    ds = ds if ds.name == name else dataclasses.replace(ds, name=name)
    if ds.kind == "text":  # a Hugging Face model reads its own tokenizer's ids
        from audit.hf import tokenize_for_model

        ds = tokenize_for_model(spec, ds)
    return ds


def _transform(ds: Dataset, entry: DataEntry, rng: np.random.Generator) -> Dataset:
    from audit.transforms import apply_transform

    return apply_transform(ds, entry.transform or "", entry.severity, rng)


def _load_fixture(src: _Source, name: str, entry: DataEntry) -> Dataset:
    from fixtures.datasets import FIXTURE_SPLITS, load_fixture_dataset

    fixture = entry.fixture or ""
    where = f"dataset '{name}' (fixture {fixture})"
    if fixture not in FIXTURE_SPLITS:
        raise DataError(f"unknown dataset fixture '{fixture}'.{did_you_mean(fixture, FIXTURE_SPLITS)}", where=where)
    split = entry.split or (name if name in FIXTURE_SPLITS[fixture] else None)
    if split is None:
        raise DataError(f"give a `split` ({', '.join(FIXTURE_SPLITS[fixture])})", where=where)
    try:
        ds = load_fixture_dataset(fixture, split)
    except DataError as exc:
        raise DataError(str(exc), where=where) from None
    # no `sensitive` keeps all of the fixture's attributes; a list keeps those named
    if entry.sensitive:
        _check_sensitive(entry.sensitive, list(ds.sensitive), where)
        ds.sensitive = {k: ds.sensitive[k] for k in entry.sensitive}
    declared = src.spec.model.classes
    if declared and len(declared) != ds.n_classes:
        raise DataError(f"model.classes names {len(declared)} classes but the fixture has {ds.n_classes} "
                        f"({', '.join(ds.classes)})", where=where)
    return ds


def _check_sensitive(asked: list[str], available: list[str], where: str) -> None:
    for attr in asked:
        if attr not in available:
            have = ", ".join(f"'{a}'" for a in available) if available else "none"
            raise DataError(f"unknown sensitive attribute '{attr}' (available: {have}).{did_you_mean(attr, available)}",
                            where=where)


class _Labels:
    """Maps raw labels to class indices consistently across a spec's datasets."""

    def __init__(self, src: _Source, name: str, where: str, file_classes: list[str] | None = None) -> None:
        self.src, self.name, self.where, self.file_classes = src, name, where, file_classes

    def reference(self) -> list[str] | None:
        spec = self.src.spec
        if spec.model.classes:
            return list(spec.model.classes)
        if self.file_classes:
            return self.file_classes
        train = spec.data.get("train")
        # a derived train set could lead back to this dataset: only plain ones are references
        if self.name != "train" and train is not None and not train.from_:
            return self.src.dataset("train").classes
        return None

    def by_name(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Labels are class names (CSV columns, string arrays, folder names)."""
        values = np.asarray(raw)
        if values.dtype.kind == "f" and np.all(values == np.round(values)):
            values = values.astype(np.int64)  # 1.0 and 1 name the same class
        uniq, inverse = np.unique(values, return_inverse=True)  # numeric labels sort numerically
        names = [str(u) for u in uniq]
        ref = self.reference()
        if ref is None:
            return inverse.astype(np.int64), names
        index = {c: i for i, c in enumerate(ref)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(f"label(s) {', '.join(repr(u) for u in unknown[:5])} are not among the classes "
                            f"{self._ref_source()} ({', '.join(ref[:20])})", where=self.where)
        return np.array([index[n] for n in names], dtype=np.int64)[inverse], ref

    def by_index(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Labels are class indices 0..K-1 (npz `y`)."""
        y = np.asarray(raw)
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise DataError("y holds non-integer values: give class indices 0..K-1 or class names", where=self.where)
        y = y.astype(np.int64)
        if y.min() < 0:
            raise DataError(f"y holds negative class indices (min {int(y.min())})", where=self.where)
        ref = self.reference()
        if ref is None:
            return y, [str(i) for i in range(int(y.max()) + 1)]
        if y.max() >= len(ref):
            raise DataError(f"label {int(y.max())} is outside the {len(ref)} classes {self._ref_source()} "
                            f"({', '.join(ref[:20])})", where=self.where)
        return y, ref

    def _ref_source(self) -> str:
        if self.src.spec.model.classes:
            return "in model.classes"
        return "in the file's `classes`" if self.file_classes else "of dataset 'train'"


def _load_path(src: _Source, name: str, entry: DataEntry) -> Dataset:
    path = src.spec.resolve(entry.path or "")
    where = f"dataset '{name}' ({entry.path})"
    if entry.split:
        raise DataError("`split` applies to fixtures only; point `path` at the split's file", where=where)
    if not path.exists():
        raise DataError(f"data file not found: {path}", where=where)
    if path.is_dir():
        ds = _load_image_folder(src, name, entry, path, where)
    elif path.suffix.lower() == ".npz":
        ds = _load_npz(src, name, entry, path, where)
    elif path.suffix.lower() in TABLE_SUFFIXES:
        ds = _load_table(src, name, entry, path, where)
    else:
        raise DataError(f"unsupported data file type '{path.suffix}': use .npz, .csv, .parquet "
                        f"or a folder of images with one sub-folder per class", where=where)
    if len(ds) == 0:
        raise DataError("the dataset is empty", where=where)
    if ds.kind != "text":
        _check_finite(ds.x, "x", where)
    what = "image folder" if path.is_dir() else {".npz": "npz file", ".csv": "CSV file"}.get(
        path.suffix.lower(), "Parquet file")
    ds.source = f"{what} {path}" + (f" (label column '{ds.meta['label']}')" if "label" in ds.meta else "")
    return ds


def _check_finite(x: np.ndarray, what: str, where: str) -> None:
    if x.dtype.kind != "f":
        return
    n_nan = int(np.isnan(x).sum())
    n_inf = int(np.isinf(x).sum())
    if n_nan or n_inf:
        parts = [f"{n} {kind} values" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
        raise DataError(f"{' and '.join(parts)} in {what}", where=where)


def _check_lengths(n: int, arrays: dict[str, np.ndarray], where: str) -> None:
    for key, arr in arrays.items():
        if len(arr) != n:
            raise DataError(f"x has {n} rows but {key} has {len(arr)}", where=where)


def _sensitive_strings(values: Any) -> np.ndarray:
    """Group labels as strings; a missing value is its own group, 'missing'."""
    import pandas as pd

    arr = np.asarray(values, dtype=object)
    return np.where(pd.isna(arr), "missing", arr).astype(str)


# ---- npz ------------------------------------------------------------------------------
def _load_npz(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:  # object arrays would need pickle: refused
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError("the file holds object arrays, which load only by unpickling; save strings as "
                            "fixed-width unicode (e.g. np.asarray(values, dtype=str))", where=where) from None
        raise DataError(f"cannot read the npz file: {exc}", where=where) from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the npz file: {exc}", where=where) from None
    label_key = entry.label or "y"
    for key in ("x", label_key):
        if key not in arrays:
            raise DataError(f"the npz file has no array '{key}' (arrays: {', '.join(sorted(arrays)) or 'none'})."
                            f"{did_you_mean(key, arrays)}", where=where)
    x, y_raw = arrays["x"], arrays[label_key]
    if y_raw.ndim != 1:
        raise DataError(f"'{label_key}' must be 1-D class labels, got shape {y_raw.shape}", where=where)
    _check_sensitive(entry.sensitive, [k for k in arrays if k not in ("x", label_key, "classes")], where)
    sensitive = {k: _sensitive_strings(arrays[k]) for k in entry.sensitive}
    _check_lengths(len(x), {label_key: y_raw, **sensitive}, where)
    file_classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    labels = _Labels(src, name, where, file_classes)
    if len(y_raw) == 0:
        raise DataError("the dataset is empty", where=where)
    y, classes = labels.by_name(y_raw) if y_raw.dtype.kind in "US" else labels.by_index(y_raw)
    x, kind = _array_kind(x, where)
    continuous = None
    if kind == "tabular":
        continuous = ~np.all((x == 0) | (x == 1), axis=0)
    return Dataset(name=name, x=x, y=y, kind=kind, classes=classes, sensitive=sensitive, continuous=continuous,
                   feature_names=[f"x{i}" for i in range(x.shape[1])] if kind == "tabular" else None,
                   meta={"path": str(path)})


def _array_kind(x: np.ndarray, where: str) -> tuple[np.ndarray, Any]:
    """Normalise x: images to float32 (N, C, H, W) in [0, 1], tables to float32, token ids to int64."""
    if x.dtype.kind not in "uifb":
        raise DataError(f"x must be numeric, got dtype {x.dtype}", where=where)
    if x.ndim == 2 and x.dtype.kind in "iu":
        return x.astype(np.int64), "text"  # token ids
    if x.ndim == 2:
        return x.astype(np.float32), "tabular"
    if x.ndim in (3, 4):
        if x.ndim == 3:
            x = x[:, None]  # (N, H, W) grayscale
        elif x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x, dtype=np.float32) / 255.0, "image"
        return np.ascontiguousarray(x, dtype=np.float32), "image"
    raise DataError(f"x has shape {x.shape}: expected (N, F) features, (N, L) token ids or (N, C, H, W) images",
                    where=where)


# ---- csv / parquet --------------------------------------------------------------------
def _load_table(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        raise DataError(f"cannot read the file: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        where=where) from None
    columns = [str(c) for c in df.columns]
    df.columns = columns
    label = entry.label or "label"
    if label not in columns:
        raise DataError(f"label column '{label}' not found (columns: {', '.join(columns[:30])}).{did_you_mean(label, columns)}",
                        where=where)
    _check_sensitive(entry.sensitive, [c for c in columns if c != label], where)
    if entry.features is not None:
        for col in entry.features:
            if col not in columns or col == label:
                raise DataError(f"feature column '{col}' not found.{did_you_mean(col, [c for c in columns if c != label])}",
                                where=where)
        features = list(entry.features)
    else:
        features = [c for c in columns if c != label and c not in entry.sensitive]
    if not features:
        raise DataError("no feature columns left after the label and sensitive columns", where=where)
    non_numeric = [c for c in features if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    if non_numeric:
        raise DataError(f"non-numeric feature column(s) {', '.join(repr(c) for c in non_numeric[:10])}: encode them as "
                        f"numbers (e.g. one-hot) or leave them out with `features`", where=where)
    if len(df) == 0:
        raise DataError("the dataset is empty", where=where)
    x = df[features].to_numpy(dtype=np.float32, na_value=np.nan)
    bad = []
    for j, col in enumerate(features):
        n_nan = int(np.isnan(x[:, j]).sum())
        n_inf = int(np.isinf(x[:, j]).sum())
        if n_nan:
            bad.append(f"{n_nan} NaN values in column '{col}'")
        if n_inf:
            bad.append(f"{n_inf} infinite values in column '{col}'")
    if bad:
        more = f" (and {len(bad) - 3} more columns)" if len(bad) > 3 else ""
        raise DataError(", ".join(bad[:3]) + more, where=where)
    n_missing = int(df[label].isna().sum())
    if n_missing:
        raise DataError(f"{n_missing} rows have no label in column '{label}'", where=where)
    y, classes = _Labels(src, name, where).by_name(df[label].to_numpy())
    sensitive = {c: _sensitive_strings(df[c].to_numpy()) for c in entry.sensitive}
    # a 0/1 column is an indicator (one-hot, flag): perturbations and noise leave it alone
    continuous = ~np.all((x == 0) | (x == 1), axis=0)
    return Dataset(name=name, x=x, y=y, kind="tabular", classes=classes, sensitive=sensitive,
                   feature_names=features, feature_groups={c: [j] for j, c in enumerate(features)},
                   continuous=continuous, meta={"path": str(path), "label": label})


# ---- image folders --------------------------------------------------------------------
def _load_image_folder(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    if (path / "config.json").exists():
        raise DataError("this folder holds a model (config.json), not images", where=where)
    if entry.sensitive:
        raise DataError("an image folder carries no sensitive attributes: use an .npz file with one array "
                        "per attribute", where=where)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError("the folder has no class sub-folders (expected one folder of images per class)", where=where)
    files: list[Path] = []
    raw_labels: list[str] = []
    for d in class_dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                files.append(f)
                raw_labels.append(d.name)
    if not files:
        raise DataError(f"no PNG or JPEG images in the class folders ({', '.join(d.name for d in class_dirs[:10])})",
                        where=where)
    images: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    mode = "RGB"
    for f in files:
        try:
            with Image.open(f) as im:
                if size is None:
                    size = im.size  # every image is resized to the first one's size
                    mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                im = im.convert(mode)
                if im.size != size:
                    im = im.resize(size, Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read image {f}: {exc}", where=where) from None
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    # every sub-folder is a class, even an empty one, so indices match the train folder
    labels = _Labels(src, name, where)
    if labels.reference() is None:
        classes = [d.name for d in class_dirs]
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in raw_labels], dtype=np.int64)
    else:
        y, classes = labels.by_name(np.array(raw_labels))
    return Dataset(name=name, x=x.astype(np.float32) / 255.0, y=y, kind="image", classes=classes,
                   meta={"path": str(path), "files": len(files)})
