"""The contract every check must meet, as one function (in the spirit of scikit-learn's
`parametrize_with_checks`): tests/test_check_contract.py runs it over every registered
check, built-in or third-party.

For a check class it asserts that:
- its declaration is complete: dotted lowercase name, a known area, known requirements
  and kinds, a summary, and a MetricSpec record with a one-sentence description and
  consistent bounds for every metric;
- its default parameters validate;
- on a small dataset of each kind it declares (image, tabular, text, tokens), run twice through
  the Runner on fresh contexts with the same seed, it gives the same metrics, no error;
- its evidence follows the documented schema (audit/check.py) and every chart renders
  with the report's renderer to an SVG the sanitizer accepts;
- every forward and backward pass it made on any torch module is counted by the Context;
- on a dataset kind it does not declare, it is `skipped` with a reason;
- on image and tabular data whose inputs stream (each dataset's `x` a LazyInputs in two
  shards, sensitive attributes as Categoricals, as the streaming loaders give them), it
  gives the same metrics as in memory, and counts every pass: a check reads streamed
  inputs only through a sample or the Context's summaries, never whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.check import KINDS, REQUIREMENTS, Check, MetricSpec
from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.results import AREA_KEYS
from audit.runner import Runner
from audit.spec import parse_spec

# Parameters that only make a check fast enough to run 6 times in a test. Keys are check
# names; each value must be a valid parameter set of that check.
FAST: dict[str, dict[str, Any]] = {
    "performance.classification": {"resamples": 200, "weight_resamples": 200},
    "performance.calibration": {"weight_resamples": 200},
    "data.integrity": {"resamples": 200},
    "robustness.adversarial": {"n_samples": 24, "steps": 3, "eps": [0.05, 0.1], "noise_draws": 1},
    "shift.corruption": {"n_samples": 24, "severities": [1, 3]},
    "explain.attribution": {"n_samples": 6},
    "efficiency.latency": {"batch_sizes": [1, 8], "warmup": 1, "repeats": 5, "rounds": 2, "pause_s": 0.0},
    "efficiency.quantization": {"repeats": 5, "warmup": 1},
    "training.reproducibility": {"repeats": 1},
    "privacy.membership_inference": {},
    "fairness.group": {"min_group_size": 10},
    "shift.drift": {"current": "shifted", "permutations": 50},
    "efficiency.export": {"exporter": "classic", "repeats": 5, "warmup": 1, "batch_sizes": [1, 8]},
    "efficiency.pruning": {"sparsities": [0.3, 0.6]},
    "performance.token_classification": {"resamples": 200},
    "robustness.text": {"n_samples": 24, "resamples": 200},
}

N, CLASSES = 48, ["a", "b", "c"]
STREAMED_KINDS = ("image", "tabular")  # the kinds whose inputs can stream (audit.lazy)
TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]
# word tokenizer of the tiny text and token data: token id i is the word "w{i}"
VOCAB = ["<pad>", "<unk>", *[f"w{i}" for i in range(2, 100)]]


def _word_tokenizer(max_len: int) -> dict[str, Any]:
    return {"type": "word", "vocab": VOCAB, "max_len": max_len, "pad_id": 0, "unk_id": 1}


def _dataset(kind: str, name: str, seed: int, n: int = N) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    sex = np.where(rng.random(n) < 0.5, "f", "m")
    if kind == "image":
        x = np.clip(rng.random((n, 1, 8, 8)) * 0.5 + y[:, None, None, None] * 0.2, 0, 1).astype(np.float32)
        return Dataset(name, x, y, "image", CLASSES, sensitive={"sex": sex})
    if kind == "tabular":
        x = (rng.normal(size=(n, 5)) + y[:, None]).astype(np.float32)
        x[:, 4] = (rng.random(n) < 0.5).astype(np.float32)  # an indicator column
        return Dataset(name, x, y, "tabular", CLASSES, sensitive={"sex": sex},
                       feature_names=[f"f{i}" for i in range(5)],
                       feature_groups={f"f{i}": [i] for i in range(5)},
                       continuous=np.array([True, True, True, True, False]))
    if kind == "tokens":
        return _token_dataset(name, rng, n, sex)
    x = rng.integers(2, 20, size=(n, 6)).astype(np.int64) + y[:, None] * 20
    return Dataset(name, x, y, "text", CLASSES, sensitive={"sex": sex},
                   meta={"texts": [" ".join(f"w{t}" for t in row) for row in x], "tokenizer": _word_tokenizer(6)})


def _token_dataset(name: str, rng: np.random.Generator, n: int, sex: np.ndarray) -> Dataset:
    """Sentences of 4-6 words tagged IOB2 with entity types A and B; one token per word,
    whose id depends on its tag (so a model can learn them)."""
    width = 6
    y = np.full((n, width), -1, np.int64)
    for i in range(n):
        length = 4 + i % 3
        tags = [0] * length
        start = int(rng.integers(0, length - 1))
        typ = 1 + 2 * int(rng.integers(2))  # B-A or B-B
        tags[start] = typ
        if start + 1 < length and rng.random() < 0.5:
            tags[start + 1] = typ + 1  # I- of the same type
        y[i, :length] = tags
    x = np.where(y >= 0, 2 + np.clip(y, 0, None) * 15 + rng.integers(0, 15, size=y.shape), 0).astype(np.int64)
    starts = np.where(y >= 0, np.arange(width)[None, :], -1).astype(np.int64)
    words = [[f"w{t}" for t in row[row > 0]] for row in x]
    return Dataset(name, x, y, "tokens", list(TAGS), sensitive={"sex": sex}, word_starts=starts,
                   meta={"words": words, "tokenizer": _word_tokenizer(width),
                         "tag_scheme": {"scheme": "IOB2", "declared": True, "invalid": 0}, "invalid_iob": []})


class _TextNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 8)
        self.head = nn.Linear(8, len(CLASSES))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(dim=1))


class _TokenNet(nn.Module):
    """Per-token tags from the token's embedding and its neighbours' (N, L) -> (N, L, K)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 8)
        self.mix = nn.Conv1d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, len(TAGS))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embedding(ids)
        h = h + self.mix(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h)


