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

* Shards: `path` may name a folder of .parquet, .csv or .npz files (no sub-folders) or a
  glob (`data/test-*.parquet`); the files, in sorted order, are read as one dataset.
* Streaming (`execution.engine`, see audit.lazy): an image or tabular dataset read from
  files is streamed when the engine is `streaming` or `ray`, or (engine `auto`) when its
  inputs would take more than `execution.stream_above_mb` in memory: `x` is then a
  LazyInputs, the labels and sensitive attributes are read in chunks into compact codes,
  and nothing reads the inputs whole. The dataset a spec trains on is always in memory.

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

from audit.dataset import Dataset, Kind, code_dtype
from audit.errors import DataError, did_you_mean, env_limit
from audit.labels import ClassOrder
from audit.seeding import seeded_rng
from audit.spec import AuditSpec, DataEntry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".parquet")
TEXT_SUFFIXES = (".jsonl", ".conll", ".bio", ".iob")  # and CSV/Parquet with a `text:` column
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
        if ds.lazy:
            ds = _materialized_for_transform(src, name, entry, ds)
        try:
            ds = _transform(ds, entry, src.rng(f"domain:{name}"))
        except DataError as exc:
            raise DataError(str(exc), where=f"dataset '{name}'") from None
    # a copy when renaming, so a `from` source held by the context keeps its own name
    ds = ds if ds.name == name else dataclasses.replace(ds, name=name)
    if ds.kind in ("text", "tokens"):  # tokenization belongs to the model
        from audit.tokenize import tokenize_for_model

        ds = tokenize_for_model(spec, ds, get_dataset)
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
        shards = _shards(src, entry, where)
        if shards is not None:
            summary = _summarize_shards(src, name, entry, shards, where)
        elif _is_text_file(path, entry):
            ds = _load_text_file(src, name, entry, path, where)  # labels and tags are read whole anyway
            summary = DataSummary(name=name, kind=ds.kind, n=len(ds), classes=ds.classes,
                                  sensitive=list(ds.sensitive), features=None, meta=ds.meta, notices=ds.notices,
                                  description=_describe_file(path) + ": " + _summary_line(
                                      ds.kind, len(ds), ClassOrder(ds.classes, ds.meta["class_order"]["source"],
                                                                   ds.meta["class_order"]["declared"]),
                                      list(ds.sensitive), ds.meta.get("inputs", "")))
        elif path.is_dir():
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


def _materialized_for_transform(src: _Source, name: str, entry: DataEntry, ds: Dataset) -> Dataset:
    """A transform runs on inputs in memory: a streamed source is read whole when it fits
    `execution.stream_above_mb` (the rows are the same, so the domain is too)."""
    limit = src.spec.execution.stream_above_mb * 2**20
    if ds.x.nbytes > limit:
        raise DataError(f"dataset '{entry.from_}' is streamed ({len(ds):,} rows, {ds.x.nbytes / 2**30:.1f} GiB of "
                        f"inputs): transform '{entry.transform}' needs its inputs in memory, over "
                        f"execution.stream_above_mb ({src.spec.execution.stream_above_mb:g} MB); give the domain "
                        f"a file of its own, or a smaller source", where=f"dataset '{name}'")
    x = ds.x.read(0, len(ds))
    sensitive = {k: _as_strings(v) for k, v in ds.sensitive.items()}
    meta = {**ds.meta}
    meta.pop("streamed", None)
    return dataclasses.replace(ds, x=x, sensitive=sensitive, meta=meta, _sha256=None)


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
    if ms.fixture:
        from fixtures.hf_models import HF_FIXTURES

        if ms.fixture in HF_FIXTURES:  # a built-in Hugging Face model: its id2label is its data's classes
            from fixtures.datasets import load_fixture_dataset

            classes = load_fixture_dataset(HF_FIXTURES[ms.fixture].dataset, "train").classes
            return ClassOrder(list(classes), "id2label", declared=True)
        from fixtures.models import MODEL_FIXTURES

        r = MODEL_FIXTURES.get(ms.fixture)
        if r is not None and r.architecture == "text_transformer":  # its classes are its recipe's data's
            from fixtures.datasets import load_fixture_dataset

            return ClassOrder(list(load_fixture_dataset(r.dataset, r.split).classes), f"fixture {ms.fixture}",
                              declared=True)
        return None
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
SHARD_SUFFIXES = (".parquet", ".csv", ".npz")


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _shards(src: _Source, entry: DataEntry, where: str) -> list[Path] | None:
    """The files of a sharded dataset, sorted: a glob's matches, or the files of a folder
    without sub-folders (a folder with sub-folders is an image folder). None for one file."""
    raw = entry.path or ""
    path = src.spec.resolve(raw)
    if _is_glob(raw):
        import glob as _glob

        files = sorted(Path(p) for p in _glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise DataError(f"no file matches {path}", where=where)
    elif path.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in SHARD_SUFFIXES)
        if not files:
            if (path / "config.json").exists():
                return None  # a model folder: the image-folder reader says what is wrong
            raise DataError("no class sub-folders of images and no .parquet, .csv or .npz "
                            "shards", where=where)
    else:
        return None
    kinds = sorted({f.suffix.lower() for f in files})
    if len(kinds) > 1 or kinds[0] not in SHARD_SUFFIXES:
        raise DataError(f"shards must be files of one type (.parquet, .csv or .npz), found {', '.join(kinds)} "
                        f"({', '.join(f.name for f in files[:4])})", where=where)
    return files


