"""Hugging Face sequence and token classifiers from a local model folder, offline.

`model.path` pointing at a folder with a `config.json` loads
`AutoModelForSequenceClassification` or `AutoModelForTokenClassification` (the task:
declared by the spec's `task:`, else the config's architecture) and `AutoTokenizer` from
that folder only (`local_files_only`, `HF_HUB_OFFLINE`; no remote code). `transformers`
is an optional extra: `pip install 'audit-suite[text]'`.

Tokenization: a text dataset carries its raw strings in `meta["texts"]`, a token dataset
its words in `meta["words"]` (see `audit.text`). When the audited model is a Hugging Face
model, they are encoded with the model's own tokenizer (`HFTokenizer`, used by
`audit.text.tokenize_for_model`): `x` becomes its int64 token ids, right-padded with its
pad id to the longest encoded row (at most the model's maximum length); for words, the
tokenizer's `word_ids()` give each word's first sub-token. The model is wrapped
(`HFSequenceClassifier`, `HFTokenClassifier`) so that, like every model in the suite, it
takes an int64 (N, L) tensor and returns logits ((N, K), or (N, L, K) per sub-token);
the attention mask is derived from the pad id inside the wrapper.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from audit.dataset import Dataset, LoadedModel
from audit.errors import DataError, ModelError
from audit.text import Encoded

if TYPE_CHECKING:
    from audit.spec import AuditSpec

_MAX_LEN_CAP = 512  # longer inputs are truncated: audits run many forward passes


def is_hf_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def _transformers() -> Any:
    # offline: a local folder only, never a download (read by huggingface_hub at import)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # the audit shows its own progress: no per-file weight-loading bars or advisory logs
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers
    except ModuleNotFoundError:
        raise ModelError("a Hugging Face model folder needs the optional `transformers` package: "
                         "pip install 'audit-suite[hf]' (the same as 'audit-suite[text]')", where="model.path") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


class HFSequenceClassifier(nn.Module):
    """int64 token ids (N, L) -> logits (N, K); padding positions (pad id) are masked."""

    def __init__(self, model: nn.Module, pad_token_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_token_id = int(pad_token_id)

    @property
    def embedding(self) -> nn.Module:
        """The token embedding layer (for attributions over tokens)."""
        return self.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.long()
        mask = ids.ne(self.pad_token_id)
        # an all-padding row would attend to nothing; let it attend to everything instead
        mask = mask | ~mask.any(dim=1, keepdim=True)
        return self.model(input_ids=ids, attention_mask=mask.long()).logits


class HFTokenClassifier(HFSequenceClassifier):
    """int64 token ids (N, L) -> per-sub-token logits (N, L, K); padding is masked."""


TASK_OF_ARCHITECTURE = (("ForTokenClassification", "token-classification"),
                        ("ForSequenceClassification", "classification"))


def config_task(path: str | Path) -> str | None:
    """The task a folder's config.json names through its `architectures`, if any."""
    import json

    try:
        archs = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    for arch in archs:
        for suffix, task in TASK_OF_ARCHITECTURE:
            if str(arch).endswith(suffix):
                return task
    return None


def config_max_positions(path: str | Path) -> int | None:
    import json

    try:
        v = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return int(v) if isinstance(v, int) and v > 0 else None


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    tf = _transformers()
    try:
        return tf.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of the Hugging Face model at {path}: "
                         f"{str(exc).splitlines()[0]}", where="model.path") from None


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:  # e.g. GPT-style tokenizers: pad with end-of-sequence, masked anyway
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return int(pad)


def _limit(tokenizer: Any, max_len: int | None) -> int:
    limit = int(getattr(tokenizer, "model_max_length", _MAX_LEN_CAP) or _MAX_LEN_CAP)
    limit = min(limit, _MAX_LEN_CAP)
    return min(limit, max_len) if max_len is not None else limit


def _padded(rows: list[list[int]], pad: int) -> np.ndarray:
    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), max(width, 1)), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def encode_texts(tokenizer: Any, texts: list[str], max_len: int | None = None) -> np.ndarray:
    """int64 (N, L) ids, right-padded with the pad id; L = longest row, capped at `max_len`."""
    return encode_texts_counted(tokenizer, texts, max_len).x


