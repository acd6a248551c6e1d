"""Report folders: written whole or not at all, never mixed, never replaced by accident.

How a report folder `<parent>/<name>` is written (`publish`):

1. Every file is rendered in memory first (by the caller).
2. Holding an exclusive lock on `<parent>/.<name>.lock` (so two writers take turns), the
   files go into a new staging folder `<parent>/.<name>.staging-*` (same filesystem, so
   the renames below are atomic) and are fsynced.
3. The staging folder takes the place of `<name>`: on Linux one atomic exchange
   (renameat2 RENAME_EXCHANGE), so `<name>` is at every instant the old complete report
   or the new one; elsewhere `<name>` is renamed away to `.<name>.old-*`, the staging
   folder renamed to `<name>`, then the old folder deleted, so `<name>` is briefly
   absent. A crash between those two renames leaves the old report intact in
   `.<name>.old-*`, and the next writer (under the lock) puts it back before deciding
   anything, so it is never lost. Leftover staging folders are deleted by the next
   writer (they are unfinished, or an old report already superseded).

So a report folder is complete (all its files from one run) or absent, never a mix.

What is refused (an `OutputError`, exit 2):

- a folder that already holds another audit (`results.json`, `report.html` or
  `report.pdf`), unless `force`; a folder holding the very same results (re-rendering
  in place) is not "another audit";
- a folder holding files that are not a report's, even with `force`: replacing the
  folder would delete them;
- a path that is a file, the current folder or one of its parents.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from audit.errors import AuditInputError, env_limit

REPORT_FILES = ("results.json", "report.html", "report.pdf")
RESULTS_FILE = "results.json"
# How long a writer waits for another one to finish its swap (seconds): a swap is only
# writing a few files and two renames, so a long wait means a stuck process.
LOCK_TIMEOUT_S = env_limit("AUDIT_LOCK_TIMEOUT", 120.0)


class OutputError(AuditInputError):
    """The report cannot be written where asked (refused, or the filesystem said no)."""


def os_reason(exc: OSError) -> str:
    """A short reason from an OSError ('Permission denied', 'No space left on device')."""
    return exc.strerror or (errno.errorcode.get(exc.errno or 0) if exc.errno else None) or str(exc) or type(exc).__name__


def _target(out: Path) -> Path:
    """The folder actually written: a symlink is followed, so the swap replaces the folder
    it points to rather than the link."""
    out = Path(out).expanduser()
    return out.resolve() if out.is_symlink() else out.absolute()


def holds_report(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).exists() for f in REPORT_FILES)


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of `folder` that a report does not consist of."""
    return sorted(p.name for p in folder.iterdir() if p.name not in REPORT_FILES)


def _same_results(folder: Path, results_bytes: bytes | None) -> bool:
    if results_bytes is None:
        return False
    try:
        return json.loads((folder / RESULTS_FILE).read_bytes()) == json.loads(results_bytes)
    except (OSError, ValueError):
        return False


def _describe(folder: Path) -> str:
    """'the audit "NAME" of STARTED' for messages, as far as results.json tells."""
    try:
        data = json.loads((folder / RESULTS_FILE).read_bytes())
        prov = data.get("provenance") if isinstance(data, dict) else None
        started = prov.get("started_at") if isinstance(prov, dict) else None
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str):
            return f"the audit {name!r}" + (f" of {started}" if isinstance(started, str) else "")
    except (OSError, ValueError):
        pass
    return "another audit's report"