def _check_path(src: _Source, name: str, entry: DataEntry) -> tuple[Path, str]:
    """The entry's file or folder, checked against the options that apply to it (for a
    sharded dataset: its first shard)."""
    path = src.spec.resolve(entry.path or "")
    where = f"dataset '{name}' ({entry.path})"
    if entry.split:
        raise DataError("`split` applies to fixtures only; point `path` at the split's file", where=where)
    if not _is_glob(entry.path or "") and not path.exists():
        raise DataError(f"data file not found: {path}", where=where)
    shards = _shards(src, entry, where)
    if shards is not None:
        if entry.text is not None or entry.kind in ("text", "tokens"):
            raise DataError("text and token data are read from one file, not from shards", where=where)
        if entry.image_size is not None:
            raise DataError("`image_size` applies to image folders", where=where)
        if entry.kind not in (None, "tabular", "image"):
            raise DataError(f"shards hold tables or arrays, not `kind: {entry.kind}`", where=where)
        path = shards[0]
    suffix = path.suffix.lower()
    if not path.is_dir() and suffix != ".npz" and suffix not in TABLE_SUFFIXES and suffix not in TEXT_SUFFIXES:
        raise DataError(f"unsupported data file type '{path.suffix}': use .npz, .csv, .parquet, .jsonl, CoNLL "
                        f"(.conll, .bio, .iob) or a folder of images with one sub-folder per class", where=where)
    text_file = suffix in TEXT_SUFFIXES or entry.text is not None or entry.kind in ("text", "tokens") and \
        suffix in TABLE_SUFFIXES
    if text_file:
        from audit.textdata import CONLL_SUFFIXES

        if entry.features is not None:
            raise DataError("`features` applies to tabular data, not text", where=where)
        if suffix in CONLL_SUFFIXES and entry.text is not None:
            raise DataError(f"a {suffix} file holds tokens and tags, one per line; `text:` names the text column "
                            f"of a CSV, Parquet or JSONL file", where=where)
        if suffix in TABLE_SUFFIXES and entry.text is None:
            raise DataError(f"`kind: {entry.kind}` in a {suffix} file: name the column holding the raw text with "
                            f"`text:` (token-classification data go in CoNLL or JSONL files)", where=where)
        if (entry.tokens or entry.tags) and suffix != ".jsonl":
            raise DataError("`tokens` and `tags` name the keys of a JSONL file", where=where)
        if entry.text is not None and (entry.tokens or entry.tags or entry.kind == "tokens"):
            raise DataError("give `text:` (text classification) or tokens and tags (token classification), "
                            "not both", where=where)
    elif entry.text is not None:
        raise DataError("`text:` names the raw-text column of a CSV, Parquet or JSONL file", where=where)
    if entry.scheme is not None and not (suffix in TEXT_SUFFIXES and entry.text is None):
        raise DataError("`scheme` applies to token-classification files (CoNLL, JSONL with tokens and tags)",
                        where=where)
    if entry.image_size is not None and not path.is_dir():
        raise DataError("`image_size` applies to image folders", where=where)
    if path.is_dir() and entry.kind not in (None, "image"):
        raise DataError(f"an image folder holds images, not `kind: {entry.kind}`", where=where)
    if path.is_dir() and entry.features is not None:
        raise DataError("`features` applies to .npz, .csv and .parquet files, not image folders", where=where)
    if suffix in TABLE_SUFFIXES and not text_file and entry.kind not in (None, "tabular"):
        raise DataError(f"a {suffix} file is read as tabular features, not `kind: {entry.kind}` "
                        f"(raw text: name its column with `text:`; token ids go in an .npz file with `kind: text`)",
                        where=where)
    return path, where


