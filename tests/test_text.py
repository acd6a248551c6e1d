"""Text: the word tokenizer, the generated `reviews` fixture, the `text-transformer`
reference model audited end to end (in-domain accuracy, drop on the other domain), and a
tiny Hugging Face model loaded offline from a local folder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from audit.errors import ModelError
from audit.runner import run_audit
from audit.spec import load_spec
from audit.text import PAD_ID, UNK_ID, WordTokenizer, split_words
from fixtures.text import SPLITS, generate, load_reviews, tokenizer


def test_word_tokenizer_roundtrip() -> None:
    tok = WordTokenizer.build(["The plot was dull.", "the ENDING was great", "great great"], max_len=5)
    assert tok.vocab[:3] == ("<pad>", "<unk>", "great")  # most frequent first, ties alphabetical
    assert tok.vocab[3:5] == ("the", "was")
    ids = tok.encode(["the plot was superb . truly", ""])
    assert ids.dtype == np.int64 and ids.shape == (2, 5)
    assert tok.decode(ids[0]) == ["the", "plot", "was", "<unk>", "."]  # truncated to 5
    assert ids[0, 3] == UNK_ID and (ids[1] == PAD_ID).all()
    assert WordTokenizer.from_json(tok.to_json()) == tok
    assert split_words("It's well-written!") == ["it's", "well-written", "!"]
    with pytest.raises(ValueError):
        WordTokenizer(vocab=("a", "b"), max_len=3)


def test_reviews_fixture_is_deterministic_and_shares_one_vocabulary() -> None:
    from fixtures.datasets import load_fixture_dataset

    a, b = load_reviews("train"), load_fixture_dataset("reviews", "train")
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.meta["texts"] == b.meta["texts"]
    assert a.kind == "text" and a.x.dtype == np.int64 and a.classes == ["negative", "positive"]
    texts, y = generate("books", 50, seed=7)
    assert (texts, y.tolist()) == (generate("books", 50, seed=7)[0], generate("books", 50, seed=7)[1].tolist())
    for split, (domain, n) in SPLITS.items():
        ds = load_reviews(split)
        assert len(ds) == n and np.bincount(ds.y).tolist() == [n // 2, n // 2]
        assert ds.meta["tokenizer"] == tokenizer().to_json() and ds.meta["domain"] == domain
        assert np.array_equal(ds.x, tokenizer().encode(ds.meta["texts"]))
        assert (ds.x[:, 0] != PAD_ID).all()  # no empty review
    # the other domain's sentiment vocabulary is unknown to the books tokenizer
    unk = {s: float((x == UNK_ID).sum() / (x != PAD_ID).sum()) for s, x in
           (("test", load_reviews("test").x), ("test-electronics", load_reviews("test-electronics").x))}
    assert unk["test"] == 0.0 and unk["test-electronics"] > 0.15


REVIEWS_SPEC = """\
name: Text Transformer audit
seed: 0
device: cpu
model: {fixture: text-transformer}
data:
  train: {fixture: reviews, split: train}
  test: {fixture: reviews, split: test}
  domains:
    electronics: {fixture: reviews, split: test-electronics}
checks:
  - {id: heldout, check: performance.classification, thresholds: {accuracy: {min: 0.85}}}
  - {id: domains, check: shift.domain, thresholds: {max_drop: {max: 0.05}}}
  - {id: repro, check: training.reproducibility, thresholds: {prediction_agreement: {min: 0.99}}}
  - {id: int8, check: efficiency.quantization, repeats: 5}
