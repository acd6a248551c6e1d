"""Evidence is never lost or mixed: report folders and the reference-model cache.

Report folders (`audit.outputs`): a folder holding another audit is not replaced without
`--force`; a report is published whole (staged, then swapped into place under a lock), so
after concurrent writers, a crash or a kill the folder holds one complete report, never
files from two runs. The cache (`fixtures.models`): weights carry their SHA-256, checked
on load; a corrupt entry is retrained with a notice; fills are serialized; the bytes are
the same in every process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from markupsafe import escape

import reports
from audit.cli import main
from tests.tiny import Workspace, base_spec, drop_workspace, make_workspace

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("Audit AAA", "Audit BBB")


def results_doc(name: str, started: str = "2024-05-01T10:00:00+00:00") -> dict[str, Any]:
    """A small valid results document (no charts: cheap to render, safe in threads)."""
    return {"schema": "audit-results/1", "name": name, "standard": None, "verdict": "not assessed",
            "summary": {"pass": 0, "warn": 0, "fail": 0, "error": 0, "skipped": 0, "info": 1},
            "checks": [{"id": "info", "check": "performance.classification", "status": "info", "data": "test",
                        "area": "evaluation", "metrics": {"accuracy": {"value": 0.9, "ci": [0.8, 0.95]}},
                        "thresholds": [], "message": f"reported for {name}", "evidence": []}],
            "datasets": {}, "model": None, "training": None,
            "provenance": {"started_at": started, "spec_sha256": hashlib.sha256(name.encode()).hexdigest()}}


def write(results: dict[str, Any], out: Path, formats: set[str], force: bool = True) -> dict[str, Path]:
    """write_report, with `force` where it exists (so these tests also run, and fail, on
    the code before it)."""
    kwargs = {"force": force} if "force" in reports.write_report.__code__.co_varnames else {}
    return reports.write_report(results, out, formats, **kwargs)


def assert_one_report(folder: Path, formats: tuple[str, ...] = ("json", "html")) -> str:
    """The folder holds one complete report: every file present, all from the same run.
    Returns the audit's name."""
    files = {"json": "results.json", "html": "report.html", "pdf": "report.pdf"}
    assert sorted(p.name for p in folder.iterdir()) == sorted(files[f] for f in formats), list(folder.iterdir())
    results = json.loads((folder / "results.json").read_text())
    name = results["name"]
    others = [n for n in NAMES if n != name]
    if "html" in formats:
        html = (folder / "report.html").read_text()
        assert name in html and not any(o in html for o in others), f"report.html is not from {name}'s run"
        assert str(escape(results["checks"][0]["message"])) in html
    if "pdf" in formats:
        pdf = _pdf_text((folder / "report.pdf").read_bytes())
        assert f"({name})".encode() in pdf and not any(f"({o})".encode() in pdf for o in others), \
            f"report.pdf is not from {name}'s run"
    return name


def _pdf_text(pdf: bytes) -> bytes:
    import re
    import zlib

    text = pdf
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf, flags=re.S):
        try:
            text += zlib.decompress(stream)
        except zlib.error:
            pass
    return text