def _is_text_file(path: Path, entry: DataEntry) -> bool:
    return not path.is_dir() and (path.suffix.lower() in TEXT_SUFFIXES or entry.text is not None)


def _load_path(src: _Source, name: str, entry: DataEntry) -> Dataset:
    path, where = _check_path(src, name, entry)
    shards = _shards(src, entry, where)
    if shards is not None:
        files = shards
        ds = _load_npz_files(src, name, entry, files, where) if files[0].suffix.lower() == ".npz" else \
            _load_table_files(src, name, entry, files, where)
    elif _is_text_file(path, entry):
        ds = _load_text_file(src, name, entry, path, where)
    elif path.is_dir():
        ds = _load_image_folder(src, name, entry, path, where)
    elif path.suffix.lower() == ".npz":
        ds = _load_npz_files(src, name, entry, [path], where) if _streams(src, name, _npz_bytes([path], where)) \
            else _load_npz(src, name, entry, path, where)
    elif _streams(src, name, _table_bytes([path], entry, where)):
        ds = _load_table_files(src, name, entry, [path], where)
    else:
        ds = _load_table(src, name, entry, path, where)
    if len(ds) == 0:
        raise DataError("the dataset is empty", where=where)
    if ds.kind not in ("text", "tokens") and not ds.lazy:
        _check_finite(ds.x, "x", where)
    what = _describe_file(path) if shards is None else _describe_shards(src, entry, shards)
    ds.source = what + (f" (label column '{ds.meta['label']}')" if "label" in ds.meta else "")
    if ds.lazy:
        ds.x.source = what
    return ds


def _streams(src: _Source, name: str, nbytes: float) -> bool:
    """Whether dataset `name`, whose inputs take `nbytes` in memory as float32, streams."""
    ex = src.spec.execution
    if ex.engine == "memory":
        return False
    train = src.spec.model.train
    if train is not None and train.data == name:  # training reads its data whole
        return False
    if ex.engine in ("streaming", "ray"):
        return True
    return nbytes > ex.stream_above_mb * 2**20


def _describe_shards(src: _Source, entry: DataEntry, files: list[Path]) -> str:
    what = {".npz": "npz", ".csv": "CSV", ".parquet": "Parquet"}[files[0].suffix.lower()]
    return f"{len(files)} {what} shards {src.spec.resolve(entry.path or '')}"


def _describe_file(path: Path) -> str:
    what = "image folder" if path.is_dir() else {".npz": "npz file", ".csv": "CSV file", ".jsonl": "JSONL file",
                                                 ".conll": "CoNLL file", ".bio": "CoNLL file",
                                                 ".iob": "CoNLL file"}.get(path.suffix.lower(), "Parquet file")
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


def _as_strings(values: Any) -> np.ndarray:
    """Sensitive values as a string array (a Categorical expanded)."""
    import pandas as pd

    if isinstance(values, pd.Categorical):
        return np.asarray(values.categories).astype(str)[values.codes]
    return np.asarray(values)