def check_target(out: Path, *, force: bool, results_bytes: bytes | None = None) -> None:
    """Raise OutputError when `out` may not receive a report: see the module doc.
    `results_bytes` is the results.json about to be written (None: not known yet, so any
    existing report counts as another audit)."""
    shown = Path(out)
    folder = _target(out)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {shown} is a file, not a folder: choose a folder for the report")
    cwd = Path.cwd().resolve()
    if folder.exists() and (folder.resolve() == cwd or folder.resolve() in cwd.parents):
        raise OutputError(f"--out {shown} is the current folder or one of its parents: choose a folder of its own "
                          f"for the report (it is replaced as a whole)")
    if not folder.is_dir():
        return
    try:
        foreign = _foreign_entries(folder)
    except OSError as exc:
        raise OutputError(f"cannot read the output folder {shown}: {os_reason(exc)}") from None
    if foreign:
        shown_names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"--out {shown} holds files that are not part of a report ({shown_names}); the report "
                          f"folder is replaced as a whole, so choose an empty or new folder")
    if holds_report(folder) and not force and not _same_results(folder, results_bytes):
        raise OutputError(f"--out {shown} already holds {_describe(folder)}; pass --force to replace it, "
                          f"or choose another folder")


def probe_writable(out: Path) -> None:
    """Fail now, not after a long audit, when the folder's parent cannot take the report."""
    folder = _target(out)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        probe = folder.parent / f".{folder.name}.probe-{uuid.uuid4().hex[:8]}"
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputError(f"cannot write the report to {Path(out)}: {os_reason(exc)}") from None


@contextlib.contextmanager
def folder_lock(folder: Path, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive lock for writers of `folder` (a lock file beside it; works across
    processes and threads)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder.parent / f".{folder.name}.lock"), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise OutputError(f"another process has been writing to {folder} for {timeout:.0f} s; "
                          f"try again when it is done") from None
    try:
        yield
    finally:
        lock.release()


def _siblings(folder: Path, kind: str) -> list[Path]:
    prefix = f".{folder.name}.{kind}-"
    try:
        return sorted((p for p in folder.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []


def recover(folder: Path) -> None:
    """Under the lock: undo what a writer killed mid-swap left behind. Staging folders are
    unfinished (a writer only stages while holding the lock); an old folder with no
    current one is the last complete report, put back."""
    for stale in _siblings(folder, "staging"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = _siblings(folder, "old")
    if olds and not folder.exists():
        os.rename(olds[0], folder)
        olds = olds[1:]
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(out: Path, files: Mapping[str, bytes], *, force: bool = False) -> dict[str, Path]:
    """Write `files` ({file name: bytes}) as the folder `out`, atomically and under the
    folder's lock (see the module doc). Report files of the same results already in the
    folder and not rewritten now (e.g. the PDF when only the HTML is re-rendered) are
    kept. Returns {file name: final path}."""
    shown = Path(out)
    folder = _target(out)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder):
            recover(folder)
            check_target(shown, force=force, results_bytes=files.get(RESULTS_FILE))
            keep: dict[str, bytes] = {}
            if folder.is_dir() and _same_results(folder, files.get(RESULTS_FILE)):
                keep = {f: (folder / f).read_bytes() for f in REPORT_FILES
                        if f not in files and (folder / f).is_file()}
            _swap(folder, {**keep, **files})
    except OSError as exc:
        raise OutputError(f"cannot write the report to {shown}: {os_reason(exc)}") from None
    return {name: shown / name for name in files}


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE): there is no
    instant at which either is absent. False where the platform or filesystem lacks it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no glibc 2.28+ (musl, old systems)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap(folder: Path, files: Mapping[str, bytes]) -> None:
    """Stage `files` beside `folder`, then put them in its place (see the module doc)."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = folder.parent / f".{folder.name}.staging-{token}"
    os.mkdir(staging)  # honours the umask, unlike mkdtemp's 0700
    try:
        for name, data in files.items():
            _write_file(staging / name, data)
        _fsync_dir(staging)
        if not folder.exists():
            os.rename(staging, folder)
        elif _exchange(staging, folder):
            pass  # `staging` now holds the old report, removed below
        else:  # two renames: `folder` is absent in between, and `recover` undoes a crash there
            old = folder.parent / f".{folder.name}.old-{token}"
            os.rename(folder, old)
            try:
                os.rename(staging, folder)
            except BaseException:
                os.rename(old, folder)  # put the old report back
                raise
            staging = old
        _fsync_dir(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and os.replace,
    so `path` is either the old file or the complete new one (also after a crash)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