"""


@pytest.fixture(scope="module")
def reviews_audit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("reviews") / "audit_reviews.yaml"
    path.write_text(REVIEWS_SPEC)
    return run_audit(load_spec(path)).to_json()


def _check(results: dict, cid: str) -> dict:
    return next(c for c in results["checks"] if c["id"] == cid)


def test_text_transformer_in_domain_accuracy_and_domain_drop(reviews_audit: dict, audit_cache_dir: Path) -> None:
    from fixtures.models import accuracy, load_fixture_model

    heldout = _check(reviews_audit, "heldout")
    acc = heldout["metrics"]["accuracy"]
    assert heldout["status"] == "pass" and acc["ci"][0] >= 0.85, heldout["message"]
    # the drop on electronics reviews is large and certain: shift.domain fails its limit
    domains = _check(reviews_audit, "domains")
    drop = domains["metrics"]["max_drop"]
    assert domains["status"] == "fail" and drop["value"] > 0.15 and drop["ci"][0] > 0.1
    model = load_fixture_model("text-transformer")
    acc_in, acc_out = accuracy(model.module, load_reviews("test")), accuracy(model.module, load_reviews("test-electronics"))
    assert acc["value"] == pytest.approx(acc_in)
    assert drop["value"] == pytest.approx(acc_in - acc_out)
    assert _check(reviews_audit, "repro")["status"] == "pass"
    int8 = _check(reviews_audit, "int8")
    assert int8["status"] == "info" and abs(int8["metrics"]["accuracy_drop"]["value"]) < 0.05
    assert reviews_audit["model"]["architecture"] == "text_transformer"


# ---- Hugging Face ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT classifier and a word-piece vocabulary, written like any local
    Hugging Face model folder (config.json, model.safetensors, tokenizer files)."""
    tf = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = [w for w in tokenizer().vocab[2:] if w.isalpha()]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tf.BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=128, num_labels=2,
                           id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    tf.BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


def test_hf_model_loads_offline_and_matches_transformers(tiny_bert: Path, tmp_path: Path) -> None:
    import transformers as tf

    spec = tmp_path / "audit_hf.yaml"
    spec.write_text(f"""\
name: HF audit
device: cpu
model: {{path: {tiny_bert}}}
data:
  test: {{fixture: reviews, split: test}}
checks:
  - {{id: heldout, check: performance.classification}}
  - {{id: repro, check: training.reproducibility, n_samples: 64, thresholds: {{prediction_agreement: {{min: 0.9}}}}}}
""")
    from audit.runner import Runner

    runner = Runner(load_spec(spec))
    runner.prepare()
    ctx = runner.ctx
    assert ctx.model.classes == ["negative", "positive"] and "Hugging Face" in ctx.model.source
    ds = ctx.dataset("test")
    # the text was re-encoded with the model's own tokenizer: [CLS] ... [SEP], padded with [PAD]
    assert ds.meta["tokenizer"]["type"] == "hf" and ds.x.dtype == np.int64
    ref_tok = tf.AutoTokenizer.from_pretrained(str(tiny_bert), local_files_only=True)
    enc = ref_tok(ds.meta["texts"][:8], padding="max_length", max_length=ds.x.shape[1], return_tensors="pt")
    assert np.array_equal(ds.x[:8], enc["input_ids"].numpy())
    # the wrapped model gives transformers' own logits
    ref = tf.AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), local_files_only=True).eval()
    with torch.inference_mode():
        expected = ref(**enc).logits.numpy()
    assert np.allclose(ctx.logits("test")[:8], expected, atol=1e-5)
    for entry in runner.spec.checks:
        runner.run_check(entry)
    results = runner.finish().to_json()
    heldout = _check(results, "heldout")
    assert heldout["status"] == "info"  # no thresholds: reported, not judged
    assert heldout["metrics"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(ds.y, ctx.logits("test").argmax(1)))
    assert _check(results, "repro")["status"] == "pass"
    assert results["provenance"]["model_sha256"] == ctx.model.sha256 and len(ctx.model.sha256) == 64
    assert "BertForSequenceClassification" in results["model"]["architecture"]


def test_hf_without_transformers_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from audit import hf

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r"audit-suite\[hf\]"):
        hf._transformers()
    (tmp_path / "config.json").write_text("{}")
    assert hf.is_hf_model_dir(tmp_path) and not hf.is_hf_model_dir(tmp_path / "config.json")


# ---- text as users have it: raw text files, the model's own tokenizer -------------------------
def _reviews_csv(path: Path, split: str = "test", n: int | None = None) -> Path:
    import pandas as pd

    ds = load_reviews(split)
    texts = ds.meta["texts"][:n] if n else ds.meta["texts"]
    labels = [ds.classes[int(c)] for c in ds.y[: len(texts)]]
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(path, index=False)
    return path


