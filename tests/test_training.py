"""Training mode: determinism, the training record, saving, early stopping, no host syncs
in the step loop, `audit train`, and training.reproducibility (a planted
non-deterministic model fails it)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audit.context import Context
from audit.dataset import Dataset, LoadedModel
from audit.runner import run_audit
from audit.verdict import judge
from audit.spec import Threshold, TrainSpec, load_spec
from audit.training import amp_dtype, fit, load_saved, validation_split
from checks.training.reproducibility import Reproducibility


@pytest.fixture(scope="module")
def digits_small() -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    ds = load_fixture_dataset("digits", "train")
    return dataclasses.replace(ds, x=ds.x[:400], y=ds.y[:400], _sha256=None)


def _weights(m: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.module.state_dict().items()}


@pytest.mark.parametrize("arch", ["cnn", "resnet", "vit"])
def test_same_seed_gives_identical_weights(digits_small: Dataset, arch: str) -> None:
    spec = TrainSpec(architecture=arch, epochs=2, batch_size=64, lr=2e-3, early_stopping={"patience": 5})
    rng_before = torch.get_rng_state()
    a, b = fit(digits_small, spec, seed=3), fit(digits_small, spec, seed=3)
    assert torch.equal(rng_before, torch.get_rng_state())  # the caller's global RNG is left alone
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.sha256 == b.sha256 == a.training["model_sha256"]
    assert a.training["epochs"] == [dict(e, seconds=e2["seconds"]) for e, e2 in
                                    zip(b.training["epochs"], a.training["epochs"])]
    c = fit(digits_small, spec, seed=4)
    assert c.sha256 != a.sha256
    assert any(not torch.equal(wa[k], v) for k, v in _weights(c).items() if v.is_floating_point())


def test_training_record_and_validation_split(digits_small: Dataset) -> None:
    spec = TrainSpec(architecture="cnn", epochs=3, batch_size=32, lr=3e-3, val_fraction=0.2, options={"hidden": 32})
    m = fit(digits_small, spec, seed=0)
    rec = m.training
    assert [e["epoch"] for e in rec["epochs"]] == [1, 2, 3]
    for e in rec["epochs"]:
        assert {"epoch", "train_loss", "val_loss", "val_accuracy"} <= set(e)
        assert np.isfinite(e["train_loss"]) and 0 <= e["val_accuracy"] <= 1
    assert rec["epochs"][-1]["train_loss"] < rec["epochs"][0]["train_loss"]
    assert rec["best_epoch"] == 1 + int(np.argmin([e["val_loss"] for e in rec["epochs"]]))
    assert rec["device"] == "cpu" and rec["amp"] == "off" and rec["seed"] == 0
    assert rec["architecture_kwargs"]["hidden"] == 32 and rec["architecture_kwargs"]["num_classes"] == 10
    assert rec["params"] == sum(p.numel() for p in m.module.parameters())
    assert rec["recipe"]["optimizer"] == "adamw" and rec["recipe"]["loss"] == "cross-entropy"
    # the validation split is stratified, disjoint, seeded, and the record's last epoch
    # accuracy is the model's accuracy on it (the module is the last epoch's: no early stopping)
    tr, va = validation_split(digits_small.y, 0.2, 0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(digits_small)
    assert rec["data"]["n_val"] == len(va) == 80
    assert np.array_equal(va, validation_split(digits_small.y, 0.2, 0)[1])
    with torch.inference_mode():
        pred = m.module(torch.from_numpy(digits_small.x[va])).argmax(1).numpy()
    assert rec["epochs"][-1]["val_accuracy"] == pytest.approx(float((pred == digits_small.y[va]).mean()))
    assert m.classes == digits_small.classes and m.input_range == (0.0, 1.0)


def test_early_stopping_restores_best_weights() -> None:
    # random labels: the model memorises the training rows and validation loss rises
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 300).astype(np.int64)
    ds = Dataset(name="noise", x=x, y=y, kind="image", classes=["a", "b", "c"])
    spec = TrainSpec(architecture="cnn", epochs=30, batch_size=32, lr=1e-2, scheduler="none",
                     early_stopping={"patience": 2}, val_fraction=0.3, options={"dropout": 0.0})
    m = fit(ds, spec, seed=0)
    rec = m.training
    assert rec["stopped_early"] and rec["epochs_run"] == rec["best_epoch"] + 2 < 30
    _, va = validation_split(y, 0.3, 0)
    with torch.inference_mode():
        loss = F.cross_entropy(m.module(torch.from_numpy(x[va])), torch.from_numpy(y[va])).item()
    assert loss == pytest.approx(rec["best_val_loss"], rel=1e-4)
    assert rec["restored_best"]


def test_no_host_sync_inside_the_step_loop(digits_small: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of tensor values from audit/training.py happen once per epoch, not per step."""
    calls: list[str] = []
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _orig=original, **k):
            if sys._getframe(1).f_code.co_filename.endswith(str(Path("audit") / "training.py")):
                calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    spec = TrainSpec(architecture="cnn", epochs=3, batch_size=16, lr=1e-3)
    fit(digits_small, spec, seed=0)  # 22 steps per epoch
    # one read per epoch (losses and counts), plus serialising the final weights
    assert calls.count("tolist") == 3
    assert calls.count("item") == calls.count("__float__") == calls.count("__bool__") == 0
    assert calls.count("numpy") == 0


