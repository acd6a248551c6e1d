"""Loading the datasets a spec names. Every user mistake becomes a DataError that names
the file and the problem.

Datasets: a fixture (`fixture` + `split`), a file or folder (`path`: .npz, .csv,
.parquet, or an image folder with one sub-folder per class), or a transform of another
dataset (`from` + `transform` + `severity`).

The data contract (also in the README):

* Class order. Labels are mapped to class indices by name, in the first order found
  among: `model.classes` (the model's output order, for every format); the model's own
  (a Hugging Face config's `id2label`, the recipe `audit train` saved); the `train`
  dataset's (or `model.train.data`'s) classes, so that a test set lacking a class keeps
  the same indices; an npz file's `classes` array; the sorted labels (or class folder
  names, or npz class indices) of the file itself. Where the order came from is
  recorded in `meta["class_order"]` (see `audit.labels.ClassOrder`); an order taken
  from the data is printed (`Dataset.notices`) and checked against the model's
  predictions before any check runs (`audit.labels.check_label_order`).
* npz: `x` (or the 1-D arrays named by `features`, stacked as columns in that order),
  `y` (or the array named by `label`), optionally `classes` (names for integer `y`).
  Every other array is a sensitive attribute, one value per row; `sensitive:` keeps a
  subset. Integer `x` is token ids only with `kind: text`; otherwise it is tabular.
* CSV/Parquet: a `label` column (default 'label'); `sensitive:` names the sensitive
  columns; the inputs are `features:` in that order, else every other column in file
  order.
* Image folders: one sub-folder per class (an empty one is kept as a class with no
  samples, and said); images of different sizes are an error unless `image_size:
  [H, W]` is given, and then every image is resized to it and the dataset records it.

The loader sees the spec and a `get_dataset` callable for the datasets this one depends
on (a `from` source, the `train` classes), never the audit Context. `summarize_dataset`
is the loader's twin for `audit validate`: the same rules and messages, reading headers,
labels and sensitive columns instead of every input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.dataset import Dataset, Kind
from audit.errors import DataError, did_you_mean, env_limit
from audit.labels import ClassOrder
from audit.seeding import seeded_rng
from audit.spec import AuditSpec, DataEntry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".parquet")
RESERVED_NPZ_KEYS = ("x", "y", "classes")  # and the array `label` names; every other array is sensitive
_VALIDATE_CHUNK_ROWS = 100_000  # `audit validate` streams table features in chunks of this many rows


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


@dataclass
class DataSummary:
    """What `audit validate` learns about a dataset without loading its inputs. Like a
    Dataset it has `classes` and `meta["class_order"]`, so it can be another dataset's
    class reference."""

    name: str
    kind: str
    n: int
    classes: list[str]
    sensitive: list[str]
    features: list[str] | None
    description: str
    meta: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    """What a dataset loader may consult: the spec, and the other datasets it names
    (Datasets when loading, DataSummaries when validating)."""

    spec: AuditSpec
    dataset: Callable[[str], Any]

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
    entry = _entry(spec, name)
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


def summarize_dataset(spec: AuditSpec, name: str, *, get_summary: Callable[[str], DataSummary]) -> DataSummary:
    """`load_dataset`'s checks without loading inputs: file headers, labels, sensitive
    columns, image sizes. Raises the same DataErrors."""
    src = _Source(spec, get_summary)
    entry = _entry(spec, name)
    if entry.from_:
        summary = dataclasses.replace(src.dataset(entry.from_), name=name, description=f"dataset '{entry.from_}'")
    elif entry.fixture:
        ds = _load_fixture(src, name, entry)  # embedded and small: load it
        summary = DataSummary(name=name, kind=ds.kind, n=len(ds), classes=ds.classes, sensitive=list(ds.sensitive),
                              features=ds.feature_names, description=ds.source or f"fixture {entry.fixture}",
                              meta=ds.meta, notices=ds.notices)
    else:
        path, where = _check_path(src, name, entry)
        if path.is_dir():
            summary = _summarize_image_folder(src, name, entry, path, where)
        elif path.suffix.lower() == ".npz":
            summary = _summarize_npz(src, name, entry, path, where)
        else:
            summary = _summarize_table(src, name, entry, path, where)
    if entry.transform:
        from audit.transforms import TRANSFORMS, transforms_for

        kinds = TRANSFORMS[entry.transform].kinds  # the name was checked when the spec loaded
        if summary.kind not in kinds:
            raise DataError(f"transform '{entry.transform}' applies to {'/'.join(kinds)} data, but the data are "
                            f"{summary.kind} (transforms for {summary.kind} data: "
                            f"{', '.join(transforms_for(summary.kind)) or 'none'})", where=f"dataset '{name}'")
        summary = dataclasses.replace(summary, description=f"{summary.description}, under {entry.transform} at "
                                                           f"severity {entry.severity}")
    return summary


def _entry(spec: AuditSpec, name: str) -> DataEntry:
    entry = spec.data.get(name) or spec.domains.get(name)
    if entry is None:
        raise DataError(f"the spec defines no dataset '{name}'.{did_you_mean(name, spec.dataset_names())}")
    return entry


def _transform(ds: Dataset, entry: DataEntry, rng: np.random.Generator) -> Dataset:
    from audit.transforms import apply_transform

    return apply_transform(ds, entry.transform or "", entry.severity, rng)


def _record_order(name: str, order: ClassOrder, meta: dict[str, Any], notices: list[str]) -> None:
    """Record the class order, and say it when it was taken from this dataset's own data
    (an order inherited from 'train' was said there)."""
    meta["class_order"] = order.to_json()
    # integer labels 0..K-1 name output indices themselves: only names need an order said
    by_index = order.source.startswith("class indices") and order.classes == [str(i) for i in range(len(order.classes))]
    if not order.declared and not order.source.startswith("dataset '") and not by_index:
        notices.append(f"dataset '{name}': class order taken from the {order.source}: {order.listing()}; "
                       f"if the model's outputs are in another order, declare it with `model.classes`")


def _load_fixture(src: _Source, name: str, entry: DataEntry) -> Dataset:
    from fixtures.datasets import FIXTURE_SPLITS, load_fixture_dataset

    fixture = entry.fixture or ""
    where = f"dataset '{name}' (fixture {fixture})"
    if fixture not in FIXTURE_SPLITS:
        raise DataError(f"unknown dataset fixture '{fixture}'.{did_you_mean(fixture, FIXTURE_SPLITS)}", where=where)
    split = entry.split or (name if name in FIXTURE_SPLITS[fixture] else None)
    if split is None:
        raise DataError(f"give a `split` ({', '.join(FIXTURE_SPLITS[fixture])})", where=where)
    for key in ("label", "features", "kind", "image_size"):
        if getattr(entry, key) is not None:
            raise DataError(f"`{key}` applies to data files; a fixture's layout is fixed", where=where)
    try:
        ds = load_fixture_dataset(fixture, split)
    except DataError as exc:
        raise DataError(str(exc), where=where) from None
    # no `sensitive` keeps all of the fixture's attributes; a list keeps those named
    if entry.sensitive:
        _check_sensitive(entry.sensitive, list(ds.sensitive), where)
        ds.sensitive = {k: ds.sensitive[k] for k in entry.sensitive}
    order = ClassOrder(list(ds.classes), f"fixture {fixture}", declared=True)
    declared = src.spec.model.classes
    if declared and list(declared) != ds.classes:
        if sorted(declared) != sorted(ds.classes):
            raise DataError(f"model.classes ({', '.join(declared[:20])}) are not the fixture's classes "
                            f"({', '.join(ds.classes[:20])})", where=where)
        # the same classes in the model's output order: re-index the labels by name
        index = {c: i for i, c in enumerate(declared)}
        ds.y = np.array([index[c] for c in ds.classes], dtype=np.int64)[ds.y]
        ds.classes = list(declared)
        order = ClassOrder(list(declared), "model.classes", declared=True)
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _check_sensitive(asked: list[str], available: list[str], where: str) -> None:
    for attr in asked:
        if attr not in available:
            have = ", ".join(f"'{a}'" for a in available[:12]) if available else "none"
            have += f", … ({len(available)} in all)" if len(available) > 12 else ""
            raise DataError(f"unknown sensitive attribute '{attr}' (available: {have}).{did_you_mean(attr, available)}",
                            where=where)


# ---- class order ----------------------------------------------------------------------
def model_class_order(spec: AuditSpec) -> ClassOrder | None:
    """The class order the spec or the model itself states, if any: `model.classes`, a
    Hugging Face config's `id2label`, or the recipe saved by `audit train`."""
    ms = spec.model
    if ms.classes:
        return ClassOrder(list(ms.classes), "model.classes", declared=True)
    if not ms.path:
        return None
    path = spec.resolve(ms.path)
    from audit.hf import config_classes, is_hf_model_dir

    if is_hf_model_dir(path):
        names = config_classes(path)
        return ClassOrder(names, "id2label", declared=True) if names else None
    if path.suffix.lower() == ".safetensors" and not ms.factory:
        try:  # the recipe `audit train` writes beside its weights (audit.training.save_model)
            recipe = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        classes = recipe.get("classes") if isinstance(recipe, dict) else None
        if isinstance(classes, list) and classes:
            return ClassOrder([str(c) for c in classes], "recipe saved with the model", declared=True)
    return None


