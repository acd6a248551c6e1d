"""The engines: the same audit in memory, streamed on this machine, and sharded over Ray
with 1 and 2 workers gives the same metrics, intervals and statuses; `engine: ray` with
Ray missing or a cluster that cannot be reached is exit 2 with one message; a worker that
keeps dying errors the check and the report is still written.

The data are tabular parquet shards with more rows than one block (audit.lazy.block_rows),
so every engine cuts several blocks and Ray gets several shards.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

ray = pytest.importorskip("ray")

from audit.cli import main
from audit.lazy import block_rows
from audit.runner import run_audit
from audit.spec import load_spec

MODULE = "scale_test_models"
SOURCE = '''
import os

import torch


class Lin(torch.nn.Module):
    """Two logits from a linear layer; `die`: the process exits when the module runs in
    any process but the one that built it (a Ray worker that crashes)."""

    def __init__(self, n_in=4, die=False):
        super().__init__()
        self.lin = torch.nn.Linear(n_in, 2)
        self.die = die
        self.owner = os.getpid()

    def forward(self, x):
        if self.die and os.getpid() != self.owner:
            os._exit(7)
        return self.lin(x)


def build(die=False):
    return Lin(4, die)
'''

N_TEST = 2 * block_rows(4) + 3_000  # three blocks of rows (the last one partial)
N_TRAIN = 6_000


def _table(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = np.round(rng.random((n, 4)), 3).astype(np.float32)  # rounded: some exact duplicate rows
    noise = rng.normal(0.0, 0.15, n)
    y = (x[:, 0] + x[:, 1] + noise > 1.0).astype(np.int64)
    group = np.where(x[:, 2] > 0.7, "b", np.where(x[:, 3] > 0.5, "a", "c"))
    return pd.DataFrame({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "f3": x[:, 3], "group": group, "label": y})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("engines")
    (root / f"{MODULE}.py").write_text(SOURCE)
    save_file({"lin.weight": torch.tensor([[-1.0, -1.0, 0.2, 0.0], [1.0, 1.0, 0.0, -0.2]]),
               "lin.bias": torch.tensor([1.0, -1.0])}, str(root / "model.safetensors"))
    test, train = _table(N_TEST, 0), _table(N_TRAIN, 1)
    train.iloc[:500] = test.iloc[:500].to_numpy()  # leakage: 500 test rows are also in train
    test.iloc[30_000:30_200] = test.iloc[100:300].to_numpy()  # 200 duplicates, across shards and blocks
    (root / "test").mkdir()
    cuts = [0, 9_000, 25_000, N_TEST]  # three shard files, small row groups
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        pq.write_table(pa.Table.from_pandas(test.iloc[a:b], preserve_index=False), root / "test" / f"part-{i}.parquet",
                       row_group_size=4_000)
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), root / "train.parquet")
    return root


def _spec(root: Path, execution: dict[str, Any], *, die: bool = False) -> Path:
    body = {
        "name": "engines", "seed": 3, "device": "cpu", "execution": execution,
        "model": {"path": str(root / "model.safetensors"), "factory": f"{MODULE}:build",
                  "factory_kwargs": {"die": die}},
        "data": {"test": {"path": str(root / "test"), "label": "label", "sensitive": ["group"]},
                 "train": {"path": str(root / "train.parquet"), "label": "label", "sensitive": ["group"]}},
        "checks": [
            {"id": "perf", "check": "performance.classification",
             "thresholds": {"accuracy": {"min": 0.8}}},
            {"id": "cal", "check": "performance.calibration", "thresholds": {"ece": {"max": 0.2}}},
            {"id": "integrity", "check": "data.integrity",
             "thresholds": {"train_test_overlap": {"max": 0.001}, "duplicate_fraction": {"max": 0.5}}},
            {"id": "fair", "check": "fairness.group",
             "thresholds": {"demographic_parity_difference": {"max": 0.2}}},
        ]}
    path = root / f"spec-{abs(hash(json.dumps(execution, sort_keys=True)))}-{int(die)}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _numbers(results: Any) -> dict[str, Any]:
    """Every check's status, metric values and intervals, and threshold statuses."""
    return {c.id: {"status": c.status, "metrics": c.metrics,
                   "thresholds": [(t.metric, t.status, t.value, t.ci) for t in c.thresholds]}
            for c in results.checks}


