"""Reading text data as users have it. Every problem is a DataError naming the file and
the line (or row).

* Text classification: a CSV, Parquet or JSONL file with a raw text column named by the
  entry's `text:` and a label column (`label:`, default `label`; labels may be strings);
  `sensitive:` columns (or JSONL keys) are kept, one value per row.
* Token classification (named-entity recognition):
  - CoNLL files (`.conll`, `.bio`, `.iob`): one `token TAG` per line (the tag is the last
    column, so CoNLL-2003's four columns read as they are), a blank line between
    sentences, `-DOCSTART-` lines ignored. A comment line `# key = value` before a
    sentence gives that sentence an attribute (for `sensitive:`).
  - JSONL: one sentence per line, `{"tokens": [...], "tags": [...]}` (the keys can be
    renamed with `tokens:` and `tags:`); other keys are per-sentence attributes.

The readers return raw strings; the model's tokenizer turns them into ids later
(`audit.text.tokenize_for_model`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import DataError, did_you_mean
from audit.spec import DataEntry

CONLL_SUFFIXES = (".conll", ".bio", ".iob")
JSONL_SUFFIXES = (".jsonl",)
TEXT_TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")
_COMMENT = re.compile(r"^#\s*([A-Za-z_][\w.-]*)\s*=\s*(.*?)\s*$")
_MAX_ERRORS_SHOWN = 3


@dataclass
class TextRows:
    """Raw text classification rows."""

    texts: list[str]
    labels: np.ndarray  # raw labels (strings or numbers)
    sensitive: dict[str, np.ndarray]
    lines: list[str]  # where each row is, for messages ("line 14", "row 13")
    label: str  # the label column
    text: str  # the text column


@dataclass
class TokenRows:
    """Raw token-classification sentences."""

    words: list[list[str]]
    tags: list[list[str]]
    attributes: dict[str, list[Any]] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)  # first line of each sentence


def is_token_file(path: Path, entry: DataEntry) -> bool:
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES or entry.kind == "tokens" or entry.tokens or entry.tags:
        return True
    if suffix in JSONL_SUFFIXES and entry.text is None:
        return True  # a JSONL file without `text:` holds tokens and tags
    return False


def group_strings(values: Any) -> np.ndarray:
    """Group labels as strings; a missing value is its own group, 'missing'."""
    import pandas as pd

    arr = np.asarray(list(values), dtype=object)
    return np.where(pd.isna(arr), "missing", arr).astype(str)


def _columns(path: Path, where: str) -> list[str]:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed files
        raise DataError(f"cannot read the file: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                        where=where) from None


def _read(path: Path, where: str, columns: list[str]) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path, columns=columns)
        # text stays text: no type guessing on the text column
        return pd.read_csv(path, usecols=columns, keep_default_na=True)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed files
        raise DataError(f"cannot read the file: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                        where=where) from None


# ---- text classification ----------------------------------------------------------------
def _jsonl_records(path: Path, where: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {lineno}: not valid JSON ({exc.msg})", where=where) from None
                if not isinstance(rec, dict):
                    raise DataError(f"line {lineno}: expected a JSON object per line, got {type(rec).__name__}",
                                    where=where)
                out.append((lineno, rec))
    except UnicodeDecodeError as exc:
        raise DataError(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})", where=where) from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc}", where=where) from None
    if not out:
        raise DataError("the file holds no records", where=where)
    return out


def read_text_rows(path: Path, entry: DataEntry, where: str) -> TextRows:
    """The text, label and sensitive columns of a CSV, Parquet or JSONL file."""
    text_col = entry.text or "text"
    label = entry.label or "label"
    wanted = [text_col, label, *entry.sensitive]
    if path.suffix.lower() in JSONL_SUFFIXES:
        records = _jsonl_records(path, where)
        keys = list(dict.fromkeys(k for _, r in records for k in r))
        for col in wanted:
            missing = next((ln for ln, r in records if col not in r), None)
            if missing is not None:
                what = "text" if col == text_col else "label" if col == label else "sensitive"
                raise DataError(f"line {missing}: no {what} key '{col}' (keys: {', '.join(keys[:20])})."
                                f"{did_you_mean(col, keys)}", where=where)
        columns = {c: [r[c] for _, r in records] for c in wanted}
        lines = [f"line {ln}" for ln, _ in records]
    else:
        have = _columns(path, where)
        for col, what in [(text_col, "text"), (label, "label")] + [(c, "sensitive") for c in entry.sensitive]:
            if col not in have:
                raise DataError(f"{what} column '{col}' not found (columns: {', '.join(have[:30])})."
                                f"{did_you_mean(col, have)}", where=where)
        df = _read(path, where, list(dict.fromkeys(wanted)))
        df.columns = [str(c) for c in df.columns]
        columns = {c: df[c].tolist() for c in wanted}
        multiline = path.suffix.lower() == ".csv" and any(isinstance(t, str) and "\n" in t for t in columns[text_col])
        if path.suffix.lower() == ".csv" and not multiline:
            lines = [f"line {i + 2}" for i in range(len(df))]  # line 1 is the header
        else:
            lines = [f"row {i + 1}" for i in range(len(df))]
    n = len(columns[text_col])
    if n == 0:
        raise DataError("the dataset is empty", where=where)
    texts: list[str] = []
    for i, t in enumerate(columns[text_col]):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            raise DataError(f"{lines[i]}: no text in column '{text_col}'", where=where)
        if not isinstance(t, str):
            raise DataError(f"{lines[i]}: the text in column '{text_col}' is a {type(t).__name__} ({t!r}), "
                            f"not a string", where=where)
        if not t.strip():
            raise DataError(f"{lines[i]}: empty text in column '{text_col}'", where=where)
        texts.append(t)
    raw = columns[label]
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise DataError(f"{lines[i]}: no label in column '{label}'", where=where)
        if isinstance(v, (list, dict)):
            raise DataError(f"{lines[i]}: the label in '{label}' is a {type(v).__name__}, not a class name",
                            where=where)
    labels = np.asarray(raw) if all(isinstance(v, str) for v in raw) else np.asarray(raw, dtype=object).astype(str) \
        if any(isinstance(v, str) for v in raw) else np.asarray(raw)
    sensitive = {c: group_strings(columns[c]) for c in entry.sensitive}
    return TextRows(texts, labels, sensitive, lines, label, text_col)


# ---- token classification ------------------------------------------------------------------
def read_conll(path: Path, where: str) -> TokenRows:
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[int] = []
    attrs: list[dict[str, str]] = []
    cur_w: list[str] = []
    cur_t: list[str] = []
    cur_attrs: dict[str, str] = {}
    start = 0

    def close() -> None:
        nonlocal cur_w, cur_t, cur_attrs
        if cur_w:
            words.append(cur_w)
            tags.append(cur_t)
            lines.append(start)
            attrs.append(cur_attrs)
            cur_attrs = {}
        cur_w, cur_t = [], []

    try:
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    close()
                    continue
                if line.startswith("-DOCSTART-"):
                    close()
                    continue
                m = _COMMENT.match(line) if not cur_w else None
                if m:
                    cur_attrs[m.group(1)] = m.group(2)
                    continue
                parts = line.split()
                if len(parts) < 2:
                    raise DataError(f"line {lineno}: {line.strip()!r} has no tag (expected 'token TAG', the tag in "
                                    f"the last column, a blank line between sentences)", where=where)
                if not cur_w:
                    start = lineno
                cur_w.append(parts[0])
                cur_t.append(parts[-1])
    except UnicodeDecodeError as exc:
        raise DataError(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})", where=where) from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc}", where=where) from None
    close()
    if not words:
        raise DataError("the file holds no sentences", where=where)
    keys = list(dict.fromkeys(k for a in attrs for k in a))
    return TokenRows(words, tags, {k: [a.get(k) for a in attrs] for k in keys}, lines)


def read_token_jsonl(path: Path, entry: DataEntry, where: str) -> TokenRows:
    tok_key, tag_key = entry.tokens or "tokens", entry.tags or "tags"
    words: list[list[str]] = []
    tags: list[list[str]] = []
    lines: list[int] = []
    records = _jsonl_records(path, where)
    keys = list(dict.fromkeys(k for _, r in records for k in r))
    for lineno, rec in records:
        for key, what in ((tok_key, "tokens"), (tag_key, "tags")):
            if key not in rec:
                raise DataError(f"line {lineno}: no '{key}' list of {what} (keys: {', '.join(keys[:20])})."
                                f"{did_you_mean(key, keys)}", where=where)
            if not isinstance(rec[key], list):
                raise DataError(f"line {lineno}: '{key}' must be a list of {what}, got {type(rec[key]).__name__}",
                                where=where)
        ws, ts = rec[tok_key], rec[tag_key]
        if not ws:
            raise DataError(f"line {lineno}: an empty sentence (no tokens)", where=where)
        if len(ws) != len(ts):
            raise DataError(f"line {lineno}: {len(ws)} tokens but {len(ts)} tags", where=where)
        for j, (w, t) in enumerate(zip(ws, ts)):
            if not isinstance(w, str) or not w.strip():
                raise DataError(f"line {lineno}: token {j + 1} is {w!r}, not a non-empty string", where=where)
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"line {lineno}: token {j + 1} ({w!r}) has no tag (got {t!r})", where=where)
        words.append([str(w) for w in ws])
        tags.append([str(t).strip() for t in ts])
        lines.append(lineno)
    others = [k for k in keys if k not in (tok_key, tag_key)]
    return TokenRows(words, tags, {k: [r.get(k) for _, r in records] for k in others}, lines)


def read_token_rows(path: Path, entry: DataEntry, where: str) -> TokenRows:
    rows = read_conll(path, where) if path.suffix.lower() in CONLL_SUFFIXES else read_token_jsonl(path, entry, where)
    for attr in entry.sensitive:
        if attr not in rows.attributes:
            have = ", ".join(rows.attributes) or "none"
            how = ("a '# key = value' comment line before each sentence" if path.suffix.lower() in CONLL_SUFFIXES
                   else "a key of each JSON line")
            raise DataError(f"unknown sensitive attribute '{attr}' (per-sentence attributes: {have}; give them as "
                            f"{how}).{did_you_mean(attr, list(rows.attributes))}", where=where)
    return rows