class _Labels:
    """Maps raw labels to class indices consistently across a spec's datasets."""

    def __init__(self, src: _Source, name: str, where: str, origin: str,
                 file_classes: list[str] | None = None) -> None:
        self.src, self.name, self.where, self.origin, self.file_classes = src, name, where, origin, file_classes
        train = src.spec.model.train
        # a model the audit trains on this dataset learns this dataset's order: nothing to guess
        self.trains_model = train is not None and train.data == name

    def reference(self) -> ClassOrder | None:
        spec = self.src.spec
        declared = model_class_order(spec)
        if declared is not None:
            return declared
        ref_name = spec.model.train.data if spec.model.train else "train"
        ref_entry = spec.data.get(ref_name)
        # a derived reference set could lead back to this dataset: only plain ones are references
        if self.name != ref_name and ref_entry is not None and not ref_entry.from_:
            ref = self.src.dataset(ref_name)
            origin = (ref.meta.get("class_order") or {})
            return ClassOrder(list(ref.classes), f"dataset '{ref_name}' ({origin.get('source', 'its labels')})",
                              declared=bool(origin.get("declared", True)))
        if self.file_classes:
            return ClassOrder(self.file_classes, f"`classes` array of {self.origin}", declared=self.trains_model)
        return None

    def by_name(self, raw: np.ndarray, *, also: Sequence[str] = (), what: str = "labels") -> tuple[np.ndarray, ClassOrder]:
        """Labels are class names (CSV columns, string arrays, folder names); `also`: class
        names without samples (empty class folders)."""
        values = np.asarray(raw)
        if values.dtype.kind == "f" and np.all(values == np.round(values)):
            values = values.astype(np.int64)  # 1.0 and 1 name the same class
        uniq, inverse = np.unique(values, return_inverse=True)  # numeric labels sort numerically
        names = [str(u) for u in uniq]
        inverse = inverse.reshape(-1).astype(np.int64)
        ref = self.reference()
        if ref is None:
            extra = [a for a in also if a not in names]
            if not extra:
                return inverse, ClassOrder(names, f"sorted {what} of {self.origin}", self.trains_model)
            every = sorted(set(names) | set(extra))
            index = {c: i for i, c in enumerate(every)}
            return (np.array([index[c] for c in names], dtype=np.int64)[inverse],
                    ClassOrder(every, f"sorted {what} of {self.origin}", self.trains_model))
        index = {c: i for i, c in enumerate(ref.classes)}
        unknown = [n for n in dict.fromkeys([*names, *also]) if n not in index]
        if unknown:
            raise DataError(f"label(s) {', '.join(repr(u) for u in unknown[:5])} are not among the classes "
                            f"in {ref.source} ({', '.join(ref.classes[:20])})", where=self.where)
        return np.array([index[n] for n in names], dtype=np.int64)[inverse], ref

    def by_index(self, raw: np.ndarray) -> tuple[np.ndarray, ClassOrder]:
        """Labels are class indices 0..K-1 (npz `y`); with a `classes` array, they name
        classes and are mapped by name like any other."""
        y = np.asarray(raw)
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise DataError("y holds non-integer values: give class indices 0..K-1 or class names", where=self.where)
        y = y.astype(np.int64)
        if y.min() < 0:
            raise DataError(f"y holds negative class indices (min {int(y.min())})", where=self.where)
        if self.file_classes:
            if y.max() >= len(self.file_classes):
                raise DataError(f"label {int(y.max())} is outside the file's `classes` array "
                                f"({len(self.file_classes)} names)", where=self.where)
            return self.by_name(np.asarray(self.file_classes)[y])
        ref = self.reference()
        if ref is None:
            return y, ClassOrder([str(i) for i in range(int(y.max()) + 1)], f"class indices of {self.origin}",
                                 self.trains_model)
        if y.max() >= len(ref.classes):
            raise DataError(f"label {int(y.max())} is outside the {len(ref.classes)} classes in {ref.source} "
                            f"({', '.join(ref.classes[:20])})", where=self.where)
        return y, ref