def _model(kind: str) -> LoadedModel:
    def build() -> nn.Module:
        if kind == "tokens":
            return _TokenNet()
        if kind == "image":
            return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, len(CLASSES)))
        if kind == "tabular":
            return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, len(CLASSES)))
        return _TextNet()

    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = build()
    return LoadedModel(module=module, sha256="0" * 64, source="contract test", architecture=f"tiny {kind} net",
                       input_range=(0.0, 1.0) if kind == "image" else None,
                       classes=list(TAGS if kind == "tokens" else CLASSES), factory=build,
                       task="token-classification" if kind == "tokens" else None)


def _streamed(ds: Dataset) -> Dataset:
    """`ds` as the streaming loaders give it: inputs behind audit.lazy (two shards),
    sensitive attributes as pandas Categoricals."""
    import dataclasses

    import pandas as pd

    from audit.lazy import ArrayInputs

    return dataclasses.replace(ds, x=ArrayInputs(ds.x, ds.kind, shards=2),
                               sensitive={k: pd.Categorical(v) for k, v in ds.sensitive.items()}, _sha256=None)


def _context(kind: str, streamed: bool = False) -> Context:
    datasets = {"train": _dataset(kind, "train", 1), "test": _dataset(kind, "test", 2)}
    domains = {"shifted": _dataset(kind, "shifted", 3)}
    if streamed:
        datasets = {k: _streamed(v) for k, v in datasets.items()}
        domains = {k: _streamed(v) for k, v in domains.items()}
    return Context.from_objects(datasets, _model(kind), domains=domains, device="cpu")