@pytest.fixture(scope="module")
def factory_on_path(workspace: Path) -> Path:
    # the driver imports the factory from sys.path; Ray's workers (started by ray.init
    # below, with this environment) unpickle the model and need it on PYTHONPATH
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(workspace))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(workspace), os.environ.get("PYTHONPATH", "")]))
        yield workspace
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def local_ray(factory_on_path: Path) -> Any:
    # one local instance for the module's Ray tests (starting one takes seconds)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_same_numbers_in_memory_streamed_and_on_ray_with_1_and_2_workers(local_ray: Any, factory_on_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import audit.context

    root = factory_on_path
    runs = {"memory": {"engine": "memory"}, "streaming": {"engine": "streaming"},
            "ray1": {"engine": "ray", "num_workers": 1}, "ray2": {"engine": "ray", "num_workers": 2}}
    out = {}
    for name, ex in runs.items():
        # ray2 also sends the train set's pass without the model to Ray (below the size
        # where it goes there by default), so that both Ray paths give the same numbers
        monkeypatch.setattr(audit.context, "RAY_READ_ONLY_MIN_ROWS", 0 if name == "ray2" else 10_000_000)
        out[name] = run_audit(load_spec(_spec(root, ex)))
    ref = _numbers(out["memory"])
    # the audit is not trivial: every check measured, and the thresholds split
    assert {c["status"] for c in ref.values()} >= {"pass", "fail"}
    assert ref["perf"]["metrics"]["accuracy"]["n"] == N_TEST
    assert 0.8 < ref["perf"]["metrics"]["accuracy"]["value"] < 0.99
    assert ref["integrity"]["metrics"]["train_test_overlap"]["value"] >= 500 / N_TEST
    assert ref["integrity"]["metrics"]["duplicate_fraction"]["value"] >= 200 / N_TEST
    assert ref["fair"]["metrics"]["demographic_parity_difference"]["value"] > 0.02
    for name in ("streaming", "ray1", "ray2"):
        assert _numbers(out[name]) == ref, name
    # the datasets hash to the same content whatever read them
    assert len({json.dumps(r.provenance["data_sha256"], sort_keys=True) for r in out.values()}) == 1

    # provenance: the engine, its workers, and the shards and blocks of each streamed pass
    ex = {name: r.provenance["execution"] for name, r in out.items()}
    assert ex["memory"]["engine"] == "memory" and "datasets" not in ex["memory"]
    assert ex["streaming"]["engine"] == "streaming"
    assert ex["streaming"]["datasets"]["test"]["shards"] == 3
    assert ex["streaming"]["datasets"]["test"]["blocks"] == 3
    for name, workers in (("ray1", 1), ("ray2", 2)):
        assert ex[name]["engine"] == "ray" and ex[name]["workers"] == workers
        test = ex[name]["datasets"]["test"]
        assert test["engine"] == "ray" and test["workers"] == workers and test["shards"] == 3
        assert test["tasks"] >= 2 and test["rows"] == N_TEST and test["model_pass"]
    # the train set's pass reads rows without the model: here unless it is large
    assert ex["ray1"]["datasets"]["train"]["engine"] == "streaming"
    assert ex["ray2"]["datasets"]["train"]["engine"] == "ray"
    assert not ex["ray2"]["datasets"]["train"]["model_pass"]


def test_a_worker_that_keeps_dying_errors_the_checks_and_the_report_is_written(local_ray: Any,
                                                                            factory_on_path: Path) -> None:
    root = factory_on_path
    spec = _spec(root, {"engine": "ray", "num_workers": 1, "max_retries": 1}, die=True)
    out = root / "report-dying"
    code = main(["run", str(spec), "--out", str(out), "--quiet", "--format", "html,json"])
    assert code != 2, "a failed pass is not an input error: the audit goes on"
    results = json.loads((out / "results.json").read_text())
    status = {c["id"]: c["status"] for c in results["checks"]}
    assert status["perf"] == status["cal"] == status["fair"] == "error"
    reason = next(c for c in results["checks"] if c["id"] == "perf")["message"]
    assert "failed" in reason and "retries" in reason
    assert results["provenance"]["execution"]["failed"]
    assert (out / "report.html").exists()


def _run_cli(args: list[str], env: dict[str, str] | None = None, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}\nimport sys\nfrom audit.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9"])
def test_a_cluster_that_cannot_be_reached_is_exit_2_with_one_message(factory_on_path: Path, address: str) -> None:
    spec = _spec(factory_on_path, {"engine": "ray", "address": address})
    proc = _run_cli(["run", str(spec), "--out", str(factory_on_path / "never"), "--quiet"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert f"cannot connect to the Ray cluster at {address}" in lines[0]
    assert not (factory_on_path / "never").exists()


def test_ray_not_installed_is_exit_2_with_one_message(factory_on_path: Path) -> None:
    spec = _spec(factory_on_path, {"engine": "streaming"})
    # `import ray` fails as it does where Ray is not installed; --engine asks for it
    proc = _run_cli(["run", str(spec), "--engine", "ray", "--out", str(factory_on_path / "never2"), "--quiet"],
                    pre="import sys\nsys.modules['ray'] = None")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "execution engine 'ray' needs Ray Data, which is not installed" in lines[0]


def test_streamed_labels_are_compact_and_row_hashes_are_dropped_after_their_last_reader(
        factory_on_path: Path) -> None:
    from audit.runner import Runner

    spec = load_spec(_spec(factory_on_path, {"engine": "streaming"}))
    runner = Runner(spec)
    try:
        runner.prepare()
        ctx = runner.ctx
        test = ctx.dataset("test")
        assert test.lazy and test.y.dtype == np.int8  # one byte a row, as the predictions
        before = ctx.row_hashes("test").copy()
        order = [e.check for e in spec.checks]
        last = order.index("data.integrity")
        assert last < len(order) - 1  # a check after the last reader: the hashes go before it
        for i, entry in enumerate(spec.checks):
            assert runner.run_check(entry).status != "error"
            runner.release(spec.checks[i + 1:])
            assert (ctx.summary("test").row_hashes is None) == (i >= last), entry.check
        # asked again, they are computed again, equal
        assert np.array_equal(ctx.row_hashes("test"), before)
    finally:
        runner.ctx.close()