def test_hf_folder_on_a_csv_of_raw_text_matches_transformers(tmp_path: Path, audit_cache_dir: Path) -> None:
    """A new user's audit: a local Hugging Face sentiment model folder and a CSV with a raw
    text column and string labels."""
    tf = pytest.importorskip("transformers")
    from fixtures.hf_models import cached_folder
    from reports import render_html

    folder = cached_folder("reviews-bert")
    _reviews_csv(tmp_path / "test.csv", n=400)
    spec = tmp_path / "audit_csv.yaml"
    spec.write_text(f"name: CSV\ndevice: cpu\nmodel: {{path: {folder}}}\n"
                    f"data:\n  test: {{path: test.csv, text: review, label: sentiment}}\n"
                    f"checks:\n  - {{id: heldout, check: performance.classification, resamples: 200, "
                    f"weight_resamples: 200}}\n")
    results = run_audit(load_spec(spec)).to_json()
    heldout = _check(results, "heldout")
    import pandas as pd

    df = pd.read_csv(tmp_path / "test.csv")
    tok = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = tf.AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    preds = []
    with torch.inference_mode():
        for s in range(0, len(df), 64):
            enc = tok(list(df.review[s:s + 64]), padding=True, truncation=True, return_tensors="pt")
            preds.append(model(**enc).logits.argmax(-1).numpy())
    names = [model.config.id2label[int(p)] for p in np.concatenate(preds)]
    expected = float(np.mean(np.array(names) == df.sentiment.to_numpy()))
    assert abs(heldout["metrics"]["accuracy"]["value"] - expected) <= 1e-6
    assert expected > 0.8
    assert results["provenance"]["task"] == "classification"
    ds = results["datasets"]["test"]
    assert ds["kind"] == "text" and ds["tokenizer_summary"]["type"] == "hf" and ds["examples"]
    html = render_html(results)
    examples = next(e for e in heldout["evidence"] if e["title"] == "Example texts")
    shown = examples["rows"][0][2]
    from html import escape

    assert escape(shown[:60]) in html and escape(ds["examples"][0]["text"][:60]) in html


def test_our_text_model_reads_a_csv_with_its_saved_tokenizer(tmp_path: Path, audit_cache_dir: Path) -> None:
    from audit.runner import Runner
    from fixtures.models import accuracy, load_fixture_model

    _reviews_csv(tmp_path / "test.csv")
    spec = tmp_path / "audit_own.yaml"
    spec.write_text("name: own\ndevice: cpu\nmodel: {fixture: text-transformer}\n"
                    "data:\n  test: {path: test.csv, text: review, label: sentiment}\n"
                    "checks:\n  - {id: heldout, check: performance.classification, resamples: 200, "
                    "weight_resamples: 200}\n")
    runner = Runner(load_spec(spec))
    runner.prepare()
    ds = runner.ctx.dataset("test")
    assert np.array_equal(ds.x, load_reviews("test").x)  # the tokenizer saved with the model's recipe
    res = runner.run_check(runner.spec.checks[0])
    assert res.metrics["accuracy"]["value"] == pytest.approx(
        accuracy(load_fixture_model("text-transformer").module, load_reviews("test")))


def test_truncation_is_recorded(tmp_path: Path, audit_cache_dir: Path) -> None:
    import pandas as pd

    from audit.data import load_dataset

    long = " ".join(["the plot was gripping"] * 40)
    pd.DataFrame({"review": ["a dull read", long], "label": ["negative", "positive"]}).to_csv(
        tmp_path / "t.csv", index=False)
    spec = load_spec_text(tmp_path, "model: {fixture: text-transformer}\ndata:\n  test: {path: t.csv, text: review}\n")
    ds = load_dataset(spec, "test", get_dataset=lambda n: None)
    assert ds.meta["truncation"] == {"rows": 1, "of": 2, "tokens_lost": 160 - 48, "max_len": 48}
    assert any("1 of 2 rows are longer than the model's 48 tokens" in n for n in ds.notices)


def load_spec_text(folder: Path, body: str):
    p = folder / "audit_t.yaml"
    p.write_text("name: t\ndevice: cpu\n" + body + "checks: []\n")
    return load_spec(p)