class _Codes:
    """Raw values to integer codes, chunk by chunk, without a Python object per row: the
    distinct values in first-seen order, a code per row, and the rows without a value."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.values: list[Any] = []
        self.parts: list[np.ndarray] = []
        self.missing = 0

    def add(self, values: Any) -> None:
        import pandas as pd

        codes, uniques = pd.factorize(np.asarray(values), use_na_sentinel=True)
        mapping = np.empty(len(uniques) + 1, np.int32)
        mapping[-1] = -1
        for j, u in enumerate(np.asarray(uniques).tolist()):
            if u not in self.index:
                self.index[u] = len(self.values)
                self.values.append(u)
            mapping[j] = self.index[u]
        self.missing += int((codes < 0).sum())
        self.parts.append(self._compact(mapping)[codes])

    def _compact(self, mapping: np.ndarray) -> np.ndarray:
        # parts in the smallest type that holds the codes so far (and -1): 1 byte per row
        # for a few values, where int32 parts of 10^7 rows leave 40 MB per column behind in
        # the allocator after they are freed
        return mapping.astype(code_dtype(len(self.values)))

    def add_dictionary(self, column: Any) -> None:
        """A pyarrow dictionary-encoded chunk (parquet strings read with `read_dictionary`):
        its few distinct values are mapped here, its indices give the codes; no Python
        string per row (what makes `add` on a pandas object column slow at 10^7 rows)."""
        import pyarrow.compute as pc

        mapping = np.empty(len(column.dictionary) + 1, np.int32)
        mapping[-1] = -1
        for j, u in enumerate(column.dictionary.to_pylist()):
            if u not in self.index:
                self.index[u] = len(self.values)
                self.values.append(u)
            mapping[j] = self.index[u]
        idx = pc.fill_null(column.indices, -1).to_numpy()
        self.missing += int((idx < 0).sum())
        self.parts.append(self._compact(mapping)[idx])

    def codes(self) -> np.ndarray:
        """The code of every row (-1: missing), in one array of the largest part type."""
        if not self.parts:
            return np.zeros(0, np.int32)
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0]

    def categorical(self) -> Any:
        """A pandas Categorical of the values as strings (`_sensitive_strings`'s: a missing
        value is 'missing'), categories sorted."""
        import pandas as pd

        codes = self.codes()
        raw = np.array(self.values + ([None] if self.missing else []), dtype=object)
        strings = _sensitive_strings(raw)  # a missing value (code -1) is the last entry: 'missing'
        cats, remap = np.unique(strings, return_inverse=True)
        return pd.Categorical.from_codes(remap.reshape(-1).astype(code_dtype(len(cats)))[codes],
                                         categories=list(cats))


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


def _npz_bytes(files: list[Path], where: str) -> float:
    total = 0.0
    for f in files:
        headers = _npz_headers(f, where)
        if "x" in headers:
            total += float(np.prod(headers["x"][0], dtype=np.float64)) * 4
        else:
            total += sum(float(np.prod(s, dtype=np.float64)) for k, (s, _) in headers.items() if len(s) == 1) * 4
    return total


def _load_npz_files(src: _Source, name: str, entry: DataEntry, files: list[Path], where: str) -> Dataset:
    """npz shards (or one npz file) as one dataset: inputs memory-mapped (uncompressed
    members) or decompressed as a stream, labels and sensitive arrays read per shard."""
    from audit.lazy import LazyInputs, NpzPart, npy_member

    layout: _NpzLayout | None = None
    classes: list[str] | None = None
    y_parts: list[np.ndarray] = []
    codes: dict[str, _Codes] = {}
    parts = []
    for f in files:
        w = where if len(files) == 1 else f"{where}, shard {f.name}"
        lay = _npz_layout(entry, _npz_headers(f, w), w)
        if layout is None:
            layout = lay
            codes = {k: _Codes() for k in lay.sensitive}
        elif (lay.kind, lay.x_shape, lay.features, lay.sensitive) != (layout.kind, layout.x_shape, layout.features,
                                                                        layout.sensitive):
            raise DataError(f"shard {f.name} differs from {files[0].name}: x {lay.kind} {list(lay.x_shape)} "
                            f"vs {layout.kind} {list(layout.x_shape)}, sensitive {lay.sensitive} vs "
                            f"{layout.sensitive}", where=where)
        if lay.kind == "text":
            raise DataError("token ids (`kind: text`) are read from one npz file, not streamed", where=where)
        with _open_npz(f, w) as arrays:
            try:
                shard_classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
                if classes is None:
                    classes = shard_classes
                elif shard_classes is not None and shard_classes != classes:
                    raise DataError(f"shard {f.name} has another `classes` array than {files[0].name}", where=where)
                y_parts.append(np.asarray(arrays[lay.label]))
                for k in lay.sensitive:
                    codes[k].add(arrays[k])
            except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise DataError(f"cannot read the npz file: {type(exc).__name__}: {exc}", where=w) from None
        members = [npy_member(f, "x")] if lay.features is None else [npy_member(f, k) for k in lay.features]
        parts.append(NpzPart(members, lay.kind))
    assert layout is not None
    y_raw = np.concatenate(y_parts) if y_parts else np.zeros(0)
    arrays = {layout.label: y_raw, **({"classes": np.asarray(classes)} if classes is not None else {})}
    y, order = _npz_labels(src, name, layout, arrays, where, entry.path or files[0].name)
    row_shape = parts[0].read(0, 1).shape[1:] if parts[0].n else tuple(layout.x_shape)
    x: Any = LazyInputs(parts, row_shape, layout.kind)
    sensitive: dict[str, Any] = {k: c.categorical() for k, c in codes.items()}
    streamed = _streams(src, name, x.nbytes)
    if not streamed:
        x = x.read(0, len(x))
        sensitive = {k: _as_strings(v) for k, v in sensitive.items()}
    continuous = feature_names = feature_groups = None
    if layout.kind == "tabular":
        feature_names = layout.features or [f"x{i}" for i in range(row_shape[0])]
        if layout.features:
            feature_groups = {c: [j] for j, c in enumerate(layout.features)}
        if not streamed:
            continuous = ~np.all((x == 0) | (x == 1), axis=0)
    ds = Dataset(name=name, x=x, y=y, kind=layout.kind, classes=order.classes, sensitive=sensitive,
                 continuous=continuous, feature_names=feature_names, feature_groups=feature_groups,
                 meta={"path": str(files[0] if len(files) == 1 else entry.path), "shards": len(files)},
                 notices=_int_tabular_notice(name, layout))
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
    """Images to float32 (N, C, H, W) in [0, 1], tables to float32, token ids to int64."""
    from audit.lazy import normalise_x

    return normalise_x(x, kind)


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

            pf = pq.ParquetFile(path, pre_buffer=False)  # bounded: see audit.lazy.ParquetPart
            for batch in pf.iter_batches(columns=columns, batch_size=_VALIDATE_CHUNK_ROWS):
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


def _table_bytes(files: list[Path], entry: DataEntry, where: str) -> float:
    """Inputs of table files as float32: Parquet from its metadata, CSV from its size (a
    CSV number takes about as many bytes as text as a float32 does)."""
    total = 0.0
    for f in files:
        if f.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            try:
                meta = pq.read_metadata(f)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for malformed files
                raise DataError(f"cannot read the file: {_first_line(exc)}", where=where) from None
            total += float(meta.num_rows) * max(meta.num_columns - 1 - len(entry.sensitive), 1) * 4
        else:
            total += float(f.stat().st_size)
    return total


def _check_feature_types(files: list[Path], features: list[str], where: str) -> None:
    """Non-numeric feature columns, from the Parquet schema or the first rows of a CSV."""
    non_numeric: list[str] = []
    f = files[0]
    if f.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(f)
        for col in features:
            t = schema.field(col).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                non_numeric.append(col)
    else:
        import pandas as pd

        try:
            head = pd.read_csv(f, usecols=features, nrows=10_000)
        except Exception as exc:  # noqa: BLE001 - pandas raises many types for malformed files
            raise DataError(f"cannot read the file: {_first_line(exc)}", where=where) from None
        _feature_problems(head, features, {}, non_numeric)
    _raise_feature_problems({}, non_numeric, features, where)


def _load_table_files(src: _Source, name: str, entry: DataEntry, files: list[Path], where: str) -> Dataset:
    """Parquet or CSV shards (or one file) as one dataset. The label and sensitive columns
    are read in chunks into integer codes; the features are read by the pass (streamed),
    or at the end (in memory), in chunks with the same reader either way."""
    import pandas as pd

    from audit.lazy import CsvPart, LazyInputs, ParquetPart

    columns = _table_columns(files[0], where)
    for f in files[1:]:
        other = _table_columns(f, where)
        if other != columns:
            raise DataError(f"shard {f.name} has columns {', '.join(other[:12])} but {files[0].name} has "
                            f"{', '.join(columns[:12])}: shards must share one layout", where=where)
    label, features = _table_layout(entry, columns, where)
    y_codes = _Codes()
    s_codes = {c: _Codes() for c in entry.sensitive}
    keep = [label, *entry.sensitive]
    parts: list[Any] = []
    for f in files:
        try:
            if f.suffix.lower() == ".parquet":
                import pyarrow.parquet as pq

                import pyarrow as pa

                schema = pq.read_schema(f)
                # string columns come as dictionaries: codes without a Python string per row
                strings = [c for c in keep if pa.types.is_string(schema.field(c).type)
                           or pa.types.is_large_string(schema.field(c).type)]
                pf = pq.ParquetFile(f, pre_buffer=False, read_dictionary=strings)  # bounded: see ParquetPart
                groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
                parts.append(ParquetPart(str(f), features, groups))
                chunks: Any = pf.iter_batches(columns=keep, batch_size=1 << 20)
            else:
                chunks = [pd.read_csv(f, usecols=keep)]  # typed as a whole, as the in-memory reader does
            n_file = 0
            for df in chunks:
                for c, codes in ((label, y_codes), *s_codes.items()):
                    if isinstance(df, pd.DataFrame):
                        codes.add(df[c].to_numpy())
                    elif pa.types.is_dictionary(df.column(c).type):
                        codes.add_dictionary(df.column(c))
                    else:  # as the DataFrame path reads it (an int column with nulls: floats)
                        codes.add(df.column(c).to_pandas().to_numpy())
                n_file += len(df)
            if f.suffix.lower() != ".parquet":
                parts.append(CsvPart(str(f), features, n_file))
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed files
            raise DataError(f"cannot read the file {f.name}: {_first_line(exc)}", where=where) from None
    n = sum(p.n for p in parts)
    import pyarrow as pa

    # the label and sensitive chunks (strings, as pandas objects) leave pyarrow's pool
    # holding memory it would otherwise keep for the rest of the audit (~11 B/row)
    pa.default_memory_pool().release_unused()
    if n == 0:
        raise DataError("the dataset is empty: the file has a header but no rows", where=where)
    _check_feature_types(files, features, where)
    if y_codes.missing:
        raise DataError(f"{y_codes.missing} rows have no label in column '{label}'", where=where)
    inverse, order = _Labels(src, name, where, entry.path or files[0].name).by_name(np.asarray(y_codes.values))
    x: Any = LazyInputs(parts, (len(features),), "tabular")
    streamed = _streams(src, name, x.nbytes)
    # a streamed dataset keeps its labels compact (see Dataset), with no int64 copy on the way
    y = np.asarray(inverse, dtype=code_dtype(len(order.classes)) if streamed else np.int64)[y_codes.codes()]
    sensitive: dict[str, Any] = {c: s_codes[c].categorical() for c in entry.sensitive}
    continuous = None
    if not streamed:
        x = x.read(0, n)
        counts: dict[str, list[int]] = {}
        _feature_problems(pd.DataFrame(x, columns=features, copy=False), features, counts, [])
        _raise_feature_problems(counts, [], features, where)
        sensitive = {k: _as_strings(v) for k, v in sensitive.items()}
        continuous = ~np.all((x == 0) | (x == 1), axis=0)
    ds = Dataset(name=name, x=x, y=y, kind="tabular", classes=order.classes, sensitive=sensitive,
                 feature_names=features, feature_groups={c: [j] for j, c in enumerate(features)},
                 continuous=continuous,
                 meta={"path": str(files[0] if len(files) == 1 else entry.path), "label": label,
                       "shards": len(files)})
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _summarize_shards(src: _Source, name: str, entry: DataEntry, files: list[Path], where: str) -> DataSummary:
    """`audit validate` of sharded data: headers, labels and sensitive columns of every
    shard (feature columns of tables streamed through for types, NaN and inf)."""
    if files[0].suffix.lower() == ".npz":
        ds = _load_npz_files(src, name, entry, files, where)
        inputs = f"x of shape {list(ds.x.shape[1:])} per sample"
    else:
        ds = _load_table_files(src, name, entry, files, where)
        features = ds.feature_names or []
        counts: dict[str, list[int]] = {}
        non_numeric: list[str] = []
        for f in files:
            for chunk in _table_chunks(f, features, where):
                _feature_problems(chunk, features, counts, non_numeric)
        _raise_feature_problems(counts, non_numeric, features, where)
        inputs = f"{len(features)} feature columns ({', '.join(features[:8])}{', …' if len(features) > 8 else ''})"
    order = ClassOrder(ds.classes, ds.meta["class_order"]["source"], ds.meta["class_order"]["declared"])
    return DataSummary(name=name, kind=ds.kind, n=len(ds), classes=ds.classes, sensitive=list(ds.sensitive),
                       features=ds.feature_names, meta=ds.meta, notices=ds.notices,
                       description=f"{_describe_shards(src, entry, files)}: "
                                   + _summary_line(ds.kind, len(ds), order, list(ds.sensitive), inputs))


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


def _scan_image_folder(name: str, entry: DataEntry, path: Path, where: str,
                       streams: Callable[[float], bool] | None = None) -> tuple[_ImageFolder, list[str]]:
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
    if need > budget and not (streams and streams(len(files) * size[0] * size[1] * channels * 4.0)):
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
    folder, notices = _scan_image_folder(name, entry, path, where, lambda nbytes: _streams(src, name, nbytes))
    h, w = folder.size
    channels = 1 if folder.mode == "L" else 3
    if _streams(src, name, len(folder.files) * h * w * channels * 4.0):
        from audit.lazy import ImagePart, LazyInputs

        y, order = _Labels(src, name, where, entry.path or path.name).by_name(
            np.array(folder.labels), also=folder.class_names, what="class folders")
        x_lazy = LazyInputs([ImagePart([str(f) for f in folder.files], (h, w), folder.mode, where)], (channels, h, w),
                            "image")
        ds = Dataset(name=name, x=x_lazy, y=y, kind="image", classes=order.classes, meta=_image_meta(path, folder),
                     notices=notices)
        _record_order(name, order, ds.meta, ds.notices)
        return ds
    from audit.lazy import decode_images

    x = decode_images(folder.files, (h, w), folder.mode, where)
    # every sub-folder is a class, even an empty one, so indices match the train folder
    y, order = _Labels(src, name, where, entry.path or path.name).by_name(
        np.array(folder.labels), also=folder.class_names, what="class folders")
    ds = Dataset(name=name, x=x.astype(np.float32) / 255.0, y=y, kind="image", classes=order.classes,
                 meta=_image_meta(path, folder), notices=notices)
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _summarize_image_folder(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> DataSummary:
    folder, notices = _scan_image_folder(name, entry, path, where, lambda nbytes: _streams(src, name, nbytes))
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


# ---- text and token files (audit.textdata reads them) ------------------------------------
def _known_labels(labels: _Labels, values: Sequence[str], lines: Sequence[str], what: str) -> None:
    """Labels the reference order (the model's, or train's) does not know: one message
    naming the first line where each occurs, and both lists."""
    ref = labels.reference()
    if ref is None:
        return
    known = set(ref.classes)
    unknown: dict[str, str] = {}
    for v, line in zip(values, lines):
        if v not in known and v not in unknown:
            unknown[v] = line
    if unknown:
        first = ", ".join(f"'{v}' ({line})" for v, line in list(unknown.items())[:5])
        data_labels = sorted(set(values))
        raise DataError(f"{what} {first} {'is' if len(unknown) == 1 else 'are'} not among the classes in {ref.source} "
                        f"({', '.join(ref.classes[:30])}); the data's {what}s: {', '.join(data_labels[:30])}",
                        where=labels.where)


def _load_text_file(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    from audit.textdata import is_token_file

    if is_token_file(path, entry):
        return _load_token_file(src, name, entry, path, where)
    from audit.textdata import read_text_rows

    rows = read_text_rows(path, entry, where)
    labels = _Labels(src, name, where, entry.path or path.name)
    _known_labels(labels, [str(v) for v in rows.labels], rows.lines, "label")
    y, order = labels.by_name(rows.labels)
    n = len(rows.texts)
    ds = Dataset(name=name, x=np.zeros((n, 0), np.int64), y=y, kind="text", classes=order.classes,
                 sensitive=rows.sensitive,
                 meta={"path": str(path), "label": rows.label, "text": rows.text, "texts": rows.texts,
                       "lines": rows.lines,
                       "inputs": f"raw text in column '{rows.text}'",
                       "examples": [{"text": t[:200], "label": order.classes[int(c)]}
                                    for t, c in zip(rows.texts[:3], y[:3])]})
    _record_order(name, order, ds.meta, ds.notices)
    return ds


def _load_token_file(src: _Source, name: str, entry: DataEntry, path: Path, where: str) -> Dataset:
    from audit.textdata import read_token_rows
    from audit.tokens import infer_scheme, invalid_iob

    rows = read_token_rows(path, entry, where)
    conll = path.suffix.lower() != ".jsonl"
    flat = [t for tags in rows.tags for t in tags]
    word_lines = [f"line {start + w if conll else start}" for start, tags in zip(rows.lines, rows.tags)
                  for w in range(len(tags))]
    labels = _Labels(src, name, where, entry.path or path.name)
    _known_labels(labels, flat, word_lines, "tag")
    codes, order = labels.by_name(np.asarray(flat))
    n = len(rows.words)
    width = max(len(w) for w in rows.words)
    y = np.full((n, width), -1, dtype=np.int64)
    k = 0
    for i, tags in enumerate(rows.tags):
        y[i, : len(tags)] = codes[k:k + len(tags)]
        k += len(tags)
    scheme = entry.scheme or infer_scheme(rows.tags)
    bad = invalid_iob(rows.tags, scheme)
    invalid = [{"sentence": b.sentence, "word": b.word, "tag": b.tag, "previous": b.previous or "(start)",
                "line": (rows.lines[b.sentence] + b.word) if conll else rows.lines[b.sentence]} for b in bad[:200]]
    from audit.textdata import group_strings

    sensitive = {a: group_strings(rows.attributes[a]) for a in entry.sensitive}
    ds = Dataset(name=name, x=np.zeros((n, 0), np.int64), y=y, kind="tokens", classes=order.classes,
                 sensitive=sensitive,
                 meta={"path": str(path), "words": rows.words, "lines": rows.lines, "line_kind": "line",
                       "inputs": f"{len(flat)} words in {n} sentences",
                       "tag_scheme": {"scheme": scheme, "declared": entry.scheme is not None,
                                      "invalid": len(bad), "invalid_sentences": len({b.sentence for b in bad})},
                       "invalid_iob": invalid})
    _record_order(name, order, ds.meta, ds.notices)
    if bad:
        first = invalid[0]
        ds.notices.append(f"dataset '{name}': {len(bad)} tag(s) break the {scheme} scheme (first: line "
                          f"{first['line']}, '{first['tag']}' after '{first['previous']}'); data.integrity reports them")
    return ds
