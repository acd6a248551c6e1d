"""`audit run SPEC --mlflow [URI]`: one MLflow run per audit, read back with MLflow's client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.cli import main

mlflow = pytest.importorskip("mlflow")

SPEC = """\
name: MLflow test audit
model: {fixture: digits-cnn}
data:
  train: {fixture: digits, split: train}
  test: {fixture: digits, split: test}
checks:
  - {id: heldout, check: performance.classification, resamples: 200, weight_resamples: 200,
     thresholds: {accuracy: {min: 0.5}, worst_class_recall: {min: 0.999, level: should}}}
  - {id: calibration, check: performance.calibration, weight_resamples: 200}
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("mlflow")
    spec = tmp / "audit_spec.yaml"
    spec.write_text(SPEC)
    out, store = tmp / "report", tmp / "mlruns"
    uri = store.as_uri()
    code = main(["run", str(spec), "--out", str(out), "--quiet", "--mlflow", uri])
    assert code == 0
    return out, store, uri


def test_an_audit_is_logged_as_one_run_and_read_back(logged: tuple[Path, Path, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out, _, uri = logged
    results = json.loads((out / "results.json").read_text())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("MLflow test audit")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED"

    # parameters: spec name and hashes of the model and of every dataset
    prov = results["provenance"]
    assert run.data.params["spec_name"] == "MLflow test audit"
    assert run.data.params["spec_sha256"] == prov["spec_sha256"]
    assert run.data.params["model_sha256"] == prov["model_sha256"]
    for name, sha in prov["data_sha256"].items():
        assert run.data.params[f"data_sha256.{name}"] == sha

    # every metric with its CI bounds, as in results.json
    for check in results["checks"]:
        for metric, m in check["metrics"].items():
            key = f"{check['id']}.{metric}"
            assert run.data.metrics[key] == pytest.approx(m["value"])
            if m["ci"]:
                assert run.data.metrics[f"{key}.ci_low"] == pytest.approx(m["ci"][0])
                assert run.data.metrics[f"{key}.ci_high"] == pytest.approx(m["ci"][1])
        assert run.data.tags[f"status.{check['id']}"] == check["status"]
    assert run.data.tags["status.heldout"] == "warn"  # the should-level worst-class recall
    assert run.data.tags["status.calibration"] == "info"
    assert run.data.tags["audit.verdict"] == results["verdict"] == "compliant"
    assert run.data.metrics["checks.warn"] == 1.0

    # the report as artifacts, byte for byte
    artifacts = {a.path: a for a in client.list_artifacts(run.info.run_id)}
    assert set(artifacts) == {"results.json", "report.html", "report.pdf"}
    local = Path(client.download_artifacts(run.info.run_id, "results.json", str(out.parent / "dl")))
    assert local.read_bytes() == (out / "results.json").read_bytes()


def test_a_broken_tracking_uri_is_one_error_after_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             logged: tuple[Path, Path, str]) -> None:
    spec = tmp_path / "audit_spec.yaml"
    spec.write_text(SPEC)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    for uri in ("bogus-scheme://nowhere", (blocker / "mlruns").as_uri()):
        out = tmp_path / f"report-{uri.split(':')[0]}"
        code = main(["run", str(spec), "--out", str(out), "--quiet", "--format", "json", "--mlflow", uri])
        err = capsys.readouterr().err
        assert code == 2, err
        assert (out / "results.json").exists()  # the report was written first
        assert "cannot log the audit to MLflow at" in err and uri in err and "Traceback" not in err
        assert len([ln for ln in err.splitlines() if ln.strip()]) <= 3, err
