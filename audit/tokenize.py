"""Tokenization belongs to the model.

`tokenize_for_model`, called by the data loader for every text and token dataset,
encodes it with the audited model's tokenizer: a Hugging Face folder's own tokenizer
(`audit.hf.HFTokenizer`); the word tokenizer saved with our model's recipe (`audit
train`, a built-in fixture); for a model the spec trains, one built from its training
texts (`audit.text.WordTokenizer`). Raw texts (`meta["texts"]`) or words
(`meta["words"]`) are encoded once; truncation at the model's maximum length is recorded
in `meta["truncation"]` (rows, sub-tokens and words lost) and said in a notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audit.text import WordTokenizer, split_words

if TYPE_CHECKING:
    from audit.dataset import Dataset
    from audit.spec import AuditSpec


def model_tokenizer(spec: AuditSpec, ds: Dataset, get_dataset: Any) -> Any:
    """The audited model's tokenizer (an `audit.hf.HFTokenizer` or a `WordTokenizer`), or
    None when the model states none (a factory model over token ids)."""
    import json

    ms = spec.model
    if ms.path:
        path = spec.resolve(ms.path)
        from audit.hf import HFTokenizer, is_hf_model_dir

        if is_hf_model_dir(path):
            return HFTokenizer.from_folder(path)
        if path.suffix.lower() == ".safetensors" and not ms.factory:
            try:
                recipe = json.loads(path.with_suffix(".json").read_text())
            except (OSError, ValueError):
                return None
            tok = recipe.get("tokenizer") if isinstance(recipe, dict) else None
            return WordTokenizer.from_json(tok) if isinstance(tok, dict) and tok.get("type") == "word" else None
        return None
    if ms.fixture:
        from fixtures.models import fixture_tokenizer

        return fixture_tokenizer(ms.fixture)
    if ms.train is not None:
        if ds.name == ms.train.data:
            tok = ds.meta.get("tokenizer")
            if isinstance(tok, dict) and tok.get("type") == "word":
                return WordTokenizer.from_json(tok)
            texts = ds.meta.get("texts")
            if ds.kind != "text" or not texts:
                return None
            longest = max(len(split_words(t)) for t in texts)
            return WordTokenizer.build(texts, max_len=max(1, min(longest, MAX_BUILT_LEN)))
        tok = get_dataset(ms.train.data).meta.get("tokenizer")
        return WordTokenizer.from_json(tok) if isinstance(tok, dict) and tok.get("type") == "word" else None
    return None


MAX_BUILT_LEN = 256  # a word tokenizer built from training texts keeps at most this many tokens


def tokenize_for_model(spec: AuditSpec, ds: Dataset, get_dataset: Any) -> Dataset:
    """`ds` encoded with the audited model's tokenizer (text and token datasets; others
    pass through). Ids already made by that tokenizer are kept; ids without their raw
    texts (a pre-tokenized .npz) are used as given, checked against the vocabulary."""
    import dataclasses

    from audit.errors import DataError

    if ds.kind not in ("text", "tokens"):
        return ds
    tok = model_tokenizer(spec, ds, get_dataset)
    raw = ds.meta.get("texts") if ds.kind == "text" else ds.meta.get("words")
    where = f"dataset '{ds.name}'"
    if tok is None:
        if ds.x.shape[1] == 0:
            what = "raw text" if ds.kind == "text" else "words"
            raise DataError(f"the data are {what}, and the model brings no tokenizer to encode them: use a Hugging "
                            f"Face model folder (its own tokenizer), a model saved by `audit train` (the word "
                            f"tokenizer saved with its recipe), or give token ids in an .npz file with `kind: text`",
                            where=where)
        return ds
    tok_json = tok.to_json()
    if ds.meta.get("tokenizer") == tok_json and ds.x.shape[1] > 0:
        return ds  # already this tokenizer's ids (a built-in fixture)
    if raw is None:
        vocab = len(tok)
        if ds.x.size and int(ds.x.max()) >= vocab:
            raise DataError(f"token id {int(ds.x.max())} is outside the model's vocabulary of {vocab} tokens: the "
                            f"ids must come from the model's own tokenizer ({tok.summary().get('source', 'its recipe')})",
                            where=where)
        notice = (f"dataset '{ds.name}': token ids used as given (no raw texts to encode); they must come from the "
                  f"model's tokenizer ({tok.summary().get('source') or tok.summary()['type']})")
        return dataclasses.replace(ds, notices=[*ds.notices, notice], _sha256=None)
    enc = tok.encode_texts(list(raw)) if ds.kind == "text" else tok.encode_words([list(w) for w in raw])
    meta = {**ds.meta, "tokenizer": tok_json, "tokenizer_summary": tok.summary(),
            "id_to_token": tok.id_to_token(), "special_ids": list(tok.special_ids), "pad_id": int(tok.pad_id)}
    notices = list(ds.notices)
    meta.pop("truncation", None)
    if enc.truncated_rows:
        trunc = {"rows": int(enc.truncated_rows), "of": len(ds), "tokens_lost": int(enc.tokens_lost),
                 "max_len": int(enc.x.shape[1])}
        unit = "rows"
        if ds.kind == "tokens":
            trunc["words_lost"] = int(enc.words_lost)
            unit = "sentences"
        meta["truncation"] = trunc
        lost = f"{enc.tokens_lost} sub-tokens" + (f" ({enc.words_lost} words, which count as predicted O)"
                                                  if ds.kind == "tokens" else "")
        notices.append(f"dataset '{ds.name}': {enc.truncated_rows} of {len(ds)} {unit} are longer than the model's "
                       f"{enc.x.shape[1]} tokens and were truncated: {lost} lost")
    return dataclasses.replace(ds, x=enc.x, word_starts=enc.word_starts if ds.kind == "tokens" else None,
                               meta=meta, notices=notices, _sha256=None)


def tokenizer_from_json(data: Any) -> Any:
    """The tokenizer a dataset's `meta["tokenizer"]` records (the one that made its ids),
    rebuilt: a word tokenizer from its vocabulary, a Hugging Face one from its folder;
    None when the dataset records none."""
    if not isinstance(data, dict):
        return None
    if data.get("type") == "word":
        return WordTokenizer.from_json(data)
    if data.get("type") == "hf" and data.get("source"):
        from audit.hf import HFTokenizer

        return HFTokenizer.from_folder(data["source"])
    return None