def encode_texts_counted(tokenizer: Any, texts: list[str], max_len: int | None = None) -> Encoded:
    """Ids of `texts` (truncated at the model's length) and how many sub-tokens truncation cut."""
    limit = _limit(tokenizer, max_len)
    full = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
    long = [i for i, r in enumerate(full) if len(r) > limit]
    rows = list(full)
    lost = 0
    if long:
        cut = tokenizer([texts[i] for i in long], truncation=True, max_length=limit, padding=False)["input_ids"]
        for i, r in zip(long, cut):
            lost += len(full[i]) - len(r)
            rows[i] = r
    return Encoded(_padded(rows, _pad_id(tokenizer)), None, len(long), lost, 0)


def encode_words(tokenizer: Any, sentences: list[list[str]], max_len: int | None = None) -> Encoded:
    """Ids of pre-split sentences (`is_split_into_words`) and each word's first sub-token
    from the tokenizer's `word_ids()` (a fast tokenizer), else by encoding word by word."""
    limit = _limit(tokenizer, max_len)
    width = max((len(s) for s in sentences), default=1)
    starts = np.full((len(sentences), max(width, 1)), -1, dtype=np.int64)
    if getattr(tokenizer, "is_fast", False):
        full = tokenizer(sentences, is_split_into_words=True, truncation=False, padding=False)
        long = [i for i, r in enumerate(full["input_ids"]) if len(r) > limit]
        cut = tokenizer([sentences[i] for i in long], is_split_into_words=True, truncation=True,
                        max_length=limit, padding=False) if long else None
        which = {i: k for k, i in enumerate(long)}
        rows: list[list[int]] = []
        lost = words_lost = 0
        for i in range(len(sentences)):
            enc, k = (cut, which[i]) if i in which else (full, i)
            ids = enc["input_ids"][k]
            word_ids = enc.word_ids(k)
            seen = set()
            for pos, w in enumerate(word_ids):
                if w is not None and w not in seen:
                    seen.add(w)
                    starts[i, w] = pos
            if i in which:
                lost += len(full["input_ids"][i]) - len(ids)
                words_lost += len(sentences[i]) - len(seen)
            rows.append(list(ids))
        return Encoded(_padded(rows, _pad_id(tokenizer)), starts, len(long), lost, words_lost)
    # a slow tokenizer: [specials] + the pieces of each word, as the fast path would give
    head = tokenizer.build_inputs_with_special_tokens([])
    rows, lost, words_lost, n_long = [], 0, 0, 0
    for i, sent in enumerate(sentences):
        pieces = [tokenizer.encode(w, add_special_tokens=False) or [tokenizer.unk_token_id] for w in sent]
        ids = list(head[:1]) if head else []
        tail = list(head[1:]) if len(head) > 1 else []
        cut = False
        for w, p in enumerate(pieces):
            if len(ids) + len(p) + len(tail) > limit:
                cut = True
                lost += len(p)
                words_lost += 1
                continue
            starts[i, w] = len(ids)
            ids += p
        n_long += cut
        rows.append(ids + tail)
    return Encoded(_padded(rows, _pad_id(tokenizer)), starts, n_long, lost, words_lost)


class HFTokenizer:
    """A Hugging Face folder's tokenizer, as `audit.text.tokenize_for_model` uses it."""

    def __init__(self, tokenizer: Any, source: str, max_len: int | None) -> None:
        self.tok = tokenizer
        self.source = source
        self.max_len = max_len

    @classmethod
    def from_folder(cls, path: str | Path) -> HFTokenizer:
        resolved = str(Path(path).resolve())
        return cls(load_tokenizer(resolved), resolved, config_max_positions(resolved))

    def __len__(self) -> int:
        return len(self.tok)

    @property
    def pad_id(self) -> int:
        return _pad_id(self.tok)

    @property
    def special_ids(self) -> list[int]:
        return sorted({int(i) for i in self.tok.all_special_ids})

    def encode_texts(self, texts: list[str]) -> Encoded:
        return encode_texts_counted(self.tok, texts, self.max_len)

    def encode_words(self, sentences: list[list[str]]) -> Encoded:
        return encode_words(self.tok, sentences, self.max_len)

    def id_to_token(self) -> list[str]:
        return [str(t) for t in self.tok.convert_ids_to_tokens(list(range(len(self.tok))))]

    def to_json(self) -> dict[str, Any]:
        return {"type": "hf", "source": self.source, "class": type(self.tok).__name__, "vocab_size": len(self.tok),
                "max_len": _limit(self.tok, self.max_len), "pad_id": self.pad_id}

    def summary(self) -> dict[str, Any]:
        return self.to_json()