def _spec(cls: type[Check]) -> Any:
    entry = {"id": "contract", "check": cls.name, **FAST.get(cls.name, {})}
    if cls.name == "shift.domain":
        entry["domains"] = ["shifted"]
    return parse_spec({"name": "contract", "seed": 0, "device": "cpu", "model": {"fixture": "in-memory"},
                       "data": {"train": {"fixture": "in-memory"}, "test": {"fixture": "in-memory"}},
                       "domains": {"shifted": {"fixture": "in-memory"}}, "checks": [entry]})


@contextmanager
def _observed_passes() -> Iterator[dict[str, int]]:
    """Samples through the outermost call of any torch module (forward), and gradients
    flowing back through those outputs (backward), seen by global module hooks, plus the
    rows of every ONNX Runtime session run: what the check really ran, to hold against
    what the Context counted. A trace with fake tensors (torch.export, the dynamo ONNX
    exporter) computes nothing and is not a pass."""
    seen = {"forward_samples": 0, "backward_samples": 0}
    depth = [0]

    def tool(module: nn.Module) -> bool:
        # quantization observers are modules that measure weights, not models
        return type(module).__module__.startswith("torch.ao.quantization.")

    def traced(x: torch.Tensor) -> bool:
        return type(x).__name__ in ("FakeTensor", "FunctionalTensor") or (
            x.ndim > 0 and isinstance(x.shape[0], torch.SymInt))

    def pre(module: nn.Module, args: tuple) -> None:
        depth[0] += 1

    def post(module: nn.Module, args: tuple, out: Any) -> None:
        depth[0] -= 1
        if depth[0] == 0 and not tool(module) and args and isinstance(args[0], torch.Tensor) \
                and not traced(args[0]):
            n = int(args[0].shape[0])
            seen["forward_samples"] += n
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(lambda g: seen.__setitem__("backward_samples", seen["backward_samples"] + n))

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    with _observed_onnxruntime(seen):
        try:
            yield seen
        finally:
            h1.remove()
            h2.remove()


@contextmanager
def _observed_onnxruntime(seen: dict[str, int]) -> Iterator[None]:
    try:
        import onnxruntime
    except ImportError:
        yield
        return
    session = onnxruntime.InferenceSession
    original = session.run

    def run(self: Any, output_names: Any, input_feed: dict, *args: Any, **kwargs: Any) -> Any:
        seen["forward_samples"] += int(next(iter(input_feed.values())).shape[0])
        return original(self, output_names, input_feed, *args, **kwargs)

    session.run = run
    try:
        yield
    finally:
        session.run = original


def _assert_evidence(evidence: Any) -> None:
    from reports.charts import render_chart
    from reports.svg import sanitize_svg

    assert isinstance(evidence, (list, tuple))
    for ev in evidence:
        kind = ev.get("type")
        assert isinstance(ev.get("title"), str) and ev["title"], ev
        if kind == "table":
            assert all(isinstance(c, str) for c in ev["columns"])
            for row in ev["rows"]:
                assert len(row) == len(ev["columns"]), (ev["title"], row)
                for c in row:
                    ok = c is None or isinstance(c, (str, int, float, bool)) or (
                        isinstance(c, dict) and set(c) == {"value", "ci"})
                    assert ok, (ev["title"], c)
        elif kind == "text":
            assert isinstance(ev["text"], str) and ev["text"]
        elif kind == "chart":
            svg = render_chart(ev["chart"], ev["data"])
            assert sanitize_svg(svg)  # raises on anything unsafe or malformed
        elif kind == "figure":
            assert sanitize_svg(ev["svg"])
        elif kind == "tokens":  # highlighted text: tokens with a score each
            assert ev["rows"], ev["title"]
            for row in ev["rows"]:
                assert all(isinstance(t, str) for t in row["tokens"]), row
                assert len(row["scores"]) == len(row["tokens"]), row
                assert all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in row["scores"])
        else:
            raise AssertionError(f"unknown evidence type {kind!r} in {ev.get('title')!r}")


