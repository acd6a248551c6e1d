"""Token classification (named-entity recognition) end to end: the `ner-bert` fixture on
the generated `ner` data through the demo spec, entity metrics equal to seqeval's,
calibration, cross-domain drop, attributions and text robustness in the results; a
planted alignment bug and a planted invalid-IOB file are caught; bad token files stop
with exit 2 and one message naming the file and line."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from audit.cli import main
from audit.context import Context
from audit.dataset import LoadedModel
from audit.errors import DataError, SpecError
from audit.runner import Runner
from audit.spec import load_spec, parse_spec
from audit.tokens import infer_scheme, invalid_iob, tag_names

seqeval_metrics = pytest.importorskip("seqeval.metrics")
pytest.importorskip("transformers")


def _demo_raw() -> dict:
    with resources.as_file(resources.files("fixtures") / "demo_ner.yaml") as p:
        return yaml.safe_load(p.read_text())


@pytest.fixture(scope="module")
def ner_audit(audit_cache_dir: Path) -> tuple[dict, Runner]:
    """The demo spec as shipped, with fewer explained and perturbed samples (CI time)."""
    raw = _demo_raw()
    for c in raw["checks"]:
        if c["check"] == "explain.attribution":
            c["n_samples"] = 8
        if c["check"] == "robustness.text":
            c["n_samples"] = 150
    spec = parse_spec(raw)
    runner = Runner(spec)
    runner.prepare()
    for entry in spec.checks:
        runner.run_check(entry)
    return runner.finish().to_json(), runner


def _check(results: dict, cid: str) -> dict:
    return next(c for c in results["checks"] if c["id"] == cid)


def test_entity_metrics_equal_seqeval(ner_audit: tuple[dict, Runner]) -> None:
    results, runner = ner_audit
    ctx = runner.ctx
    ds = ctx.dataset("test")
    pred = ctx.predictions("test")
    y_true = [tag_names(r, ds.classes) for r in ds.y]
    y_pred = [tag_names(r, ds.classes) for r in pred]
    m = _check(results, "entities")["metrics"]
    sm = seqeval_metrics
    assert m["entity_f1"]["value"] == pytest.approx(sm.f1_score(y_true, y_pred), abs=1e-12)
    assert m["entity_precision"]["value"] == pytest.approx(sm.precision_score(y_true, y_pred), abs=1e-12)
    assert m["entity_recall"]["value"] == pytest.approx(sm.recall_score(y_true, y_pred), abs=1e-12)
    assert m["entity_f1_macro"]["value"] == pytest.approx(sm.f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert m["token_accuracy"]["value"] == pytest.approx(sm.accuracy_score(y_true, y_pred), abs=1e-12)
    report = sm.classification_report(y_true, y_pred, output_dict=True)
    per_type = next(e for e in _check(results, "entities")["evidence"] if e["title"] == "Per entity type")
    for row in per_type["rows"]:
        ref = report[row[0]]
        assert row[1] == ref["support"]
        assert row[4]["value"] == pytest.approx(ref["precision"])
        assert row[5]["value"] == pytest.approx(ref["recall"])
        assert row[6]["value"] == pytest.approx(ref["f1-score"])
    for name in ("entity_f1", "entity_precision", "entity_recall"):
        lo, hi = m[name]["ci"]
        assert lo < m[name]["value"] < hi and m[name]["n"] == len(ds)
    # predictions are the first sub-token's
    sub = ctx.sub_token_logits("test")
    i, w = 3, 0
    assert pred[i, w] == sub[i, ds.word_starts[i, w]].argmax()


def test_demo_measures_every_area_and_records_the_task(ner_audit: tuple[dict, Runner]) -> None:
    results, _ = ner_audit
    assert results["provenance"]["task"] == "token-classification"
    assert results["datasets"]["test"]["kind"] == "tokens" and results["datasets"]["test"]["tokenizer_summary"]
    assert 0.6 < _check(results, "entities")["metrics"]["entity_f1"]["value"] < 0.95
    assert _check(results, "calibration")["metrics"]["ece"]["value"] < 0.2
    drop = _check(results, "cross-domain")
    assert drop["metrics"]["max_drop"]["ci"][0] > 0.1  # chat messages: a real, certain drop
    assert {r[0] for r in drop["evidence"][0]["rows"]} == {"test", "chat", "typos"}
    attr = _check(results, "attributions")
    assert attr["status"] != "error", attr["message"]
    highlighted = next(e for e in attr["evidence"] if e["type"] == "tokens")
    assert highlighted["rows"] and "explaining" in highlighted["rows"][0]["label"]
    assert attr["metrics"]["randomization_similarity"]["value"] < 0.5
    rob = _check(results, "perturbations")
    flips = {r[0]: r[4]["value"] for r in rob["evidence"][1]["rows"]}
    assert {"typos", "case", "entity_swap"} <= set(flips) and all(0 <= v <= 1 for v in flips.values())
    assert rob["metrics"]["flip_rate"]["value"] == pytest.approx(max(flips.values()))
    fair = _check(results, "fairness")
    assert "entity_f1_difference" in fair["metrics"]
    integrity = _check(results, "data")
    assert integrity["metrics"]["invalid_iob_fraction"]["value"] == 0.0


def test_the_report_draws_token_attributions(ner_audit: tuple[dict, Runner]) -> None:
    from reports import render_html

    results, _ = ner_audit
    html = render_html(results)
    assert 'class="tok"' in html and "background-color: rgba(213, 94, 0" in html
    assert "first sub-token" in html  # the convention is said in the report


class _ShiftedByOne(torch.nn.Module):
    """A token classifier trained with its labels one sub-token late: the tag of a word
    comes out at the sub-token after its first."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.roll(self.inner(ids), shifts=1, dims=1)


