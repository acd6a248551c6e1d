"""Inputs read on demand, and the one streaming pass over them.

A dataset too large to hold (a few million parquet rows, a folder of a few hundred
thousand images) keeps its labels and sensitive attributes in memory, compactly, and
its inputs on disk: `Dataset.x` is then a `LazyInputs`. It answers what checks do with
inputs, like a read-only array:

    len(x), x.shape, x.dtype, x.ndim
    x[a:b]          a contiguous range of rows (read from disk)
    x[idx]          rows at an integer index array, in any order (read in sorted order)
    x[i]            one row
    x.batches(bs)   (start, rows) in order, bs rows at a time

`np.asarray(x)` is refused with a message: a check reads a seeded sample
(`Dataset.take(idx)`, `Context.sample`) or works from the Context's per-sample summaries.

The pass (`scan_range`) walks the rows in blocks whose size depends only on the row size
(`block_rows`), never on the engine, the batch size or the number of workers. Per block
it yields the row hashes (`row_hashes`, what data.integrity compares), the SHA-256 of the
block's bytes (the dataset's content hash is the SHA-256 of those digests, see
`audit.dataset`), and exact per-element statistics (`BlockStats`, merged in block order).
When it is given the model, it runs it in batches on the global grid of the batch size
(rows [0, bs), [bs, 2bs), ... whatever the range being scanned), so that every input
batch, hence every logit, is the one an in-memory pass computes: a range that starts or
ends inside a batch reads the missing rows of that batch and keeps only its own.

Readers hold paths and layouts, never open handles, so that they travel to Ray workers.
"""

from __future__ import annotations

import hashlib
import itertools
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import DataError

MAX_BLOCK_ROWS = 16_384
BLOCK_BYTES = 16 * 1024 * 1024  # inputs of one block, as float32


def block_rows(row_elements: int, n: int | None = None) -> int:
    """Rows per block: the largest power of two up to MAX_BLOCK_ROWS whose float32 inputs
    fit BLOCK_BYTES. A function of the row size alone: every engine cuts the same blocks."""
    rows = MAX_BLOCK_ROWS
    while rows > 1 and rows * max(int(row_elements), 1) * 4 > BLOCK_BYTES:
        rows //= 2
    return rows


# ---- row hashes ----------------------------------------------------------------------
def row_words(x: np.ndarray) -> np.ndarray:
    """(N, W) uint64 view of each row's bytes (zero-padded to a multiple of 8 bytes)."""
    n = x.shape[0]
    # the row width spelled out: reshape(0, -1) cannot infer it for zero rows
    raw = np.ascontiguousarray(x).reshape(n, int(np.prod(x.shape[1:], dtype=np.int64))).view(np.uint8)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(raw).view(np.uint64)


