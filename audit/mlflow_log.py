"""Logging an audit to MLflow: one run per audit (`audit run SPEC --mlflow [TRACKING_URI]`).

The run goes into the experiment named after the spec (`$MLFLOW_EXPERIMENT_NAME`
overrides), and holds:

* parameters: the spec's name, source and SHA-256, the model's and each dataset's
  SHA-256 (`data_sha256.<name>`), seed, device and the audit's version;
* metrics: each check's metrics as `<check id>.<metric>`, with the confidence bounds as
  `<check id>.<metric>.ci_low` / `.ci_high`, and the count of checks per status;
* tags: the verdict (`audit.verdict`), each check's status (`status.<check id>`);
* artifacts: the report files written (`results.json`, `report.html`, `report.pdf`).

It reads the results as written and nothing else. The default tracking URI is a local
`./mlruns` file store; MLflow 3 keeps file stores in maintenance mode and refuses them
unless `MLFLOW_ALLOW_FILE_STORE` is set, so it is set for a file-store URI (unless the
user set it). HTTP retries are capped so that an unreachable server fails in seconds.
Any failure becomes one AuditInputError naming the tracking URI.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from audit.errors import AuditInputError

DEFAULT_TRACKING_URI = "./mlruns"
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_PARAM_LIMIT = 6000


def require_mlflow() -> None:
    """Fail before the audit runs when MLflow is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise AuditInputError("--mlflow needs MLflow: pip install 'audit-suite[mlflow]' (or mlflow-skinny)")


def _key(s: str) -> str:
    """An MLflow key: letters, digits, underscores, dashes, periods, spaces and slashes."""
    return _KEY.sub("_", str(s))


def _is_file_store(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file:")


@contextlib.contextmanager
def _environment(uri: str) -> Iterator[None]:
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    if _is_file_store(uri):
        wanted["MLFLOW_ALLOW_FILE_STORE"] = "true"
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def run_contents(results: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """(params, metrics, tags) of an audit's run, from its results."""
    prov = results.get("provenance") or {}
    params: dict[str, str] = {
        "spec_name": str(results.get("name")),
        "spec_source": str(prov.get("spec_source")),
        "spec_sha256": str(prov.get("spec_sha256")),
        "model_sha256": str(prov.get("model_sha256")),
        "seed": str(prov.get("seed")),
        "device": str(prov.get("device")),
        "audit_version": str((prov.get("versions") or {}).get("audit")),
    }
    for name, sha in (prov.get("data_sha256") or {}).items():
        params[_key(f"data_sha256.{name}")] = str(sha)
    params = {k: v[:_PARAM_LIMIT] for k, v in params.items()}

    metrics: dict[str, float] = {}
    tags: dict[str, str] = {"audit.verdict": str(results.get("verdict")),
                            "audit.standard": str(results.get("standard") or "")}
    for check in results.get("checks", []):
        cid = _key(check["id"])
        tags[f"status.{cid}"] = str(check.get("status"))
        tags[f"check.{cid}"] = str(check.get("check"))
        for metric, m in (check.get("metrics") or {}).items():
            if not isinstance(m, Mapping) or m.get("value") is None:
                continue
            key = _key(f"{cid}.{metric}")
            metrics[key] = float(m["value"])
            ci = m.get("ci")
            if ci and ci[0] is not None and ci[1] is not None:
                metrics[f"{key}.ci_low"] = float(ci[0])
                metrics[f"{key}.ci_high"] = float(ci[1])
    for status, count in (results.get("summary") or {}).items():
        metrics[f"checks.{status}"] = float(count)
    return params, metrics, tags


def log_audit(results: Mapping[str, Any], artifacts: Mapping[str, Path] | list[Path],
              tracking_uri: str | None = None) -> str:
    """Log one run for the audit `results` with the report files `artifacts`; returns the
    run id. Raises AuditInputError (one line) when MLflow cannot be reached or written."""
    require_mlflow()
    uri = tracking_uri or DEFAULT_TRACKING_URI
    files = list(artifacts.values()) if isinstance(artifacts, Mapping) else list(artifacts)
    params, metrics, tags = run_contents(results)
    try:
        with _environment(uri):
            return _log(uri, results, files, params, metrics, tags)
    except AuditInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow, HTTP and file-system errors alike
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise AuditInputError(f"cannot log the audit to MLflow at '{uri}': {first[:300]} "
                              "(the report was written)") from None


def _log(uri: str, results: Mapping[str, Any], files: list[Path], params: dict[str, str],
         metrics: dict[str, float], tags: dict[str, str]) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(results.get("name") or "audit")
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    started = (results.get("provenance") or {}).get("started_at") or ""
    run = client.create_run(experiment_id, run_name=f"audit {started}".strip(), tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        items = [Param(k, v) for k, v in params.items()]
        ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
        # MLflow takes at most 100 params and 1000 metrics per batch
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start:start + 100])
        for start in range(0, len(ms), 1000):
            client.log_batch(run_id, metrics=ms[start:start + 1000])
        for path in files:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