def test_a_planted_alignment_bug_stops_the_audit(ner_audit: tuple[dict, Runner]) -> None:
    _, runner = ner_audit
    ds = runner.ctx.dataset("test")
    good = runner.ctx.model
    bad = LoadedModel(module=_ShiftedByOne(good.module), sha256="0" * 64, source="shifted", architecture="shifted",
                      classes=list(ds.classes), task="token-classification")
    spec = parse_spec({"name": "shifted", "device": "cpu", "model": {"fixture": "in-memory"},
                       "data": {"test": {"fixture": "in-memory"}},
                       "checks": [{"id": "ner", "check": "performance.token_classification"}]})
    ctx = Context.from_objects({"test": ds}, bad, device="cpu")
    with pytest.raises(DataError, match="shifted by one sub-token") as err:
        Runner(spec, context=ctx).prepare()
    assert "one sub-token later" in str(err.value) and "first sub-token" in str(err.value)
    # the same data with the right model passes the alignment test
    Runner(spec, context=Context.from_objects({"test": ds}, good, device="cpu")).prepare()


BAD_IOB = """\
-DOCSTART- -X- O O

John B-PER
Smith I-PER
visited O
Paris B-LOC

The O
mayor O
Smith I-PER
spoke O
"""


def test_a_planted_invalid_iob_file_is_reported_by_data_integrity(tmp_path: Path) -> None:
    (tmp_path / "test.conll").write_text(BAD_IOB)
    spec = tmp_path / "audit_iob.yaml"
    spec.write_text("""\
name: IOB
device: cpu
model: {fixture: ner-bert}
data:
  test: {path: test.conll}
checks:
  - {id: data, check: data.integrity, resamples: 200, thresholds: {invalid_iob_fraction: {max: 0.01}}}
""")
    runner = Runner(load_spec(spec))
    runner.prepare()
    res = runner.run_check(runner.spec.checks[0])
    assert res.status == "fail" and res.metrics["invalid_iob_fraction"]["value"] == 0.5
    flag = res.flags[0]
    assert flag["flag"] == "invalid_iob"
    assert "line 10" in flag["detail"] and "'I-PER' after 'O'" in flag["detail"] and "test.conll" in flag["detail"]
    assert any("break the IOB2 scheme" in n for n in runner.ctx.dataset("test").notices)