def row_hashes(words: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row: pandas hashes each column and combines them row-wise (a
    row's hash depends on that row alone, so blocks hash as the whole does)."""
    import pandas as pd

    if words.shape[1] == 0:
        return np.zeros(words.shape[0], np.uint64)
    return pd.util.hash_pandas_object(pd.DataFrame(words, copy=False), index=False).to_numpy()


def block_digest(x: np.ndarray) -> bytes:
    return hashlib.sha256(memoryview(np.ascontiguousarray(x)).cast("B")).digest()


# ---- statistics of the inputs, per element ---------------------------------------------
@dataclass
class BlockStats:
    """Per input element (a column, or a pixel of C x H x W): count, mean and sum of squared
    deviations (merged with Chan et al.'s pairwise update, in block order, so every engine
    gets the same bits), min, max, NaN and infinite counts, whether every value is 0 or 1
    (an indicator) and whether every value is a whole number; and the number of rows with
    0, 1, 2, ... missing values."""

    n: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan: np.ndarray
    inf: np.ndarray
    binary: np.ndarray
    whole: np.ndarray
    missing_rows: np.ndarray  # histogram: rows by their number of missing values

    @classmethod
    def of(cls, x: np.ndarray) -> BlockStats:
        flat = np.asarray(x).reshape(x.shape[0], -1)
        v = flat.astype(np.float64)
        nan = np.isnan(v)
        finite = np.isfinite(v)
        per_row = nan.sum(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            mean = v.mean(axis=0) if len(v) else np.zeros(v.shape[1])
            m2 = ((v - mean) ** 2).sum(axis=0)
            lo = v.min(axis=0) if len(v) else np.full(v.shape[1], np.inf)
            hi = v.max(axis=0) if len(v) else np.full(v.shape[1], -np.inf)
            binary = np.all((v == 0) | (v == 1), axis=0)
            r = np.round(v)  # np.isclose(v, r)'s test, without its checks for infinities (masked here)
            whole = np.all((np.abs(v - r) <= 1e-8 + 1e-5 * np.abs(r)) | ~finite, axis=0)
        return cls(n=int(v.shape[0]), mean=mean, m2=m2, min=lo, max=hi, nan=nan.sum(axis=0),
                   inf=(~finite & ~nan).sum(axis=0), binary=binary, whole=whole,
                   missing_rows=np.bincount(per_row, minlength=1))

    def merge(self, other: BlockStats) -> BlockStats:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta ** 2 * (self.n * other.n / n)
        width = max(len(self.missing_rows), len(other.missing_rows))
        hist = np.zeros(width, np.int64)
        hist[: len(self.missing_rows)] += self.missing_rows
        hist[: len(other.missing_rows)] += other.missing_rows
        return BlockStats(n, mean, m2, np.fmin(self.min, other.min), np.fmax(self.max, other.max),
                          self.nan + other.nan, self.inf + other.inf, self.binary & other.binary,
                          self.whole & other.whole, hist)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per element (numpy's default, ddof=0)."""
        return np.sqrt(np.maximum(self.m2 / max(self.n, 1), 0.0))

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": np.asarray(getattr(self, k)) for k in _STAT_FIELDS} | {f"{prefix}n": np.array(self.n)}

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> BlockStats:
        return cls(n=int(arrays[f"{prefix}n"]), **{k: np.asarray(arrays[f"{prefix}{k}"]) for k in _STAT_FIELDS})


_STAT_FIELDS = ("mean", "m2", "min", "max", "nan", "inf", "binary", "whole", "missing_rows")


def merge_stats(blocks: Sequence[BlockStats]) -> BlockStats:
    out = blocks[0]
    for b in blocks[1:]:
        out = out.merge(b)
    return out


# ---- readers ---------------------------------------------------------------------------
class LazyAccessError(TypeError):
    """Code asked for a streamed dataset's inputs whole."""


@dataclass
class Part:
    """One shard of a dataset's inputs: rows [0, n) of one file (or of a list of images)."""

    n: int

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows at sorted, unique local indices."""
        return np.concatenate([self.read(int(i), int(i) + 1) for i in idx]) if len(idx) else self.read(0, 0)

    def iter(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        for s in range(start, stop, chunk):
            yield self.read(s, min(s + chunk, stop))

    def describe(self) -> str:
        return ""

    def __getstate__(self) -> dict[str, Any]:  # caches and open files stay behind
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class LazyInputs:
    """The inputs of one dataset, read from its parts (shards) on demand."""

    def __init__(self, parts: Sequence[Part], row_shape: tuple[int, ...], kind: str, source: str = "") -> None:
        self.parts = list(parts)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.kind = kind
        self.source = source
        self.offsets = np.cumsum([0] + [p.n for p in self.parts]).astype(np.int64)

    # -- the array face
    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def row_elements(self) -> int:
        return int(np.prod(self.row_shape)) if self.row_shape else 1

    @property
    def nbytes(self) -> int:
        return self.n * self.row_elements * 4

    @property
    def shards(self) -> int:
        return len(self.parts)

    def __repr__(self) -> str:
        return f"LazyInputs({self.kind}, shape={self.shape}, shards={self.shards}, {self.source})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise LazyAccessError(
            f"the inputs of this dataset are streamed ({self.n:,} rows{', ' + self.source if self.source else ''}) "
            "and are not read whole: read a seeded sample (Dataset.take(idx), Context.sample) or use the "
            "Context's per-sample summaries (logits, predictions, row hashes, input statistics)")

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if len(key) == 1:
                key = key[0]
            else:
                raise LazyAccessError("streamed inputs are indexed by rows only (x[rows]); take the rows first, "
                                      "then index the array they come back as")
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step == 1:
                return self.read(start, max(start, stop))
            return self.take(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.n if int(key) < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"row {int(key)} is out of range for {self.n} rows")
            return self.read(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (self.n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {self.n} rows")
            idx = np.flatnonzero(idx)
        return self.take(idx)

    # -- reading
    def _locate(self, row: int) -> int:
        return int(np.searchsorted(self.offsets, row, side="right") - 1)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32 (images NCHW in [0, 1])."""
        start, stop = max(0, int(start)), min(self.n, int(stop))
        if stop <= start:
            return np.zeros((0, *self.row_shape), np.float32)
        out = []
        p = self._locate(start)
        while start < stop:
            off = int(self.offsets[p])
            end = min(stop, int(self.offsets[p + 1]))
            out.append(self.parts[p].read(start - off, end - off))
            start = end
            p += 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows at `idx` (any order, repeats allowed), each part read once in row order."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"row index out of range for {self.n} rows")
        idx = np.where(idx < 0, idx + self.n, idx)
        uniq, inverse = np.unique(idx, return_inverse=True)
        parts = []
        which = np.searchsorted(self.offsets, uniq, side="right") - 1
        for p in np.unique(which):
            local = uniq[which == p] - self.offsets[p]
            parts.append(self.parts[int(p)].take(local))
        rows = np.concatenate(parts) if parts else np.zeros((0, *self.row_shape), np.float32)
        return rows[inverse.reshape(-1)]

    def iter_rows(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        """Rows [start, stop) in order, in pieces of at most about `chunk` rows."""
        p = self._locate(start) if start < self.n else len(self.parts)
        while start < stop and p < len(self.parts):
            off = int(self.offsets[p])
            end = min(stop, int(self.offsets[p + 1]))
            if end > start:
                yield from self.parts[p].iter(start - off, end - off, chunk)
            start = end
            p += 1

    def blocks(self, start: int, stop: int, block: int) -> Iterator[tuple[int, np.ndarray]]:
        """(b0, rows) for the blocks of the global grid of `block` rows within [start, stop)."""
        yield from _rebatch(self.iter_rows(start, stop, block), start, block)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        yield from self.blocks(start, self.n if stop is None else stop, batch_size)

    def describe(self) -> dict[str, Any]:
        return {"streamed": True, "shards": self.shards, "rows": self.n, "source": self.source}


def _rebatch(pieces: Iterator[np.ndarray], start: int, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Pieces of consecutive rows from `start`, cut on the global grid of `size` rows."""
    buf: list[np.ndarray] = []
    have = 0
    pos = start
    for piece in pieces:
        buf.append(piece)
        have += len(piece)
        while have and (have >= size - pos % size):
            need = size - pos % size
            joined = buf[0] if len(buf) == 1 else np.concatenate(buf)
            yield pos, joined[:need]
            rest = joined[need:]
            buf, have, pos = ([rest] if len(rest) else []), len(rest), pos + need
    if have:
        yield pos, buf[0] if len(buf) == 1 else np.concatenate(buf)


class ArrayInputs(LazyInputs):
    """An in-memory array behind the streamed interface (tests, notebooks): checks see
    exactly what they see of a file streamed from disk."""

    def __init__(self, x: np.ndarray, kind: str, source: str = "in-memory array", shards: int = 1) -> None:
        x = np.asarray(x)
        bounds = np.linspace(0, len(x), shards + 1).astype(int)
        super().__init__([_ArrayPart(x[a:b]) for a, b in itertools.pairwise(bounds)], x.shape[1:], kind, source)


class _ArrayPart(Part):
    def __init__(self, x: np.ndarray) -> None:
        super().__init__(len(x))
        self.x = x

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self.x[start:stop], dtype=np.float32)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.x[idx], dtype=np.float32)


# ---- tables ----------------------------------------------------------------------------
def table_inputs(df: Any, features: list[str]) -> np.ndarray:
    """Feature columns of a pandas frame as float32 (N, F), one definition for every reader."""
    return df[features].to_numpy(dtype=np.float32, na_value=np.nan)


def arrow_inputs(table: Any, features: list[str]) -> np.ndarray:
    """`table_inputs` of a pyarrow table or record batch, column by column without a pandas
    frame (the streamed pass's reader): integer and floating columns cast straight into the
    float32 matrix, as pandas casts them (a null is NaN); any other type goes through pandas."""
    import pyarrow as pa

    out = np.empty((table.num_rows, len(features)), np.float32)
    for j, name in enumerate(features):
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            return table_inputs(table.to_pandas(), features)
        # with nulls, arrow gives float64 with NaN, as pandas does
        out[:, j] = col.to_numpy(zero_copy_only=False)
    return out


class ParquetPart(Part):
    """A Parquet file's feature columns, read a row group (or a batch of one) at a time."""

    def __init__(self, path: str, features: list[str], row_groups: list[int]) -> None:
        super().__init__(int(sum(row_groups)))
        self.path = path
        self.features = list(features)
        self.row_groups = list(row_groups)
        self.rg_offsets = np.cumsum([0] + self.row_groups)
        self._file: Any = None
        self._cached: tuple[int, np.ndarray] | None = None

    def _pf(self) -> Any:
        if getattr(self, "_file", None) is None:
            import pyarrow.parquet as pq

            # pre_buffer off: with it pyarrow keeps every row group it has read in its pool
            # until the file is closed (the whole file, on one pass)
            self._file = pq.ParquetFile(self.path, pre_buffer=False)
        return self._file

    def _group(self, g: int) -> np.ndarray:
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != g:
            table = self._pf().read_row_group(g, columns=self.features)
            cached = (g, arrow_inputs(table, self.features))
            self._cached = cached
        return cached[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        out = []
        g = int(np.searchsorted(self.rg_offsets, start, side="right") - 1)
        while start < stop:
            g0 = int(self.rg_offsets[g])
            end = min(stop, int(self.rg_offsets[g + 1]))
            out.append(self._group(g)[start - g0:end - g0])
            start = end
            g += 1
        return np.concatenate(out) if len(out) != 1 else out[0]

    def take(self, idx: np.ndarray) -> np.ndarray:
        groups = np.searchsorted(self.rg_offsets, idx, side="right") - 1
        out = [self._group(int(g))[idx[groups == g] - self.rg_offsets[g]] for g in np.unique(groups)]
        return np.concatenate(out) if out else np.zeros((0, len(self.features)), np.float32)

    def iter(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        g0 = int(np.searchsorted(self.rg_offsets, start, side="right") - 1)
        g1 = int(np.searchsorted(self.rg_offsets, stop - 1, side="right") - 1)
        pos = int(self.rg_offsets[g0])
        for batch in self._pf().iter_batches(batch_size=max(chunk, 1024), row_groups=list(range(g0, g1 + 1)),
                                             columns=self.features, use_threads=False):
            end = pos + batch.num_rows
            if end > start:
                a, b = max(start, pos) - pos, min(stop, end) - pos
                yield arrow_inputs(batch.slice(a, b - a), self.features)
            pos = end
            if pos >= stop:
                break

    def describe(self) -> str:
        return self.path


class CsvPart(Part):
    """A CSV file's feature columns, parsed by pandas in chunks (the in-memory loader's
    parser, so the numbers are the same)."""

    def __init__(self, path: str, features: list[str], n: int) -> None:
        super().__init__(n)
        self.path = path
        self.features = list(features)

    def _chunks(self, start: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        import pandas as pd

        skip = range(1, start + 1) if start else None
        pos = start
        for df in pd.read_csv(self.path, usecols=self.features, chunksize=max(chunk, 1024), skiprows=skip):
            yield pos, table_inputs(df, self.features)
            pos += len(df)

    def read(self, start: int, stop: int) -> np.ndarray:
        out = []
        for pos, x in self._chunks(start, stop - start):
            out.append(x[: stop - pos])
            if pos + len(x) >= stop:
                break
        return np.concatenate(out) if out else np.zeros((0, len(self.features)), np.float32)

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = []
        for pos, x in self._chunks(int(idx[0]), 65_536):
            sel = idx[(idx >= pos) & (idx < pos + len(x))]
            out.append(x[sel - pos])
            if pos + len(x) > idx[-1]:
                break
        return np.concatenate(out)

    def iter(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        for pos, x in self._chunks(start, chunk):
            yield x[: stop - pos]
            if pos + len(x) >= stop:
                break

    def describe(self) -> str:
        return self.path


# ---- npz / npy -------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyMember:
    """Where an array of an .npz (or a plain .npy file) lies: its dtype, shape and order,
    and for an uncompressed member the byte offset of its data in the file (memory-mapped);
    compressed members are read as a stream."""

    path: str
    name: str  # member name inside the zip, "" for a plain .npy file
    dtype: str
    shape: tuple[int, ...]
    fortran: bool
    offset: int | None  # data offset in the file when stored uncompressed


def npy_member(path: str | Path, name: str) -> NpyMember:
    fmt = np.lib.format
    path = str(path)
    if not name:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            shape, fortran, dtype = _read_header(f, version)
            return NpyMember(path, "", dtype.str, tuple(shape), bool(fortran), f.tell())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name + ".npy")
        with z.open(info) as f:
            version = fmt.read_magic(f)
            shape, fortran, dtype = _read_header(f, version)
            header_len = f.tell()
        offset = None
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as raw:
                raw.seek(info.header_offset + 26)
                name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
                offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header_len
    return NpyMember(path, name, dtype.str, tuple(shape), bool(fortran), offset)


def _read_header(f: Any, version: tuple[int, int]) -> tuple[Any, bool, np.dtype]:
    fmt = np.lib.format
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    return read(f)


class _MemberArray:
    """Rows of one npy member: memory-mapped when stored uncompressed, else decompressed
    from the zip as a stream (a forward seek reads and drops the bytes before it)."""

    def __init__(self, m: NpyMember) -> None:
        self.m = m
        self.dtype = np.dtype(m.dtype)
        self.row_shape = m.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._map: np.ndarray | None = None
        self._stream: Any = None
        self._zip: Any = None
        self._pos = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"m": self.m}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["m"])

    def _mapped(self) -> np.ndarray | None:
        if self.m.offset is None:
            return None
        if self._map is None:
            self._map = np.memmap(self.m.path, dtype=self.dtype, mode="r", offset=self.m.offset, shape=self.m.shape,
                                  order="F" if self.m.fortran else "C")
        return self._map

    def read(self, start: int, stop: int) -> np.ndarray:
        mapped = self._mapped()
        if mapped is not None:
            return np.array(mapped[start:stop])
        if self.m.fortran:
            raise DataError(f"array '{self.m.name}' of {self.m.path} is compressed and in Fortran order: it cannot "
                            "be streamed; save it with np.savez (uncompressed) or in C order")
        if self._stream is None or self._pos > start:
            self._close()
            self._zip = zipfile.ZipFile(self.m.path)
            self._stream = self._zip.open(self.m.name + ".npy")
            _read_header(self._stream, np.lib.format.read_magic(self._stream))
            self._base = self._stream.tell()
            self._pos = 0
        if start > self._pos:
            self._stream.seek(self._base + start * self.row_bytes)
        raw = self._stream.read((stop - start) * self.row_bytes)
        self._pos = stop
        return np.frombuffer(raw, dtype=self.dtype).reshape((stop - start, *self.row_shape))

    def take(self, idx: np.ndarray) -> np.ndarray:
        mapped = self._mapped()
        if mapped is not None:
            return np.asarray(mapped[idx])
        out = [self.read(int(i), int(i) + 1) for i in idx]  # sorted: one forward pass
        return np.concatenate(out) if out else np.zeros((0, *self.row_shape), self.dtype)

    def _close(self) -> None:
        for h in (self._stream, self._zip):
            try:
                if h is not None:
                    h.close()
            except (OSError, ValueError):
                pass
        self._stream = self._zip = None


def normalise_x(x: np.ndarray, kind: str) -> np.ndarray:
    """Images to float32 (N, C, H, W) in [0, 1] (uint8 scaled), tables to float32, token ids
    to int64: what every reader of npz inputs returns, in memory or streamed."""
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


class NpzPart(Part):
    """The inputs of one .npz shard: its `x`, or 1-D feature arrays stacked as columns."""

    def __init__(self, members: list[NpyMember], kind: str) -> None:
        super().__init__(int(members[0].shape[0]))
        self.members = members
        self.kind = kind
        self._arrays: list[_MemberArray] | None = None

    def _a(self) -> list[_MemberArray]:
        if getattr(self, "_arrays", None) is None:
            self._arrays = [_MemberArray(m) for m in self.members]
        return self._arrays

    def _finish(self, cols: list[np.ndarray]) -> np.ndarray:
        x = cols[0] if len(cols) == 1 and len(self.members) == 1 and self.members[0].name in ("x", "") \
            else np.column_stack(cols)
        return normalise_x(x, self.kind)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._finish([a.read(start, stop) for a in self._a()])

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self._finish([a.take(idx) for a in self._a()])

    def describe(self) -> str:
        return self.members[0].path


# ---- images ----------------------------------------------------------------------------
def decode_images(paths: Sequence[Any], size: tuple[int, int], mode: str, where: str) -> np.ndarray:
    """(n, C, H, W) uint8 images, converted to `mode` and resized to `size` (H, W) as the
    in-memory loader does; an unreadable file is one DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    x = np.empty((len(paths), h, w) + (() if mode == "L" else (3,)), dtype=np.uint8)
    for i, f in enumerate(paths):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                x[i] = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, zlib.error) as exc:
            raise DataError(f"cannot read image {f}: {exc}", where=where) from None
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


class ImagePart(Part):
    """Image files decoded on demand, converted and resized as the in-memory loader does."""

    def __init__(self, files: list[str], size: tuple[int, int], mode: str, where: str) -> None:
        super().__init__(len(files))
        self.files = files
        self.size = size
        self.mode = mode
        self.where = where

    def _decode(self, paths: Sequence[str]) -> np.ndarray:
        return decode_images(paths, self.size, self.mode, self.where).astype(np.float32) / 255.0

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._decode(self.files[start:stop])

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self._decode([self.files[int(i)] for i in idx])


# ---- the pass --------------------------------------------------------------------------
@dataclass
class BlockResult:
    start: int
    stop: int
    digest: bytes
    hashes: np.ndarray
    stats: BlockStats


Forward = Callable[[np.ndarray], np.ndarray]


def scan_range(x: LazyInputs | np.ndarray, start: int, stop: int, *, block: int, batch_size: int,
               forward: Forward | None = None) -> Iterator[tuple[str, Any]]:
    """One pass over rows [start, stop) of `x` (`start` on the block grid). Yields
    ("block", BlockResult) for each block, and with `forward` ("out", (r0, outputs, ran))
    for consecutive runs of rows: the model's outputs (an array, or a dict of arrays) on
    the batches of the global grid of `batch_size` that cover the range (rows outside
    [start, stop) are read to complete a batch and their outputs dropped; `ran` counts
    every row the model ran on)."""
    n = len(x)
    reader: Callable[[int, int], np.ndarray] = x.read if isinstance(x, LazyInputs) else \
        (lambda a, b: np.asarray(x[a:b]))
    blocks = x.blocks(start, stop, block) if isinstance(x, LazyInputs) else \
        ((b0, np.asarray(x[b0:min(b0 + block, stop)])) for b0 in range(start, stop, block))
    pend: list[np.ndarray] = []
    pend_start = start
    if forward is not None and start % batch_size:
        pend_start = start - start % batch_size
        pend = [reader(pend_start, start)]

    def run(buf: np.ndarray, r0: int, upto: int) -> Iterator[tuple[str, Any]]:
        out = forward(buf)  # type: ignore[misc]
        keep_from = max(start - r0, 0)
        keep_to = min(upto, stop) - r0
        if keep_to > keep_from:
            kept = {k: (None if v is None else v[keep_from:keep_to]) for k, v in out.items()} \
                if isinstance(out, dict) else out[keep_from:keep_to]
            yield "out", (r0 + keep_from, kept, len(buf))

    # A block's digest, row hashes and statistics are computed on a second thread while
    # this one runs the model on it and reads the next block (NumPy, pandas' hashing and
    # hashlib release the GIL): the same results, in block order, in about the time of
    # the slower side. One block in flight bounds the memory.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-block")
    pending: Future[BlockResult] | None = None
    try:
        for b0, xb in blocks:
            b1 = b0 + len(xb)
            summary = pool.submit(summarize_block, b0, xb)
            if forward is not None:
                pend.append(xb)
                cut = b1 if b1 >= n else b1 - b1 % batch_size
                if cut > pend_start:
                    buf = pend[0] if len(pend) == 1 else np.concatenate(pend)
                    yield from run(buf[: cut - pend_start], pend_start, cut)
                    rest = buf[cut - pend_start:]
                    pend, pend_start = ([rest] if len(rest) else []), cut
            if pending is not None:
                yield "block", pending.result()
            pending = summary
        if pending is not None:
            yield "block", pending.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if forward is not None and pend_start < stop:
        tail_end = min(stop + (-stop) % batch_size, n)
        buf = np.concatenate(pend + [reader(stop, tail_end)])
        yield from run(buf, pend_start, tail_end)


def summarize_block(b0: int, xb: np.ndarray) -> BlockResult:
    """What the pass keeps of a block of inputs: its digest, a hash per row and its exact
    statistics."""
    return BlockResult(b0, b0 + len(xb), block_digest(xb), row_hashes(row_words(xb)), BlockStats.of(xb))