def encode_dataset(ds: Dataset, tokenizer: Any, source: str, max_len: int | None = None) -> Dataset:
    """`ds` with `x` re-encoded from `meta["texts"]` by a Hugging Face tokenizer."""
    texts = ds.meta.get("texts")
    if texts is None or len(texts) != len(ds):
        raise DataError(f"text dataset '{ds.name}' has no raw texts to encode with the Hugging Face model's "
                        f"tokenizer")
    x = encode_texts(tokenizer, list(texts), max_len)
    meta = {**ds.meta, "tokenizer": {"type": "hf", "source": source, "class": type(tokenizer).__name__,
                                     "vocab_size": len(tokenizer), "max_len": int(x.shape[1]),
                                     "pad_id": _pad_id(tokenizer)}}
    return Dataset(name=ds.name, x=x, y=ds.y, kind="text", classes=ds.classes, sensitive=ds.sensitive,
                   source=ds.source, meta=meta, notices=ds.notices)


def folder_sha256(path: Path) -> str:
    """SHA-256 over the folder's config and weight files (names and contents, sorted)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def config_classes(path: str | Path) -> list[str] | None:
    """The class names of a Hugging Face model folder's `config.json` (`id2label`, in
    index order), read without transformers; None when absent, unreadable or only the
    default LABEL_0, LABEL_1, ... names (which say nothing about the classes)."""
    import json

    try:
        config = json.loads((Path(path) / "config.json").read_text())
        id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not id2label or sorted(id2label) != list(range(len(id2label))):
        return None
    names = [id2label[i] for i in range(len(id2label))]
    if names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return names


def _classes(config: Any, declared: list[str] | None) -> list[str]:
    if declared:
        return list(declared)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [id2label.get(i, str(i)) for i in range(int(config.num_labels))]


def hf_task(path: str | Path, spec: AuditSpec) -> str:
    """The task of a Hugging Face folder: the spec's `task:`, which must agree with the
    config's architecture when it names one; else the config's; else classification."""
    named = config_task(path)
    if spec.task and named and spec.task != named:
        raise ModelError(f"the spec declares `task: {spec.task}` but the model at {path} is a {named} model "
                         f"(config.json architectures)", where="task")
    return spec.task or named or "classification"


def load_hf_model(path: str | Path, spec: AuditSpec) -> LoadedModel:
    """A local Hugging Face sequence- or token-classification model, wrapped to take token ids."""
    path = Path(path)
    tf = _transformers()
    task = hf_task(path, spec)
    auto = tf.AutoModelForTokenClassification if task == "token-classification" else \
        tf.AutoModelForSequenceClassification
    wrapper = HFTokenClassifier if task == "token-classification" else HFSequenceClassifier
    try:
        model = auto.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load a {task} model from {path}: "
                         f"{str(exc).splitlines()[0]}", where="model.path") from None
    model = model.float().eval()  # half-precision checkpoints: the context picks precision
    tokenizer = load_tokenizer(str(path.resolve()))
    config = model.config
    declared = spec.model.classes
    if declared and len(declared) != int(config.num_labels):
        raise ModelError(f"model.classes names {len(declared)} classes but the model has {config.num_labels} labels",
                         where="model.classes")
    pad = _pad_id(tokenizer)

    def factory() -> nn.Module:
        return wrapper(auto.from_config(config).float(), pad)

    loaded = LoadedModel(module=wrapper(model, pad), sha256=folder_sha256(path),
                         source=f"Hugging Face {config.model_type} model at {path}",
                         architecture=f"{type(model).__name__} (Hugging Face)",
                         input_range=None, classes=_classes(config, declared), factory=factory, task=task)
    return loaded


def inspect_hf_model(path: Path, spec: AuditSpec) -> str:
    """`audit validate`'s look at a Hugging Face folder: its config reads, it names a
    sequence classifier whose label count fits `model.classes`, weights are there, and
    transformers is installed. Nothing is loaded or executed."""
    import json

    where = "model.path"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path / 'config.json'}: {exc}", where=where) from None
    if not isinstance(config, dict):
        raise ModelError(f"{path / 'config.json'} is not a JSON object", where=where)
    n_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    declared = spec.model.classes
    if declared and len(declared) != n_labels:
        raise ModelError(f"model.classes names {len(declared)} classes but the model has {n_labels} labels",
                         where="model.classes")
    weights = [p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not weights:
        raise ModelError(f"{path} has a config.json but no weights (.safetensors or .bin)", where=where)
    _transformers()
    names = declared or config_classes(path)
    labels = f"{n_labels} labels" + (f": {', '.join(names)}" if names else " (default names LABEL_i)")
    task = hf_task(path, spec)
    return (f"Hugging Face {config.get('model_type', '?')} {task} folder {path} ({labels}), loaded offline with its "
            f"tokenizer, no remote code")