def leftovers(parent: Path) -> list[str]:
    """Staging or old folders left beside a report (the lock file is expected)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    w = make_workspace(tmp_path_factory.mktemp("tiny-out"))
    yield w
    drop_workspace(w)


def _spec(ws: Workspace, folder: Path, name: str) -> Path:
    d = base_spec(ws)
    d["name"] = name
    p = folder / f"{name.replace(' ', '_')}.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_second_run_does_not_overwrite_without_force(ws: Workspace, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    a, b = _spec(ws, tmp_path, NAMES[0]), _spec(ws, tmp_path, NAMES[1])
    assert main(["run", str(a), "--out", str(out), "-q", "--format", "json,html"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["run", str(b), "--out", str(out), "-q", "--format", "json,html"]) == 2
    err = capsys.readouterr().err
    assert "already holds the audit 'Audit AAA'" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the first audit's evidence is intact"
    assert main(["run", str(b), "--out", str(out), "-q", "--format", "json,html", "--force"]) == 0
    assert assert_one_report(out) == NAMES[1]
    assert leftovers(tmp_path) == []


def test_render_without_out_refuses_another_audit(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(results_doc(NAMES[0])))
    b.write_text(json.dumps(results_doc(NAMES[1])))
    assert main(["render", str(a), "--format", "json,html", "-q"]) == 0  # into ./audit-report/
    before = {p.name: p.read_bytes() for p in (tmp_path / "audit-report").iterdir()}
    capsys.readouterr()
    assert main(["render", str(b), "--format", "json,html", "-q"]) == 2
    assert "audit-report already holds the audit 'Audit AAA'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "audit-report").iterdir()} == before
    # re-rendering the same audit in place is not "another audit"; the other file is kept
    assert main(["render", "audit-report/results.json", "--format", "json", "-q"]) == 0
    assert assert_one_report(tmp_path / "audit-report") == NAMES[0]


# ---------------------------------------------------------------------------------------------- concurrency
def test_concurrent_writers_never_mix(tmp_path: Path, monkeypatch) -> None:
    """Writer A stalls after its first file until writer B is done (or 3 s). Before
    publishing, that left B's results.json beside A's report.html; now B waits for A's
    lock, and the folder ends as one complete report."""
    import audit.outputs as outputs

    out = tmp_path / "report"
    write(results_doc("Audit 000"), out, {"json", "html"})
    a_started, b_done = threading.Event(), threading.Event()
    calls: dict[str, int] = {}

    def stall(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            me = threading.current_thread().name
            calls[me] = calls.get(me, 0) + 1
            if me == "A" and calls[me] == 1:
                a_started.set()
                b_done.wait(timeout=3)
            return result
        return wrapper

    monkeypatch.setattr(os, "replace", stall(os.replace))
    monkeypatch.setattr(os, "rename", stall(os.rename))
    if hasattr(outputs, "_write_file"):
        monkeypatch.setattr(outputs, "_write_file", stall(outputs._write_file))
    errors: list[BaseException] = []

    def run(name: str, doc: dict[str, Any]) -> None:
        try:
            write(doc, out, {"json", "html"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if name == "B":
                b_done.set()

    ta = threading.Thread(target=run, args=("A", results_doc(NAMES[0])), name="A")
    tb = threading.Thread(target=run, args=("B", results_doc(NAMES[1])), name="B")
    ta.start()
    assert a_started.wait(timeout=60)
    tb.start()
    ta.join(timeout=120)
    tb.join(timeout=120)
    assert not errors, errors
    assert assert_one_report(out) in NAMES
    assert leftovers(tmp_path) == []


WRITER = r'''
import json, sys
from pathlib import Path
import reports
doc = json.loads(Path(sys.argv[1]).read_text())
kwargs = {"force": True} if "force" in reports.write_report.__code__.co_varnames else {}
for i in range(int(sys.argv[3])):
    doc["provenance"]["started_at"] = f"2024-05-01T10:00:0{i}+00:00"
    reports.write_report(doc, Path(sys.argv[2]), {"json", "html", "pdf"}, **kwargs)
'''


def test_two_processes_writing_one_folder(tmp_path: Path) -> None:
    """Two processes publish into one folder at once (both with force), three times
    each; the folder ends as one complete report, all three files from one run."""
    out = tmp_path / "report"
    docs = []
    for name in NAMES:
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(results_doc(name)))
        docs.append(p)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(d), str(out), "3"], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for d in docs]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    name = assert_one_report(out, ("json", "html", "pdf"))
    started = json.loads((out / "results.json").read_text())["provenance"]["started_at"]
    assert started == "2024-05-01T10:00:02+00:00", "the last write of that writer"
    assert name in NAMES and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- crashes
KILLER = r'''
import json, os, sys
from pathlib import Path
import audit.outputs as outputs
import reports
kill_at, calls = int(sys.argv[3]), [0]
def counted(fn):
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        calls[0] += 1
        if calls[0] == kill_at:
            os._exit(137)  # kill -9: no cleanup, no finally
        return result
    return wrapper
os.replace, os.rename = counted(os.replace), counted(os.rename)
for name in ("_write_file", "_exchange"):
    if hasattr(outputs, name):
        setattr(outputs, name, counted(getattr(outputs, name)))
if os.environ.get("NO_EXCHANGE") and hasattr(outputs, "_exchange"):
    outputs._exchange = lambda a, b: False
doc = json.loads(Path(sys.argv[1]).read_text())
kwargs = {"force": True} if "force" in reports.write_report.__code__.co_varnames else {}
reports.write_report(doc, Path(sys.argv[2]), {"json", "html"}, **kwargs)
'''


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_kill_between_steps_leaves_a_complete_report(tmp_path: Path, exchange: bool) -> None:
    """The writer of B is killed (os._exit) after its 1st, 2nd, ... file system step.
    Afterwards the folder is A's complete report or B's, never a mix. Where the swap takes
    two renames (no renameat2), a kill between them leaves the folder absent for a moment,
    and the next writer puts A back before deciding anything."""
    b_doc = tmp_path / "b.json"
    b_doc.write_text(json.dumps(results_doc(NAMES[1])))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({} if exchange else {"NO_EXCHANGE": "1"})}
    seen = set()
    for kill_at in range(1, 6):
        parent = tmp_path / f"k{kill_at}"
        out = parent / "report"
        write(results_doc(NAMES[0]), out, {"json", "html"})
        proc = subprocess.run([sys.executable, "-c", KILLER, str(b_doc), str(out), str(kill_at)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 137), proc.stderr
        if out.exists():
            seen.add(assert_one_report(out))
        else:
            assert not exchange, "with an atomic exchange the folder is never absent"
            with pytest.raises(Exception, match="already holds the audit 'Audit AAA'"):
                write(results_doc("Audit CCC"), out, {"json"}, force=False)  # recovers A first
            seen.add(assert_one_report(out))
        write(results_doc(NAMES[1]), out, {"json", "html"})  # the next writer cleans up
        assert assert_one_report(out) == NAMES[1] and leftovers(parent) == []
    assert seen == set(NAMES), "the kills hit before and after the swap"


def test_disk_full_while_writing_keeps_the_old_report(tmp_path: Path, monkeypatch) -> None:
    import errno

    import audit.outputs as outputs

    out = tmp_path / "report"
    write(results_doc(NAMES[0]), out, {"json", "html"})
    real, n = outputs._write_file, [0]

    def full_on_second(path: Path, data: bytes) -> None:
        n[0] += 1
        if n[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(outputs, "_write_file", full_on_second)
    with pytest.raises(outputs.OutputError, match="No space left on device"):
        write(results_doc(NAMES[1]), out, {"json", "html"})
    assert assert_one_report(out) == NAMES[0] and leftovers(tmp_path) == []


def test_folder_with_other_files_is_never_replaced(tmp_path: Path) -> None:
    from audit.outputs import OutputError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match=r"holds files that are not part of a report \(thesis.tex\)"):
        write(results_doc(NAMES[0]), out, {"json"}, force=True)
    assert (out / "thesis.tex").read_text() == "years of work"


# ---------------------------------------------------------------------------------------------- the cache
@pytest.fixture
def private_cache(audit_cache_dir: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the session's trained digits-cnn cache entry in a cache of its own."""
    from fixtures.models import cached_weights

    src = cached_weights("digits-cnn")
    dst = tmp_path / "cache"
    (dst / "models").mkdir(parents=True)
    for p in (src, src.with_suffix(".json")):
        (dst / "models" / p.name).write_bytes(p.read_bytes())
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(dst))
    return dst / "models" / src.name