def test_amp_choice_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype("auto", cuda) is torch.float16
    assert amp_dtype("bf16", cpu) is torch.bfloat16


def test_bf16_autocast_path_trains_on_cpu(digits_small: Dataset) -> None:
    """The AMP code path (autocast, GradScaler disabled for bf16) runs on the CPU too."""
    m = fit(digits_small, TrainSpec(architecture="cnn", epochs=2, batch_size=64, amp="bf16"), seed=0)
    assert m.training["amp"] == "bf16"
    assert all(np.isfinite(e["train_loss"]) for e in m.training["epochs"])
    assert all(p.dtype == torch.float32 for p in m.module.parameters())


# ---- end to end: a spec that trains a ViT ---------------------------------------------------
VIT_SPEC = """\
name: ViT trained by the audit
seed: 0
device: cpu
model:
  train:
    architecture: vit
    data: train
    epochs: 3
    batch_size: 32
    lr: 0.003
    options: {dim: 32, depth: 1, heads: 2}
  save: models/vit.safetensors
data:
  train: {fixture: digits, split: train}
  test: {fixture: digits, split: test}
checks:
  - id: heldout
    check: performance.classification
    thresholds: {accuracy: {min: 0.75}}
  - id: repro
    check: training.reproducibility
    retrain: true
    thresholds: {prediction_agreement: {min: 0.99}, retrain_metric_diff: {max: 0.001}}
  - id: latency
    check: efficiency.latency
    repeats: 10
"""


@pytest.fixture(scope="module")
def vit_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vit")
    spec_path = root / "audit_vit.yaml"
    spec_path.write_text(VIT_SPEC)
    results = run_audit(load_spec(spec_path)).to_json()
    return root, results


