"""pytest plugin: `pytest audit_digits.yaml` or `pytest --audit-spec SPEC`.

One item per check (id = the check's `id`), run by the same Runner as the CLI over one
Context per spec. fail/error -> failed item with the threshold table, skipped -> skip,
warn -> a pytest warning. Fixtures `audit_context`, `audit_model`, `audit_data` expose
the `--audit-spec` context so users can write their own checks as ordinary tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.errors import AuditInputError


class AuditWarning(UserWarning):
    """An inconclusive (warn) audit check."""


class AuditCheckFailed(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("audit", "model audit")
    group.addoption("--audit-spec", action="append", default=[], metavar="SPEC",
                    help="run the checks of this audit spec as test items (repeatable)")
    group.addoption("--audit-report", metavar="DIR", default=None,
                    help="write results.json, report.html and report.pdf for each audited spec")
    group.addoption("--audit-report-force", action="store_true", default=False,
                    help="replace a --audit-report folder that holds another audit's report")
    group.addoption("--audit-device", metavar="DEVICE", default=None, help="override the spec's device")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "audit_check(id): an audit check item")
    config._audit_runners = {}  # type: ignore[attr-defined]


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and file_path.name.startswith("audit"):
        return AuditSpecFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for spec in config.getoption("audit_spec") or []:
        path = Path(spec).resolve()
        if any(isinstance(i, AuditCheckItem) and i.spec_path == path for i in items):
            continue  # also collected as a file argument
        collector = AuditSpecFile.from_parent(session, path=path)
        items.extend(collector.collect())


class _RunnerState:
    def __init__(self, spec_path: Path, device: str | None) -> None:
        from audit.runner import Runner
        from audit.spec import load_spec

        self.spec = load_spec(spec_path)
        self.runner = Runner(self.spec, device=device)
        self.error: str | None = None
        try:
            self.runner.prepare()
        except AuditInputError as exc:
            self.error = str(exc)


def _state(config: pytest.Config, spec_path: Path) -> _RunnerState:
    runners: dict[Path, _RunnerState] = config._audit_runners  # type: ignore[attr-defined]
    if spec_path not in runners:
        runners[spec_path] = _RunnerState(spec_path, config.getoption("audit_device"))
    return runners[spec_path]


class AuditSpecFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from audit.spec import load_spec

        try:
            spec = load_spec(self.path)
        except AuditInputError as exc:
            raise self.CollectError(str(exc)) from None
        for entry in spec.checks:
            yield AuditCheckItem.from_parent(self, name=entry.id, check_id=entry.id)


class AuditCheckItem(pytest.Item):
    def __init__(self, *, check_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_id = check_id
        self.spec_path = Path(self.path).resolve()
        self.add_marker(pytest.mark.audit_check(check_id))

    def runtest(self) -> None:
        state = _state(self.config, self.spec_path)
        if state.error:
            raise AuditCheckFailed(f"audit input error: {state.error}")
        entry = next(e for e in state.spec.checks if e.id == self.check_id)
        result = state.runner.run_check(entry)
        self.user_properties.append(("audit_status", result.status))
        if result.status == "skipped":
            pytest.skip(f"{self.check_id}: {result.message}")
        if result.status == "warn":
            why = "; ".join(f"{_KIND[r['kind']]}: {r['text']}" for r in result.reasons) or result.message
            warnings.warn(AuditWarning(f"{self.check_id} ({result.check}) WARN — {why}"), stacklevel=1)
        if result.status in ("fail", "error"):
            raise AuditCheckFailed(_failure_text(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AuditCheckFailed):
            return excinfo.value.text
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"audit check: {self.check_id}"


# How each kind of reason reads on the console (results.json keeps the kind).
_KIND = {"must_fail": "failed (must)", "should_fail": "failed at should level", "inconclusive": "inconclusive",
         "small_sample": "too few samples", "holm": "not significant after Holm", "flag": "sanity flag"}


def _failure_text(result: Any) -> str:
    lines = [f"{result.id} ({result.check}) {result.status.upper()}: {result.message}"]
    if result.thresholds:
        rows = [("metric", "value", "CI", "threshold", "level", "status")]
        for t in result.thresholds:
            ci = t.ci
            status = t.status if t.status != "fail" else f"fail ({t.level})"
            rows.append((t.metric, _f(t.value), f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "—",
                         f"{'>=' if t.op == 'min' else '<='} {t.limit:g}", t.level, status))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if result.traceback:
        lines += ["", result.traceback]
    return "\n".join(lines)


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = session.config.getoption("audit_report", None)
    runners: dict[Path, _RunnerState] = getattr(session.config, "_audit_runners", {})
    if not out or not runners:
        return
    from reports import write_report

    for i, (path, state) in enumerate(runners.items()):
        if state.error:
            continue
        target = Path(out) if len(runners) == 1 else Path(out) / path.stem
        try:
            write_report(state.runner.finish().to_json(), target, {"json", "html", "pdf"},
                         force=bool(session.config.getoption("audit_report_force", False)))
        except AuditInputError as exc:  # e.g. the folder holds another audit: say so, keep the old one
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"audit report not written: {exc}", red=True)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR


# ---- fixtures for user-written checks ------------------------------------------------------
def _spec_option(config: pytest.Config) -> Path:
    specs = config.getoption("audit_spec") or []
    if not specs:
        pytest.skip("no --audit-spec given")
    return Path(specs[0]).resolve()


@pytest.fixture(scope="session")
def audit_context(pytestconfig: pytest.Config):
    """The Context of the (first) --audit-spec, shared with the spec's check items."""
    state = _state(pytestconfig, _spec_option(pytestconfig))
    if state.error:
        pytest.fail(f"audit input error: {state.error}", pytrace=False)
    return state.runner.ctx


@pytest.fixture(scope="session")
def audit_model(audit_context):
    """The loaded model (audit.dataset.LoadedModel): `.module` is the torch module."""
    return audit_context.model


class _Datasets:
    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __getitem__(self, name: str):
        return self._ctx.dataset(name)

    def __contains__(self, name: str) -> bool:
        return self._ctx.has_dataset(name)


@pytest.fixture(scope="session")
def audit_data(audit_context):
    """Datasets by role: `audit_data["test"]` is an audit.dataset.Dataset."""
    return _Datasets(audit_context)
