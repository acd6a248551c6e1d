"""Hugging Face sequence classifiers from a local model folder, offline.

`model.path` pointing at a folder with a `config.json` loads
`AutoModelForSequenceClassification` and `AutoTokenizer` from that folder only
(`local_files_only`, `HF_HUB_OFFLINE`; no remote code). `transformers` is an optional
extra: `pip install 'audit-suite[hf]'`.

Tokenization: a text dataset carries its raw strings in `meta["texts"]` (see
`audit.text`). When the audited model is a Hugging Face model, every text dataset is
re-encoded with the model's own tokenizer (`tokenize_for_model`, called by the data
loader): `x` becomes its int64 token ids, right-padded with its pad id to the longest
encoded row (at most the model's maximum length), and `meta["tokenizer"]` says so. The
model is wrapped (`HFSequenceClassifier`) so that, like every model in the suite, it
takes an int64 (N, L) tensor and returns logits; the attention mask is derived from the
pad id inside the wrapper.
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
                         "pip install 'audit-suite[hf]'", where="model.path") from None
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


def encode_texts(tokenizer: Any, texts: list[str], max_len: int | None = None) -> np.ndarray:
    """int64 (N, L) ids, right-padded with the pad id; L = longest row, capped at `max_len`."""
    limit = min(int(getattr(tokenizer, "model_max_length", _MAX_LEN_CAP) or _MAX_LEN_CAP), _MAX_LEN_CAP)
    if max_len is not None:
        limit = min(limit, max_len)
    enc = tokenizer(list(texts), truncation=True, max_length=limit, padding=False)["input_ids"]
    width = max((len(r) for r in enc), default=1)
    out = np.full((len(enc), max(width, 1)), _pad_id(tokenizer), dtype=np.int64)
    for i, row in enumerate(enc):
        out[i, : len(row)] = row
    return out


def encode_dataset(ds: Dataset, tokenizer: Any, source: str, max_len: int | None = None) -> Dataset:
    """`ds` with `x` re-encoded from `meta["texts"]` by a Hugging Face tokenizer."""
    texts = ds.meta.get("texts")
    if texts is None or len(texts) != len(ds):
        raise DataError(f"text dataset '{ds.name}' carries no raw texts (meta['texts']) to encode with the "
                        f"Hugging Face model's tokenizer")
    x = encode_texts(tokenizer, list(texts), max_len)
    meta = {**ds.meta, "tokenizer": {"type": "hf", "source": source, "class": type(tokenizer).__name__,
                                     "vocab_size": len(tokenizer), "max_len": int(x.shape[1]),
                                     "pad_id": _pad_id(tokenizer)}}
    return Dataset(name=ds.name, x=x, y=ds.y, kind="text", classes=ds.classes, sensitive=ds.sensitive,
                   source=ds.source, meta=meta, notices=ds.notices)


def tokenize_for_model(spec: AuditSpec, ds: Dataset) -> Dataset:
    """Re-encode a text dataset with the audited model's tokenizer when that model is a
    Hugging Face folder; other datasets and models pass through unchanged."""
    path = spec.model.path
    if ds.kind != "text" or not path or not is_hf_model_dir(spec.resolve(path)):
        return ds
    resolved = str(spec.resolve(path).resolve())
    return encode_dataset(ds, load_tokenizer(resolved), source=resolved)


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


def load_hf_model(path: str | Path, spec: AuditSpec) -> LoadedModel:
    """A local Hugging Face sequence-classification model, wrapped to take token ids."""
    path = Path(path)
    tf = _transformers()
    try:
        model = tf.AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load a sequence-classification model from {path}: "
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
        return HFSequenceClassifier(tf.AutoModelForSequenceClassification.from_config(config).float(), pad)

    loaded = LoadedModel(module=HFSequenceClassifier(model, pad), sha256=folder_sha256(path),
                         source=f"Hugging Face {config.model_type} model at {path}",
                         architecture=f"{type(model).__name__} (Hugging Face)",
                         input_range=None, classes=_classes(config, declared), factory=factory)
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
    return (f"Hugging Face {config.get('model_type', '?')} folder {path} ({labels}), loaded offline with its "
            f"tokenizer, no remote code")