# ---- files ----------------------------------------------------------------------------
def _check_path(src: _Source, name: str, entry: DataEntry) -> tuple[Path, str]:
    """The entry's file or folder, checked against the options that apply to it."""
    path = src.spec.resolve(entry.path or "")
    where = f"dataset '{name}' ({entry.path})"
    if entry.split:
        raise DataError("`split` applies to fixtures only; point `path` at the split's file", where=where)
    if not path.exists():
        raise DataError(f"data file not found: {path}", where=where)
    suffix = path.suffix.lower()
    if not path.is_dir() and suffix != ".npz" and suffix not in TABLE_SUFFIXES:
        raise DataError(f"unsupported data file type '{path.suffix}': use .npz, .csv, .parquet "
                        f"or a folder of images with one sub-folder per class", where=where)
    if entry.image_size is not None and not path.is_dir():
        raise DataError("`image_size` applies to image folders", where=where)
    if path.is_dir() and entry.kind not in (None, "image"):
        raise DataError(f"an image folder holds images, not `kind: {entry.kind}`", where=where)
    if path.is_dir() and entry.features is not None:
        raise DataError("`features` applies to .npz, .csv and .parquet files, not image folders", where=where)
    if suffix in TABLE_SUFFIXES and entry.kind not in (None, "tabular"):
        raise DataError(f"a {suffix} file is read as tabular features, not `kind: {entry.kind}` "
                        f"(token ids go in an .npz file with `kind: text`)", where=where)
    return path, where