@pytest.mark.parametrize("csv,entry,message", [
    ("review,label\ngood,positive\n", "{path: t.csv, text: text_col}",
     r"text column 'text_col' not found \(columns: review, label\)"),
    ("review,label\ngood,positive\nbad,neutral\n", "{path: t.csv, text: review}",
     r"label 'neutral' \(line 3\) is not among the classes in .*negative, positive.*the data's labels: neutral, positive"),
    ("review,label\ngood,positive\n   ,negative\n", "{path: t.csv, text: review}", r"line 3: (empty|no) text in column 'review'"),
])
def test_bad_text_files_exit_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], csv: str,
                                                    entry: str, message: str) -> None:
    import re

    from audit.cli import main

    (tmp_path / "t.csv").write_text(csv)
    spec = tmp_path / "audit_bad.yaml"
    spec.write_text(f"name: bad\ndevice: cpu\nmodel: {{fixture: text-transformer}}\ndata:\n  test: {entry}\n"
                    f"checks:\n  - {{id: heldout, check: performance.classification}}\n")
    code = main(["validate", str(spec)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2 and "Traceback" not in text and "t.csv" in text, text
    assert re.search(message, text.replace("\n", " ")), text


def test_parquet_and_jsonl_read_like_csv(tmp_path: Path, audit_cache_dir: Path) -> None:
    import json

    import pandas as pd

    from audit.data import load_dataset

    ds = load_reviews("test")
    texts, labels = ds.meta["texts"][:50], [ds.classes[int(c)] for c in ds.y[:50]]
    pd.DataFrame({"review": texts, "sentiment": labels, "site": ["a", "b"] * 25}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"review": t, "sentiment": s, "site": g}) + "\n"
                                              for t, s, g in zip(texts, labels, ["a", "b"] * 25)))
    got = []
    for name in ("t.parquet", "t.jsonl"):
        spec = load_spec_text(tmp_path, "model: {fixture: text-transformer}\ndata:\n"
                                        f"  test: {{path: {name}, text: review, label: sentiment, sensitive: [site]}}\n")
        got.append(load_dataset(spec, "test", get_dataset=lambda n: None))
    for d in got:
        assert d.kind == "text" and np.array_equal(d.x, ds.x[:50]) and np.array_equal(d.y, ds.y[:50])
        assert list(d.sensitive["site"][:2]) == ["a", "b"]


def test_pre_tokenized_npz_with_an_hf_model_is_used_as_given(tmp_path: Path, audit_cache_dir: Path) -> None:
    pytest.importorskip("transformers")
    from audit.data import load_dataset
    from audit.errors import DataError
    from fixtures.hf_models import cached_folder

    folder = cached_folder("reviews-bert")
    ids = np.array([[2, 40, 41, 3, 0], [2, 50, 3, 0, 0]], dtype=np.int64)
    np.savez(tmp_path / "ids.npz", x=ids, y=np.array([0, 1]))
    spec = load_spec_text(tmp_path, f"model: {{path: {folder}}}\ndata:\n  test: {{path: ids.npz, kind: text}}\n")
    ds = load_dataset(spec, "test", get_dataset=lambda n: None)
    assert np.array_equal(ds.x, ids) and any("token ids used as given" in n for n in ds.notices)
    np.savez(tmp_path / "ids.npz", x=ids + 10_000, y=np.array([0, 1]))
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        load_dataset(spec, "test", get_dataset=lambda n: None)


def test_text_attributions_ig_and_shap_text(audit_cache_dir: Path) -> None:
    """explain.attribution on text: integrated gradients on the embedding layer, and SHAP's
    text explainer (its values line up with the model's own sub-tokens)."""
    pytest.importorskip("transformers")
    from audit.spec import parse_spec

    spec = parse_spec({"name": "attr", "device": "cpu", "model": {"fixture": "reviews-bert"},
                       "data": {"test": {"fixture": "reviews", "split": "test"}},
                       "checks": [{"id": "ig", "check": "explain.attribution", "n_samples": 8,
                                   "randomization_steps": 2},
                                  {"id": "shap", "check": "explain.attribution", "method": "shap_text",
                                   "n_samples": 3, "n_evals": 60, "randomization": False}]})
    results = run_audit(spec).to_json()
    ig, shap = _check(results, "ig"), _check(results, "shap")
    assert ig["status"] == "info" and shap["status"] == "info", (ig["message"], shap["message"])
    assert ig["metrics"]["deletion_faithfulness"]["value"] > 0.2  # better than removing tokens at random
    assert ig["metrics"]["randomization_similarity"]["value"] < 0.5
    for c in (ig, shap):
        rows = next(e for e in c["evidence"] if e["type"] == "tokens")["rows"]
        assert rows and all(len(r["tokens"]) == len(r["scores"]) for r in rows)
        assert "[CLS]" not in rows[0]["tokens"] and any(v != 0 for v in rows[0]["scores"])
    assert "SHAP values" in next(e for e in shap["evidence"] if e["type"] == "tokens")["caption"]