def test_zeroed_cached_weights_are_rebuilt_not_audited(private_cache: Path, capsys) -> None:
    """Zeroed weights in a well-formed file used to load silently (accuracy 0.096)."""
    import torch
    from safetensors.torch import load_file, save_file

    from fixtures.models import load_fixture_model

    original = private_cache.read_bytes()
    state = load_file(str(private_cache))
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(private_cache))
    loaded = load_fixture_model("digits-cnn")
    err = capsys.readouterr().err
    assert "notice: cached weights of fixture 'digits-cnn'" in err and "corrupt" in err and "retraining" in err
    assert len(err.strip().splitlines()) == 1
    assert private_cache.read_bytes() == original, "retrained to the same bytes"
    assert loaded.sha256 == hashlib.sha256(original).hexdigest()
    assert any(float(v.abs().sum()) > 0 for v in loaded.module.state_dict().values())


@pytest.mark.parametrize("damage", ["zero-bytes", "truncated", "record-without-hash", "record-garbage"])
def test_damaged_cache_entry_is_rebuilt(private_cache: Path, capsys, monkeypatch, damage: str) -> None:
    import fixtures.models as fm

    # a rebuild trains what the recipe gives; the intact entry's module stands for it here
    # (one real retraining is in the test above)
    module = fm.load_fixture_model("digits-cnn").module
    monkeypatch.setattr(fm, "train_fixture", lambda name, seed=None: (module, {"epochs": 15}))
    original = private_cache.read_bytes()
    record = private_cache.with_suffix(".json")
    if damage == "zero-bytes":
        private_cache.write_bytes(b"\0" * len(original))
    elif damage == "truncated":
        private_cache.write_bytes(original[: len(original) // 2])
    elif damage == "record-without-hash":
        record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "weights_sha256"}))
    else:
        record.write_bytes(b"\0\0\0")
    loaded = fm.load_fixture_model("digits-cnn")
    assert "notice:" in capsys.readouterr().err
    assert private_cache.read_bytes() == original and loaded.sha256 == hashlib.sha256(original).hexdigest()
    assert json.loads(record.read_text())["weights_sha256"] == loaded.sha256


def test_concurrent_cache_fills_train_once(tmp_path: Path, monkeypatch) -> None:
    import time

    import fixtures.models as fm

    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    module = _tiny_module()
    trained: list[str] = []

    def slow_train(name: str, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        trained.append(threading.current_thread().name)
        time.sleep(0.5)
        return module, {"epochs": 0}

    monkeypatch.setattr(fm, "train_fixture", slow_train)
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(fm.cached_weights("digits-cnn")), name=f"t{i}")
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(trained) == 1 and len(paths) == 4 and len(set(paths)) == 1


def _tiny_module() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])


SHA_IN_A_PROCESS = r'''
import hashlib, sys
import torch
import fixtures.models as fm
torch.manual_seed(0)
module = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])
fm.train_fixture = lambda name, seed=None: (module, {"epochs": 0})
print(hashlib.sha256(fm.cached_weights("digits-cnn").read_bytes()).hexdigest())
'''


def test_fixture_sha256_is_the_same_in_every_process(tmp_path: Path) -> None:
    """The cache file written for the same weights hashes the same in five processes (the
    safetensors metadata used to come out in a random key order per process)."""
    procs = []
    for i in range(5):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AUDIT_CACHE_DIR": str(tmp_path / f"c{i}"),
               "PYTHONHASHSEED": str(i)}
        procs.append(subprocess.Popen([sys.executable, "-c", SHA_IN_A_PROCESS], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    shas = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        shas.append(out.strip())
    assert len(set(shas)) == 1, shas