def _load_path(src: _Source, name: str, entry: DataEntry) -> Dataset:
    path, where = _check_path(src, name, entry)
    if path.is_dir():
        ds = _load_image_folder(src, name, entry, path, where)
    elif path.suffix.lower() == ".npz":
        ds = _load_npz(src, name, entry, path, where)
    else:
        ds = _load_table(src, name, entry, path, where)
    if len(ds) == 0:
        raise DataError("the dataset is empty", where=where)
    if ds.kind != "text":
        _check_finite(ds.x, "x", where)
    ds.source = _describe_file(path) + (f" (label column '{ds.meta['label']}')" if "label" in ds.meta else "")
    return ds


def _describe_file(path: Path) -> str:
    what = "image folder" if path.is_dir() else {".npz": "npz file", ".csv": "CSV file"}.get(
        path.suffix.lower(), "Parquet file")
    return f"{what} {path}"


def _check_finite(x: np.ndarray, what: str, where: str) -> None:
    if x.dtype.kind != "f":
        return
    n_nan = int(np.isnan(x).sum())
    n_inf = int(np.isinf(x).sum())
    if n_nan or n_inf:
        parts = [f"{n} {kind} values" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
        raise DataError(f"{' and '.join(parts)} in {what}", where=where)


def _sensitive_strings(values: Any) -> np.ndarray:
    """Group labels as strings; a missing value is its own group, 'missing'."""
    import pandas as pd

    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        # a fixed-width string array holds no missing value: as it is (the object round trip
        # costs ~0.4 s per attribute at 10^6 rows)
        return values
    arr = np.asarray(values, dtype=object)
    return np.where(pd.isna(arr), "missing", arr).astype(str)


def _summary_line(kind: str, n: int, order: ClassOrder, sensitive: Sequence[str], inputs: str) -> str:
    return (f"{kind}, {n} samples, {inputs}; classes ({order.source}): {order.listing()}; "
            f"sensitive: {', '.join(sensitive) or 'none'}")


# ---- npz ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _NpzLayout:
    """Which arrays of an npz file are what, decided from the array headers alone."""

    label: str
    features: list[str] | None  # 1-D arrays stacked as the input columns; None: `x`
    sensitive: list[str]
    kind: Kind
    n: int
    x_shape: tuple[int, ...]  # of one sample
    x_dtype: np.dtype


def _npz_headers(path: Path, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an npz file, read from the .npy headers only."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    fmt = np.lib.format
    if not zipfile.is_zipfile(path):
        raise DataError("cannot read the npz file: it is not an npz (zip) archive", where=where)
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = fmt.read_magic(f)
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = (tuple(int(s) for s in shape), np.dtype(dtype))
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"cannot read the npz file: {exc}", where=where) from None
    for key, (_, dtype) in out.items():
        if dtype.hasobject:  # object arrays would need pickle: refused
            raise DataError(f"array '{key}' holds Python objects (object arrays load only by unpickling); save strings as "
                            f"fixed-width unicode (e.g. np.asarray(values, dtype=str))", where=where)
    return out


def _kind_of(shape: tuple[int, ...], dtype: np.dtype, declared: str | None, where: str) -> Kind:
    """Images (N, H, W) / (N, C, H, W); tables (N, F) of any numbers; token ids (N, L)
    only when the entry says `kind: text` (an int8 table is a table)."""
    if dtype.kind not in "uifb":
        raise DataError(f"x must be numeric, got dtype {dtype}", where=where)
    ndim = len(shape)
    if declared == "text":
        if ndim == 2 and dtype.kind in "iu":
            return "text"
        raise DataError(f"`kind: text` needs x of integer token ids with shape (N, L), got {dtype} {shape}",
                        where=where)
    if ndim == 2 and declared in (None, "tabular"):
        return "tabular"
    if ndim in (3, 4) and declared in (None, "image"):
        return "image"
    if declared is not None:
        raise DataError(f"`kind: {declared}` does not fit x of shape {shape}", where=where)
    raise DataError(f"x has shape {shape}: expected (N, F) features, (N, H, W) or (N, C, H, W) images, or "
                    f"(N, L) token ids with `kind: text`", where=where)


def _npz_layout(entry: DataEntry, headers: dict[str, tuple[tuple[int, ...], np.dtype]], where: str) -> _NpzLayout:
    label = entry.label or "y"
    reserved = {*RESERVED_NPZ_KEYS, label}
    arrays = ", ".join(sorted(headers)) or "none"
    if label not in headers:
        raise DataError(f"the npz file has no array '{label}' (arrays: {arrays}).{did_you_mean(label, headers)}",
                        where=where)
    features = list(entry.features) if entry.features is not None else None
    if features is not None:
        if "x" in headers:
            raise DataError("give the inputs either as an array `x` or as `features` arrays, not both "
                            "(this file has `x`)", where=where)
        for key in features:
            if key in reserved:
                raise DataError(f"'{key}' is a reserved array name ({', '.join(sorted(reserved))}), "
                                f"not a feature", where=where)
            if key not in headers:
                raise DataError(f"feature array '{key}' not found (arrays: {arrays}).{did_you_mean(key, headers)}",
                                where=where)
            shape, dtype = headers[key]
            if len(shape) != 1 or dtype.kind not in "uifb":
                raise DataError(f"feature array '{key}' must hold one number per row, got {dtype} {shape}",
                                where=where)
        if entry.kind not in (None, "tabular"):
            raise DataError(f"`features` arrays are tabular columns, not `kind: {entry.kind}`", where=where)
        n = headers[features[0]][0][0]
        for key in features:
            if headers[key][0][0] != n:
                raise DataError(f"feature '{features[0]}' has {n} rows but '{key}' has {headers[key][0][0]}",
                                where=where)
        kind: Kind = "tabular"
        x_shape: tuple[int, ...] = (len(features),)
        x_dtype = np.result_type(*(headers[k][1] for k in features))
    else:
        if "x" not in headers:
            raise DataError(f"the npz file has no array 'x' (arrays: {arrays}); give the inputs as `x`, or name "
                            f"1-D feature arrays with `features`", where=where)
        shape, x_dtype = headers["x"]
        kind = _kind_of(shape, x_dtype, entry.kind, where)
        n, x_shape = shape[0], shape[1:]
    label_shape = headers[label][0]
    if len(label_shape) != 1:
        raise DataError(f"'{label}' must be 1-D class labels, got shape {label_shape}", where=where)
    if label_shape[0] != n:
        raise DataError(f"x has {n} rows but {label} has {label_shape[0]}", where=where)
    others = [k for k in headers if k not in reserved and k not in (features or [])]
    if entry.sensitive:
        _check_sensitive(entry.sensitive, others + (features or []), where)
        sensitive = list(entry.sensitive)
    else:
        sensitive = others  # every other array is a sensitive attribute
    for key in sensitive:
        shape = headers[key][0]
        if len(shape) != 1:
            raise DataError(f"array '{key}' has shape {shape}, but every npz array other than "
                            f"{', '.join(sorted(reserved))} is a sensitive attribute with one value per row: "
                            f"remove it or save it 1-D", where=where)
        if shape[0] != n:
            raise DataError(f"x has {n} rows but {key} has {shape[0]}", where=where)
    return _NpzLayout(label=label, features=features, sensitive=sensitive, kind=kind, n=n, x_shape=x_shape,
                      x_dtype=x_dtype)


def _npz_labels(src: _Source, name: str, layout: _NpzLayout, arrays: Any, where: str, origin: str
                ) -> tuple[np.ndarray, ClassOrder]:
    y_raw = arrays[layout.label]
    if len(y_raw) == 0:
        raise DataError("the dataset is empty", where=where)
    file_classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    labels = _Labels(src, name, where, origin, file_classes)
    return labels.by_name(y_raw) if y_raw.dtype.kind in "US" else labels.by_index(y_raw)


def _int_tabular_notice(name: str, layout: _NpzLayout) -> list[str]:
    if layout.kind == "tabular" and layout.x_dtype.kind in "iu":
        return [f"dataset '{name}': x holds integers ({layout.x_dtype}) and is read as tabular features; "
                f"if they are token ids, declare `kind: text` on the data entry"]
    return []


def _open_npz(path: Path, where: str) -> Any:
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and blame "object arrays"
        raise DataError("cannot read the npz file: it is not an npz (zip) archive", where=where)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read the npz file: {exc}", where=where) from None


def _load_npz(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    layout = _npz_layout(entry, _npz_headers(path, where), where)
    with _open_npz(path, where) as f:
        try:
            y, order = _npz_labels(src, name, layout, f, where, entry.path or path.name)
            if layout.features is None:
                x = f["x"]
            else:
                x = np.column_stack([f[k] for k in layout.features]) if layout.n else np.zeros((0, len(layout.features)))
            sensitive = {k: _sensitive_strings(f[k]) for k in layout.sensitive}
        except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DataError(f"cannot read the npz file: {type(exc).__name__}: {exc}", where=where) from None
    x = _normalise_x(x, layout.kind)
    continuous = None
    feature_names = None
    feature_groups = None
    if layout.kind == "tabular":
        continuous = ~np.all((x == 0) | (x == 1), axis=0)  # a 0/1 column is an indicator
        feature_names = layout.features or [f"x{i}" for i in range(x.shape[1])]
        if layout.features:
            feature_groups = {c: [j] for j, c in enumerate(layout.features)}
    ds = Dataset(name=name, x=x, y=y, kind=layout.kind, classes=order.classes, sensitive=sensitive,
                 continuous=continuous, feature_names=feature_names, feature_groups=feature_groups,
                 meta={"path": str(path)}, notices=_int_tabular_notice(name, layout))
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _summarize_npz(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> DataSummary:
    layout = _npz_layout(entry, _npz_headers(path, where), where)
    with _open_npz(path, where) as f:  # labels, classes and sensitive arrays only; x stays on disk
        y, order = _npz_labels(src, name, layout, f, where, entry.path or path.name)
    meta: dict[str, Any] = {"path": str(path)}
    notices = _int_tabular_notice(name, layout)
    _record_order(name, order, meta, notices)
    inputs = (f"features {', '.join(layout.features)}" if layout.features
              else f"x {layout.x_dtype} of shape {list(layout.x_shape)} per sample")
    return DataSummary(name=name, kind=layout.kind, n=len(y), classes=order.classes, sensitive=layout.sensitive,
                       features=layout.features, meta=meta, notices=notices,
                       description=f"{_describe_file(path)}: " + _summary_line(layout.kind, len(y), order,
                                                                               layout.sensitive, inputs))


def _normalise_x(x: np.ndarray, kind: Kind) -> np.ndarray:
    """Images to float32 (N, C, H, W) in [0, 1] (uint8 scaled), tables to float32, token ids to int64."""
    if kind == "text":
        return x.astype(np.int64)
    if kind == "tabular":
        return x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) grayscale
    elif x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / 255.0
    return np.ascontiguousarray(x, dtype=np.float32)


# ---- csv / parquet --------------------------------------------------------------------
def _table_columns(path: Path, where: str) -> list[str]:
    """Column names from the header (CSV) or the schema (Parquet): no rows read."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed files
        raise DataError(f"cannot read the file: {_first_line(exc)}", where=where) from None


def _read_table(path: Path, where: str, columns: list[str] | None = None) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, usecols=columns)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed files
        raise DataError(f"cannot read the file: {_first_line(exc)}", where=where) from None


def _table_chunks(path: Path, columns: list[str], where: str) -> Iterator[Any]:
    """The file's `columns` in chunks of rows, in bounded memory."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(columns=columns, batch_size=_VALIDATE_CHUNK_ROWS):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(path, usecols=columns, chunksize=_VALIDATE_CHUNK_ROWS)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed files
        raise DataError(f"cannot read the file: {_first_line(exc)}", where=where) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _table_layout(entry: DataEntry, columns: list[str], where: str) -> tuple[str, list[str]]:
    """The label column and the input columns, in order."""
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
    return label, features


def _feature_problems(df: Any, features: list[str], counts: dict[str, list[int]], non_numeric: list[str]) -> None:
    """Accumulate, over one or several chunks, non-numeric columns and NaN/inf counts."""
    import pandas as pd

    for col in features:
        if not (pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])):
            if col not in non_numeric:
                non_numeric.append(col)
            continue
        values = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
        c = counts.setdefault(col, [0, 0])
        c[0] += int(np.isnan(values).sum())
        c[1] += int(np.isinf(values).sum())