def test_vit_spec_trains_audits_and_records(vit_audit: tuple[Path, dict]) -> None:
    root, results = vit_audit
    status = {c["id"]: c["status"] for c in results["checks"]}
    assert status == {"heldout": "pass", "repro": "pass", "latency": "info"}, results["checks"]
    rec = results["training"]
    assert rec["architecture"] == "vit" and len(rec["epochs"]) == 3 and rec["device"] == "cpu"
    assert set(rec["epochs"][0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy"}
    assert rec["best_epoch"] in (1, 2, 3) and rec["wall_s"] > 0 and rec["seed"] == 0
    weights = root / "models" / "vit.safetensors"
    assert rec["saved_to"] == str(weights)
    assert rec["model_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert results["provenance"]["model_sha256"] == rec["model_sha256"]
    recipe = json.loads(weights.with_suffix(".json").read_text())
    assert recipe["architecture"] == "vit" and recipe["model_sha256"] == rec["model_sha256"]
    assert results["model"]["params"] == rec["params"]
    # the retrained model reproduced the metrics exactly
    repro = next(c for c in results["checks"] if c["id"] == "repro")
    assert repro["metrics"]["retrain_metric_diff"]["value"] == 0.0
    assert repro["metrics"]["retrain_agreement"]["value"] == 1.0
    assert "bit-identical" in json.dumps(repro["evidence"])


def test_saved_model_loads_from_its_recipe(vit_audit: tuple[Path, dict], tmp_path: Path) -> None:
    root, results = vit_audit
    weights = root / "models" / "vit.safetensors"
    loaded = load_saved(weights)
    assert loaded.sha256 == results["training"]["model_sha256"] and loaded.architecture == "vit"
    spec = tmp_path / "audit_saved.yaml"
    spec.write_text(f"""\
name: saved ViT
device: cpu
model: {{path: {weights}}}
data:
  test: {{fixture: digits, split: test}}
checks:
  - {{id: heldout, check: performance.classification}}
""")
    again = run_audit(load_spec(spec)).to_json()
    acc = lambda r: next(c for c in r["checks"] if c["id"] == "heldout")["metrics"]["accuracy"]["value"]  # noqa: E731
    assert acc(again) == acc(results)
    assert again["provenance"]["model_sha256"] == results["training"]["model_sha256"]


def test_audit_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    spec = tmp_path / "train.yaml"
    spec.write_text(VIT_SPEC.replace("epochs: 3", "epochs: 1").replace("models/vit", "out/vit1"))
    assert main(["train", str(spec), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    weights = tmp_path / "out" / "vit1.safetensors"
    assert printed["model_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert printed["saved_to"] == str(weights)
    # no `save:` -> a clear input error (exit 2), nothing trained
    spec.write_text(VIT_SPEC.replace("  save: models/vit.safetensors\n", ""))
    assert main(["train", str(spec), "--quiet"]) == 2
    assert "model.save" in capsys.readouterr().err


def test_retrain_without_train_section_is_a_spec_error(tmp_path: Path) -> None:
    from audit.errors import SpecError

    spec = tmp_path / "a.yaml"
    spec.write_text("""\
name: x
model: {fixture: digits-cnn}
data: {test: {fixture: digits, split: test}}
checks: [{id: r, check: training.reproducibility, retrain: true}]
""")
    with pytest.raises(SpecError, match="model.train"):
        load_spec(spec)


# ---- repeated inference -----------------------------------------------------------------------
class DropoutAtInference(nn.Module):
    """A planted defect: dropout applied whatever the module's mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(F.dropout(x, p=0.3, training=True))


@pytest.fixture(scope="module")
def digits_test() -> Dataset:
    from fixtures.datasets import load_fixture_dataset

    return load_fixture_dataset("digits", "test")


def test_reproducibility_passes_for_a_deterministic_model(digits_cnn: LoadedModel, digits_test: Dataset) -> None:
    ctx = Context.from_objects({"test": digits_test}, digits_cnn)
    before = ctx.forward_samples
    m = Reproducibility().run(ctx, Reproducibility.Params(repeats=2))
    n = len(digits_test)
    assert ctx.forward_samples - before == 3 * n  # one cached pass + two repeats that bypass the cache
    assert m.metrics["prediction_agreement"].value == 1.0
    assert m.metrics["max_logit_diff"].value == 0.0
    assert judge(m.metrics["prediction_agreement"], Threshold(min=0.99)) == "pass"


def test_reproducibility_fails_for_dropout_left_on(digits_cnn: LoadedModel, digits_test: Dataset) -> None:
    from fixtures.models import load_fixture_model

    inner = load_fixture_model("digits-cnn").module  # a private copy (cached weights)
    planted = LoadedModel(module=DropoutAtInference(inner), sha256="planted", source="test",
                          architecture="cnn+dropout")
    ctx = Context.from_objects({"test": digits_test}, planted)
    m = Reproducibility().run(ctx, Reproducibility.Params(repeats=2))
    agreement = m.metrics["prediction_agreement"]
    assert agreement.value < 0.9 and agreement.ci[1] < 0.99
    assert m.metrics["max_logit_diff"].value > 0.1
    assert judge(agreement, Threshold(min=0.99)) == "fail"
    assert any(e["type"] == "text" and "Non-deterministic" in e["title"] for e in m.evidence)


def test_saved_text_model_keeps_its_tokenizer(tmp_path: Path) -> None:
    from audit.training import save_model
    from fixtures.text import load_reviews

    ds = load_reviews("train")
    ds = dataclasses.replace(ds, x=ds.x[:200], y=ds.y[:200], _sha256=None)
    m = fit(ds, TrainSpec(architecture="text_transformer", epochs=1, batch_size=50, options={"dim": 16, "depth": 1,
                                                                                          "heads": 2}), seed=0)
    assert m.training["tokenizer"]["vocab_size"] == len(ds.meta["tokenizer"]["vocab"])
    path = save_model(m, tmp_path / "text.safetensors", tokenizer=ds.meta["tokenizer"])
    recipe = json.loads(path.with_suffix(".json").read_text())
    assert recipe["tokenizer"] == ds.meta["tokenizer"] and recipe["model_sha256"] == m.sha256
    again = load_saved(path)
    x = torch.from_numpy(ds.x[:20])
    with torch.inference_mode():
        assert torch.equal(again.module(x), m.module(x))


def test_divergence_is_a_clear_error(digits_small: Dataset) -> None:
    from audit.errors import ModelError

    with pytest.raises(ModelError, match="diverged"):
        fit(digits_small, TrainSpec(architecture="cnn", epochs=2, optimizer="sgd", lr=1e6, scheduler="none",
                                    options={"batch_norm": False}), seed=0)