def _run(cls: type[Check], kind: str, streamed: bool = False) -> tuple[Any, dict[str, int], dict[str, int]]:
    spec = _spec(cls)
    runner = Runner(spec, context=_context(kind, streamed))
    ctx = runner.ctx
    ctx.logits("test")  # the shared pass every audit makes before its checks
    before = ctx.compute()
    with _observed_passes() as seen:
        result = runner.run_check(spec.checks[0])
    after = ctx.compute()
    counted = {k: after[k] - before[k] for k in after}
    return result, counted, seen


def assert_check_contract(cls: type[Check]) -> None:
    # the declaration
    assert cls.name == cls.name.lower() and "." in cls.name and " " not in cls.name
    assert cls.area in AREA_KEYS, cls.area
    assert set(cls.requires) <= set(REQUIREMENTS) and "data" in cls.requires
    assert cls.kinds and set(cls.kinds) <= set(KINDS)
    assert cls.summary.strip(), "a check needs a one-line summary"
    assert cls.metrics, "a check measures at least one metric"
    for metric, spec in cls.metrics.items():
        assert isinstance(spec, MetricSpec), metric
        assert spec.description.strip().endswith("."), f"{metric}: a one-sentence description"
        lo, hi = spec.bounds
        assert lo is None or hi is None or lo < hi, f"{metric}: bounds {spec.bounds}"
        if spec.proportion:
            assert spec.bounds == (0.0, 1.0), f"{metric}: a proportion lies in [0, 1]"
    cls.Params.model_validate({})  # the defaults validate

    for kind in KINDS:
        first, counted, seen = _run(cls, kind)
        if kind not in cls.kinds:
            assert first.status == "skipped" and first.message, (kind, first.status, first.message)
            continue
        assert first.status not in ("error", "skipped"), f"{cls.name} on {kind}: {first.message}\n{first.traceback}"
        second, _, _ = _run(cls, kind)
        exact = [m for m in first.metrics if not cls.metrics[m].timing]  # timings vary by nature
        assert {m: first.metrics[m] for m in exact} == {m: second.metrics.get(m) for m in exact}, \
            f"{cls.name} on {kind}: not reproducible with the same seed"
        assert set(first.metrics) <= set(cls.metrics), f"undeclared metrics {set(first.metrics) - set(cls.metrics)}"
        for name, m in first.metrics.items():
            if m["ci"] is not None:
                lo, hi = m["ci"]
                assert lo is None or hi is None or lo <= hi + 1e-12, (name, m)
                # a statistical verdict states the sample size it rests on
                assert isinstance(m.get("n"), int) and m["n"] > 0, (name, m)
                if cls.metrics[name].proportion:
                    assert lo is not None and hi is not None and hi > lo, (name, m)
            lo_b, hi_b = cls.metrics[name].bounds
            v = m["value"]
            if v is not None and math.isfinite(v):
                assert lo_b is None or v >= lo_b - 1e-9, (name, v, cls.metrics[name].bounds)
                assert hi_b is None or v <= hi_b + 1e-9, (name, v, cls.metrics[name].bounds)
        _assert_evidence(first.evidence)
        for f in first.flags:
            assert set(f) == {"flag", "detail"} and f["flag"] and f["detail"]
        assert counted == seen, f"{cls.name} on {kind}: counted {counted}, ran {seen}"
        if kind in STREAMED_KINDS:
            lazy, counted, seen = _run(cls, kind, streamed=True)
            assert lazy.status == first.status, \
                f"{cls.name} on streamed {kind}: {lazy.status} ({lazy.message})\n{lazy.traceback}"
            assert {m: first.metrics[m] for m in exact} == {m: lazy.metrics.get(m) for m in exact}, \
                f"{cls.name} on {kind}: streamed inputs give other metrics than in memory"
            assert counted == seen, f"{cls.name} on streamed {kind}: counted {counted}, ran {seen}"