def test_iob_schemes() -> None:
    iob2 = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    iob1 = [["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "B-ORG"]]
    assert infer_scheme(iob2) == "IOB2" and infer_scheme(iob1) == "IOB1"
    assert invalid_iob(iob2, "IOB2") == [] and invalid_iob(iob1, "IOB1") == []
    bad = invalid_iob([["O", "I-PER", "B-LOC", "I-ORG"]], "IOB2")
    assert [(b.word, b.tag, b.previous) for b in bad] == [(1, "I-PER", "O"), (3, "I-ORG", "B-LOC")]


@pytest.mark.parametrize("name,content,message", [
    ("no_tag.conll", "John B-PER\nSmith\nvisited O\n", r"test\.conll|no_tag\.conll.*line 2: 'Smith' has no tag"),
    ("empty.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": [], "tags": []}\n', r"line 2: an empty sentence"),
    ("unknown.conll", "John B-PER\nvisited O\nMonday B-DATE\n",
     r"tag 'B-DATE' \(line 3\) is not among the classes in id2label \(O, B-PER.*the data's tags: B-DATE, B-PER, O"),
    ("mismatch.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', r"line 1: 2 tokens but 1 tags"),
])
def test_bad_token_files_exit_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    spec = tmp_path / "audit_bad.yaml"
    spec.write_text(f"name: bad\ndevice: cpu\nmodel: {{fixture: ner-bert}}\ndata:\n  test: {{path: {name}}}\n"
                    f"checks:\n  - {{id: ner, check: performance.token_classification}}\n")
    for cmd in ("validate", "run"):
        code = main([cmd, str(spec), "--quiet"] if cmd == "run" else [cmd, str(spec)])
        out = capsys.readouterr()
        text = out.out + out.err
        assert code == 2, text
        assert "Traceback" not in text and name in text
        assert __import__("re").search(message, text.replace("\n", " ")), text


def test_unknown_perturbation_is_a_spec_error_with_a_suggestion() -> None:
    raw = _demo_raw()
    raw["checks"] = [{"id": "rob", "check": "robustness.text", "perturbations": ["typo", "case"]}]
    with pytest.raises(SpecError, match=r"unknown perturbation 'typo'. Did you mean 'typos'"):
        parse_spec(raw)


def test_conll_fixture_round_trip_reads_like_a_users_file(tmp_path: Path) -> None:
    from audit.data import load_dataset
    from fixtures.ner import load_ner, write_conll

    write_conll("test-chat", tmp_path / "chat.conll")
    spec = parse_spec({"name": "conll", "model": {"fixture": "ner-bert"},
                       "data": {"test": {"path": str(tmp_path / "chat.conll"), "sensitive": ["name_origin"]}},
                       "checks": []}, check_registry=False)
    ds = load_dataset(spec, "test", get_dataset=lambda n: None)
    ref = load_ner("test-chat")
    assert ds.kind == "tokens" and np.array_equal(ds.y, ref.y) and ds.meta["words"] == ref.meta["words"]
    assert list(ds.sensitive["name_origin"]) == list(ref.sensitive["name_origin"])
    assert ds.meta["tag_scheme"] == {"scheme": "IOB2", "declared": False, "invalid": 0, "invalid_sentences": 0}
    assert (ds.word_starts[ds.y >= 0] > 0).all()  # after [CLS]; every word has a first sub-token
    assert json.dumps(ds.describe())  # JSON-ready


def test_span_extraction_equals_seqeval_on_every_scheme() -> None:
    from seqeval.metrics.sequence_labeling import get_entities

    from audit.tokens import spans

    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "I-MISC"]
    for _ in range(3000):
        seq = [tags[i] for i in rng.integers(0, len(tags), rng.integers(1, 12))]
        assert spans(seq) == [(t, a, b) for t, a, b in get_entities(seq)], seq