def _raise_feature_problems(counts: dict[str, list[int]], non_numeric: list[str], features: list[str],
                            where: str) -> None:
    if non_numeric:
        ordered = [c for c in features if c in non_numeric]
        raise DataError(f"non-numeric feature column(s) {', '.join(repr(c) for c in ordered[:10])}: encode them as "
                        f"numbers (e.g. one-hot) or leave them out with `features`", where=where)
    bad = []
    for col in features:
        n_nan, n_inf = counts.get(col, (0, 0))
        if n_nan:
            bad.append(f"{n_nan} NaN values in column '{col}'")
        if n_inf:
            bad.append(f"{n_inf} infinite values in column '{col}'")
    if bad:
        more = f" (and {len(bad) - 3} more columns)" if len(bad) > 3 else ""
        raise DataError(", ".join(bad[:3]) + more, where=where)


def _table_labels(src: _Source, name: str, df: Any, label: str, where: str, origin: str
                  ) -> tuple[np.ndarray, ClassOrder]:
    n_missing = int(df[label].isna().sum())
    if n_missing:
        raise DataError(f"{n_missing} rows have no label in column '{label}'", where=where)
    return _Labels(src, name, where, origin).by_name(df[label].to_numpy())


def _load_table(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    df = _read_table(path, where)
    df.columns = [str(c) for c in df.columns]
    label, features = _table_layout(entry, list(df.columns), where)
    if len(df) == 0:  # before the column types: a header alone has no types to judge
        raise DataError("the dataset is empty: the file has a header but no rows", where=where)
    counts: dict[str, list[int]] = {}
    non_numeric: list[str] = []
    _feature_problems(df, features, counts, non_numeric)
    _raise_feature_problems(counts, non_numeric, features, where)
    x = df[features].to_numpy(dtype=np.float32, na_value=np.nan)
    y, order = _table_labels(src, name, df, label, where, entry.path or path.name)
    sensitive = {c: _sensitive_strings(df[c].to_numpy()) for c in entry.sensitive}
    # a 0/1 column is an indicator (one-hot, flag): perturbations and noise leave it alone
    continuous = ~np.all((x == 0) | (x == 1), axis=0)
    ds = Dataset(name=name, x=x, y=y, kind="tabular", classes=order.classes, sensitive=sensitive,
                 feature_names=features, feature_groups={c: [j] for j, c in enumerate(features)},
                 continuous=continuous, meta={"path": str(path), "label": label})
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _summarize_table(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> DataSummary:
    label, features = _table_layout(entry, _table_columns(path, where), where)
    # the feature columns stream through in chunks (types, NaN, inf); the labels are read whole
    counts: dict[str, list[int]] = {}
    non_numeric: list[str] = []
    for chunk in _table_chunks(path, features, where):
        _feature_problems(chunk, features, counts, non_numeric)
    _raise_feature_problems(counts, non_numeric, features, where)
    df = _read_table(path, where, columns=[label])
    if len(df) == 0:
        raise DataError("the dataset is empty", where=where)
    y, order = _table_labels(src, name, df, label, where, entry.path or path.name)
    meta: dict[str, Any] = {"path": str(path), "label": label}
    notices: list[str] = []
    _record_order(name, order, meta, notices)
    inputs = f"{len(features)} feature columns ({', '.join(features[:8])}{', …' if len(features) > 8 else ''})"
    return DataSummary(name=name, kind="tabular", n=len(y), classes=order.classes, sensitive=list(entry.sensitive),
                       features=features, meta=meta, notices=notices,
                       description=f"{_describe_file(path)} (label column '{label}'): "
                                   + _summary_line("tabular", len(y), order, entry.sensitive, inputs))


# ---- image folders --------------------------------------------------------------------
@dataclass(frozen=True)
class _ImageFolder:
    """An image folder as read from file headers: classes, files, sizes (H, W)."""

    class_names: list[str]  # every class sub-folder, empty ones too
    files: list[Path]
    labels: list[str]
    size: tuple[int, int]  # (H, W) of every image once loaded
    mode: str  # "L" when every image is grayscale, else "RGB"
    resized: int  # images whose size differs from `size`


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _scan_image_folder(name: str, entry: DataEntry, path: Path, where: str) -> tuple[_ImageFolder, list[str]]:
    """Classes, files and image sizes, from the image headers (no pixels decoded), and
    the notices to give."""
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
    labels: list[str] = []
    for d in class_dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                files.append(f)
                labels.append(d.name)
    if not files:
        raise DataError(f"no PNG or JPEG images in the class folders ({', '.join(d.name for d in class_dirs[:10])})",
                        where=where)
    sizes: list[tuple[int, int]] = []
    gray = True
    max_pixels = Image.MAX_IMAGE_PIXELS or float("inf")
    for f in files:
        try:
            with Image.open(f) as im:  # reads the header only
                sizes.append((im.size[1], im.size[0]))
                gray = gray and im.mode in _GRAY_MODES
        except Image.DecompressionBombError:
            raise DataError(f"image {f} declares more pixels than the limit of {max_pixels:,.0f} (a decompression "
                            "bomb, or a scan far larger than a model takes): refused before decoding",
                            where=where) from None
        except (UnidentifiedImageError, OSError, zlib.error) as exc:
            raise DataError(f"cannot read image {f}: {exc}", where=where) from None
        if sizes[-1][0] * sizes[-1][1] > max_pixels:  # PIL only warns up to twice its limit
            raise DataError(f"image {f} is {sizes[-1][0]}x{sizes[-1][1]}: more pixels than the limit of "
                            f"{max_pixels:,.0f}; refused before decoding", where=where)
    notices = [f"dataset '{name}': class folder '{d.name}' holds no images; class '{d.name}' is kept, with no samples"
               for d in class_dirs if d.name not in set(labels)]
    if entry.image_size is not None:
        size = (int(entry.image_size[0]), int(entry.image_size[1]))
        resized = sum(s != size for s in sizes)
        if resized:
            notices.append(f"dataset '{name}': resized {resized} of {len(files)} images to {size[0]}x{size[1]} "
                           f"(image_size)")
    else:
        size, resized = sizes[0], 0
        other = next((i for i, s in enumerate(sizes) if s != size), None)
        if other is not None:
            rel = [files[i].relative_to(path).as_posix() for i in (0, other)]
            raise DataError(f"images differ in size: {rel[0]} is {size[0]}x{size[1]} but {rel[1]} is "
                            f"{sizes[other][0]}x{sizes[other][1]} (HxW); set `image_size: [H, W]` on the data entry "
                            f"to resize them all to one size (the report records it)", where=where)
    channels = 1 if gray else 3
    need = len(files) * size[0] * size[1] * channels * 5  # uint8 while decoding, then float32
    budget = env_limit("AUDIT_MAX_IMAGE_BYTES", 8e9)
    if need > budget:
        raise DataError(f"{len(files):,} images of {size[0]}x{size[1]}x{channels} need about {need / 1e9:.1f} GB in "
                        f"memory, over the limit of {budget / 1e9:.1f} GB (AUDIT_MAX_IMAGE_BYTES): refused before "
                        "decoding; set `image_size:` smaller or raise the limit", where=where)
    folder = _ImageFolder(class_names=[d.name for d in class_dirs], files=files, labels=labels, size=size,
                          mode="L" if gray else "RGB", resized=resized)
    return folder, notices


def _image_meta(path: Path, folder: _ImageFolder) -> dict[str, Any]:
    meta: dict[str, Any] = {"path": str(path), "files": len(folder.files), "image_size": list(folder.size)}
    if folder.resized:
        meta["resized"] = {"n": folder.resized, "of": len(folder.files), "to": list(folder.size)}
    return meta


def _load_image_folder(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    folder, notices = _scan_image_folder(name, entry, path, where)
    h, w = folder.size
    x = np.empty((len(folder.files), h, w) + (() if folder.mode == "L" else (3,)), dtype=np.uint8)
    for i, f in enumerate(folder.files):
        try:
            with Image.open(f) as im:
                im = im.convert(folder.mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                x[i] = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, zlib.error) as exc:
            raise DataError(f"cannot read image {f}: {exc}", where=where) from None
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    # every sub-folder is a class, even an empty one, so indices match the train folder
    y, order = _Labels(src, name, where, entry.path or path.name).by_name(
        np.array(folder.labels), also=folder.class_names, what="class folders")
    ds = Dataset(name=name, x=x.astype(np.float32) / 255.0, y=y, kind="image", classes=order.classes,
                 meta=_image_meta(path, folder), notices=notices)
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _summarize_image_folder(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> DataSummary:
    folder, notices = _scan_image_folder(name, entry, path, where)
    _, order = _Labels(src, name, where, entry.path or path.name).by_name(
        np.array(folder.labels), also=folder.class_names, what="class folders")
    meta = _image_meta(path, folder)
    _record_order(name, order, meta, notices)
    channels = 1 if folder.mode == "L" else 3
    inputs = f"{channels}x{folder.size[0]}x{folder.size[1]} images"
    return DataSummary(name=name, kind="image", n=len(folder.files), classes=order.classes, sensitive=[],
                       features=None, meta=meta, notices=notices,
                       description=f"{_describe_file(path)}: " + _summary_line("image", len(folder.files), order, [],
                                                                               inputs))
