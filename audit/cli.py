"""The `audit` command line.

Exit codes: 0 compliant (warnings allowed unless --strict), 1 non-compliant (for
`audit diff`: a regression), 2 invalid spec, input or output folder (one clear message,
no traceback), 3 a check errored or the suite itself failed, 4 not assessed, 130
interrupted (Ctrl-C), 141 stdout closed early (e.g. `audit diff ... | head`).

`main()` is the one place that turns exceptions into exit codes. Everything printed from
user data (spec names, check messages, paths) is printed with rich markup off, so text
such as `[/bold]` is shown as written rather than crashing the console.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from audit.errors import AuditInputError

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_ERROR = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as a shell reports them
DEMOS = {"digits": "demo_digits.yaml", "adult": "demo_adult.yaml", "text": "demo_text.yaml", "ner": "demo_ner.yaml"}
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"
_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "error": "magenta", "skipped": "dim",
                 "info": "cyan"}

err = Console(stderr=True, highlight=False)


def say(*parts: str | tuple[str, str]) -> None:
    """One line on stderr from plain strings and (text, style) pairs; the text is never
    parsed as markup, and long lines are not wrapped into several."""
    err.print(Text.assemble(*parts), soft_wrap=True, highlight=False)


def _error(message: str) -> None:
    say(("error: ", "bold red"), " ".join(str(message).split()))


def _formats(value: str) -> set[str]:
    formats = {f.strip().lower() for f in value.split(",") if f.strip()}
    unknown = formats - {"html", "pdf", "json"}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format(s): {', '.join(sorted(unknown))} (choose from html, pdf, json)")
    return formats | {"json"}


def _device(value: str) -> str:
    if not re.fullmatch(DEVICE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"unknown device {value!r} (choose auto, cpu, cuda, cuda:N or mps)")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (argparse prints the whole usage first), exit 2."""

    def error(self, message: str) -> NoReturn:
        _error(f"{self.prog}: {message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="audit", description="Audit a model against a YAML spec and write a compliance report.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, out: bool = True) -> None:
        if out:
            sp.add_argument("--out", type=Path, default=Path("audit-report"), help="output folder (default: audit-report/)")
            sp.add_argument("--format", type=_formats, default={"html", "pdf", "json"},
                            help="comma-separated: html,pdf,json (json is always written)")
            sp.add_argument("--force", action="store_true",
                            help="replace an output folder that holds another audit's report")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress output")
        sp.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")

    run = sub.add_parser("run", help="run the audit")
    run.add_argument("spec", type=Path)
    run.add_argument("--device", type=_device, help="override the spec's device (auto, cpu, cuda, cuda:N, mps)")
    run.add_argument("--strict", action="store_true", help="warnings make the audit non-compliant (exit 1)")
    run.add_argument("--engine", choices=["auto", "memory", "streaming", "ray"],
                     help="override the spec's execution.engine (ray: shard the passes over a Ray cluster)")
    run.add_argument("--mlflow", nargs="?", const="./mlruns", default=None, metavar="TRACKING_URI",
                     help="also log the audit as one MLflow run (default tracking URI: ./mlruns)")
    common(run)
    add_sign_options(run)

    demo = sub.add_parser("demo", help="run a built-in demo spec on the embedded fixtures")
    demo.add_argument("--spec", choices=sorted(DEMOS), default="digits", help="which demo (default: digits)")
    demo.add_argument("--device", type=_device)
    demo.add_argument("--strict", action="store_true")
    common(demo)
    add_sign_options(demo, demo=True)

    val = sub.add_parser("validate", help="check a spec, run nothing")
    val.add_argument("spec", type=Path)
    val.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")

    chk = sub.add_parser("checks", help="list checks, their parameters and metrics")
    chk.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")

    ren = sub.add_parser("render", help="re-render HTML/PDF from results.json without re-running")
    ren.add_argument("results", type=Path)
    common(ren)

    diff = sub.add_parser("diff", help="what changed between two audits (exit 1 on a regression)")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)
    diff.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")

    train = sub.add_parser("train", help="train the spec's model (model.train) and save it, without auditing")
    train.add_argument("spec", type=Path)
    train.add_argument("--device", type=_device)
    common(train, out=False)
    add_standards_commands(sub)
    return p


def _version() -> str:
    from audit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run one command; the single place where exceptions become exit codes."""
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SystemExit as exc:  # argparse: usage errors (exit 2), --help and --version (exit 0)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_INPUT)
    except AuditInputError as exc:
        _error(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (`| head`) went away: say nothing more, and keep the interpreter's
        # final flush from raising again (as the Python docs on SIGPIPE recommend)
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a file or folder the user named, or the disk, said no
        _error(_os_message(exc))
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback: see _internal_error
        _internal_error(exc, bool(getattr(args, "debug", False) or os.environ.get("AUDIT_DEBUG")))
        return EXIT_ERROR


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests)
        pass


def _os_message(exc: OSError) -> str:
    from audit.outputs import os_reason

    where = exc.filename if exc.filename is not None else None
    return f"{os_reason(exc)}: {where}" if where else os_reason(exc)


def _internal_error(exc: BaseException, debug: bool) -> None:
    """An exception nobody anticipated: a bug here or in a plugin check. One line, and the
    traceback in a log file (printed too with --debug), never a raw traceback by default."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if debug:
        err.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    log = None
    try:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        fd, log = tempfile.mkstemp(prefix=f"audit-crash-{stamp}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        log = None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):  # `zlib.error`, not a bare `error`
        kind = f"{type(exc).__module__}.{kind}"
    where = f"traceback in {log}" if log else "rerun with --debug for the traceback"
    _error(f"unexpected {kind}{': ' + first if first else ''} (an internal error of the audit suite or a "
           f"plugin, or an input it does not yet recognise; {where})")


# ---- progress ----------------------------------------------------------------------------
@contextmanager
def progress_reporter(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # ~0.15 s

    # descriptions hold dataset names from the spec: plain text, not markup
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int, detail: str | None = None) -> None:
            # `detail` (e.g. training's per-epoch loss and metric) trails the description
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total,
                       description=f"{what} · {detail}" if detail else what)

        yield update


def _print_check(result: Any) -> None:
    say("  ", (f"{result.status:>7}", _STATUS_STYLE.get(result.status, "")), f" {result.id} ({result.check}) ",
        (f"{result.duration_s:.1f}s", "dim"), f"  {result.message}")


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """The verdict and, by kind, what keeps the audit from a clean pass (plain text)."""
    s = results["summary"]
    counts = ", ".join(f"{v} {k}" for k, v in s.items() if v)
    lines = [f"{results['verdict']}: {counts or 'no checks'}"]
    if results["verdict"] == "not assessed":
        lines.append("  nothing was judged: no check has a threshold (add `thresholds:` to the spec's checks)")
    labels = {"must_fail": "must-level failure", "should_fail": "should-level failure",
              "inconclusive": "inconclusive", "small_sample": "too few samples",
              "holm": "not significant after Holm", "flag": "sanity flag"}
    for c in results["checks"]:
        for r in c.get("reasons") or []:
            lines.append(f"  {labels.get(r.get('kind'), r.get('kind'))} in {c['id']}: {r.get('text')}")
    return lines


# ---- commands ----------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, spec_path: Path | None = None) -> int:
    from audit.outputs import check_target, probe_writable
    from audit.results import exit_code
    from audit.runner import run_audit
    from audit.spec import load_spec

    mlflow_uri = getattr(args, "mlflow", None)
    if mlflow_uri is not None:
        from audit.mlflow_log import require_mlflow

        require_mlflow()
    spec = load_spec(spec_path or args.spec)
    if getattr(args, "engine", None):
        spec.execution = spec.execution.model_copy(update={"engine": args.engine})
    if spec.execution.engine == "ray":  # Ray missing: one message, before anything is read
        from audit.engines import RayEngine

        RayEngine.require()
    # refuse before the audit runs, not after: a taken or unwritable folder is known now
    check_target(args.out, force=args.force)
    probe_writable(args.out)
    signing = prepare_signing(args)
    if not args.quiet:
        say((spec.name, "bold"), f" — {len(spec.checks)} checks")
    with progress_reporter(args.quiet) as progress:
        results = run_audit(spec, device=args.device, progress=progress,
                            on_check=None if args.quiet else _print_check).to_json()
    # how the data were read (class order taken from the data, resized images); the report
    # records them too, so --quiet leaves them out
    if not args.quiet:
        for note in dict.fromkeys(n for d in results["datasets"].values() for n in d.get("notices") or []):
            err.print(f"note: {note}", markup=False, soft_wrap=True, highlight=False)
    paths = _write(signing.mark(results) if signing else results, args.out, args.format, args.quiet,
                   force=args.force)
    if signing:
        signing.sign(args.out, spec_path or args.spec, args.quiet)
    if mlflow_uri is not None:  # after the report: a broken tracking URI is one error (exit 2)
        from audit.mlflow_log import log_audit

        run_id = log_audit(results, paths, mlflow_uri)
        if not args.quiet:
            err.print(f"MLflow run {run_id} at {mlflow_uri}", markup=False, soft_wrap=True)
    code = exit_code(results, strict=args.strict)
    if not args.quiet:
        for line in verdict_lines(results):
            say(line)
        say("report: " + ", ".join(str(p) for p in paths.values()))
    if code == EXIT_ERROR:  # exit 3 says why, even with --quiet: CI logs show the check that broke
        _error(_errored_line(results))
    return code


def _errored_line(results: dict[str, Any]) -> str:
    broken = [c for c in results["checks"] if c.get("status") == "error"]
    first = broken[0] if broken else {}
    what = ", ".join(c["id"] for c in broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
    return (f"{len(broken)} check{'s' if len(broken) != 1 else ''} raised an error: {what} "
            f"({first.get('message', '')}); the report records the traceback")


def _write(results: dict[str, Any], out: Path, formats: set[str], quiet: bool, *, force: bool) -> dict[str, Path]:
    from reports import write_report

    if not quiet:
        say(f"writing {', '.join(sorted(formats))} to {out}/")
    return write_report(results, out, formats, force=force)


def cmd_demo(args: argparse.Namespace) -> int:
    with resources.as_file(resources.files("fixtures") / DEMOS[args.spec]) as path:
        return cmd_run(args, spec_path=Path(path))


def cmd_validate(args: argparse.Namespace) -> int:
    """Everything that needs no forward pass (audit.validate); prints what will be imported."""
    from audit.spec import load_spec
    from audit.validate import validate_inputs

    spec = load_spec(args.spec)
    checked = validate_inputs(spec)
    print(f"{args.spec}: valid ({len(spec.checks)} checks, datasets: {', '.join(spec.dataset_names())})")
    print("\n".join(checked.lines()))
    ex = spec.execution
    if ex.engine == "ray":
        from audit.engines import RayEngine

        ray = RayEngine.require()
        print(f"  execution: ray at {ex.address} ({ex.num_workers} workers, {ex.num_gpus_per_worker:g} GPU each; "
              f"Ray {ray.__version__} installed; the address is not contacted)")
    elif ex.engine != "auto":
        print(f"  execution: {ex.engine}")
    if spec.profiles:
        print("standards: " + ", ".join(f"{p.name} ({len(p.clauses)} clauses)" for p in spec.profiles))
    return EXIT_OK


def cmd_checks(args: argparse.Namespace) -> int:
    from audit.registry import registry

    console = Console(highlight=False)
    table = Table(title="Registered checks", show_lines=True, expand=True)
    # fold, not truncate: long metric names must not squeeze check names into "…"
    table.add_column("check", overflow="fold", ratio=3, min_width=max(map(len, registry.names()), default=10))
    table.add_column("metrics (headline first; ↑ higher is better)", overflow="fold", ratio=3)
    table.add_column("parameters", overflow="fold", ratio=2)
    for name in registry.names():
        try:
            cls = registry.get(name)
        except Exception as exc:  # noqa: BLE001 - list what is broken instead of failing the listing
            table.add_row(escape(name), Text(f"cannot import: {exc}", style="red"), "")
            continue
        metrics = "\n".join(f"{m}{' ↑' if spec.higher_is_better else ' ↓'}" + (f" ({spec.unit})" if spec.unit else "")
                             for m, spec in cls.metrics.items())
        params = []
        for pname, field in cls.Params.model_fields.items():
            if pname in ("data", "confidence"):
                continue
            if field.is_required():
                params.append(f"{pname} (required)")
                continue
            default = field.get_default(call_default_factory=True)
            default = default if default is not None else "—"
            params.append(f"{pname}={default!r}" if not callable(default) else pname)
        # third-party checks name themselves: their text is data, not markup
        table.add_row(Text.assemble((name, "bold"), "\n", str(cls.summary)), Text(metrics), Text("\n".join(params)))
    console.print(table)
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from audit.results import load_results

    results = load_results(args.results)
    paths = _write(results, args.out, args.format, args.quiet, force=args.force)
    if not args.quiet:
        say("wrote " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit 1 when the new audit regressed (see reports.diff.regressions), else 0."""
    from audit.results import load_results
    from reports.diff import diff_results, format_diff, regressions

    old, new = load_results(args.old), load_results(args.new)
    rows = diff_results(old, new)
    print(format_diff(rows, old=old, new=new), flush=True)
    return EXIT_FAIL if regressions(rows) else EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from audit.spec import load_spec
    from audit.training import train_and_save

    spec = load_spec(args.spec)
    if spec.model.train is None:
        raise AuditInputError("the spec has no model.train section", where=f"{spec.source}: model")
    with progress_reporter(args.quiet) as progress:
        loaded = train_and_save(spec, device=args.device, progress=progress)
    record = loaded.training or {}
    print(json.dumps({k: record.get(k) for k in ("best_epoch", "wall_s", "device", "seed", "model_sha256", "saved_to")},
                     indent=2), flush=True)
    return EXIT_OK


# ---- standards and signatures ---------------------------------------------------------------
def add_sign_options(sp: argparse.ArgumentParser, demo: bool = False) -> None:
    """`--sign` on run/demo: sign the written report (see `audit sign`)."""
    sp.add_argument("--sign", action="store_true",
                    help="sign the report: a signed manifest of hashes and a PAdES-signed PDF"
                         + (" (with a throw-away demo key unless --key/--cert are given)" if demo
                            else " (needs --key and --cert)"))
    sp.add_argument("--key", type=Path, help="private key for --sign (PEM or DER; $AUDIT_KEY_PASSPHRASE if encrypted)")
    sp.add_argument("--cert", type=Path, help="the key's X.509 certificate for --sign (PEM or DER)")
    sp.set_defaults(demo_key=demo)


def add_standards_commands(sub: Any) -> None:
    sign = sub.add_parser("sign", help="sign a report folder: manifest of SHA-256 hashes + PAdES-signed PDF")
    sign.add_argument("dir", type=Path, help="the report folder (results.json, report.html, report.pdf)")
    sign.add_argument("--key", type=Path, required=True, help="private key (PEM or DER; $AUDIT_KEY_PASSPHRASE if encrypted)")
    sign.add_argument("--cert", type=Path, required=True, help="the key's X.509 certificate (PEM or DER)")
    sign.add_argument("--spec", type=Path, help="the audit spec: refused unless it is the one the audit ran")

    ver = sub.add_parser("verify", help="check a signed report folder: signatures and hashes (exit 1 if tampered)")
    ver.add_argument("dir", type=Path)
    ver.add_argument("--trust", type=Path, action="append", default=[], metavar="CERT",
                     help="require the signer to chain to this certificate (repeatable); without it an "
                          "intact signature by an unknown signer is accepted and reported as not trusted")
    ver.add_argument("--spec", type=Path, help="also check that this spec is the one the audit ran")

    std = sub.add_parser("standards", help="list the standard profiles, or check and show profiles")
    std.add_argument("profiles", nargs="*", help="shipped profile names or profile YAML files")


class _Signing:
    """What `--sign` on run/demo needs: the signer, read before the audit runs (a bad key
    fails fast), and for the demo a throw-away key in a temporary folder."""

    def __init__(self, key: Path, cert: Path, formats: set[str], throwaway: Any = None) -> None:
        from audit.signing import read_identity

        self.identity = read_identity(key, cert)
        self.formats = formats
        self.throwaway = throwaway  # the TemporaryDirectory holding a demo key, removed after signing

    def mark(self, results: dict[str, Any]) -> dict[str, Any]:
        """The results with the note the report's cover shows (rendered before signing)."""
        files = [f for f, fmt in (("results.json", "json"), ("report.html", "html"), ("report.pdf", "pdf"))
                 if fmt in self.formats]
        return {**results, "signing": {"signer": self.identity.subject, "throwaway": self.throwaway is not None,
                                       "files": files}}

    def sign(self, out: Path, spec: Path, quiet: bool) -> None:
        from audit.signing import sign_report

        try:
            manifest = sign_report(out, self.identity.key_path, self.identity.cert_path, spec=spec)
        finally:
            if self.throwaway is not None:
                self.throwaway.cleanup()
        if not quiet:
            err.print(f"signed {', '.join(manifest['files'])} at {manifest['signed_at']} as "
                      f"{self.identity.subject}: {out / 'manifest.json'}, {out / 'manifest.json.p7s'}",
                      markup=False, soft_wrap=True)
            if self.throwaway is not None:
                err.print("signed with a throw-away demo key (now deleted): not a trusted signature; "
                          "it shows the files are unchanged, not who signed them", markup=False, soft_wrap=True)


def prepare_signing(args: argparse.Namespace) -> _Signing | None:
    if not getattr(args, "sign", False):
        if getattr(args, "key", None) or getattr(args, "cert", None):
            raise AuditInputError("--key and --cert are used with --sign")
        return None
    if (args.key is None) != (args.cert is None):
        raise AuditInputError("--sign needs both --key and --cert")
    if args.key is None:
        if not getattr(args, "demo_key", False):
            raise AuditInputError("--sign needs --key KEY and --cert CERT (the demo alone signs with a throw-away key)")
        import tempfile

        from audit.signing import make_throwaway_identity

        tmp = tempfile.TemporaryDirectory(prefix="audit-demo-key-")
        ident = make_throwaway_identity(tmp.name)
        return _Signing(ident.key_path, ident.cert_path, set(args.format), throwaway=tmp)
    return _Signing(args.key, args.cert, set(args.format))


def cmd_sign(args: argparse.Namespace) -> int:
    from audit.signing import sign_report

    manifest = sign_report(args.dir, args.key, args.cert, spec=args.spec)
    print(f"signed {args.dir} at {manifest['signed_at']} as {manifest['signer']['subject']}")
    for name, digest in manifest["files"].items():
        print(f"  {name:<13} sha256 {digest}")
    print(f"  spec          sha256 {manifest['spec_sha256']}")
    print(f"wrote {args.dir / 'manifest.json'} and {args.dir / 'manifest.json.p7s'}; report.pdf carries a PAdES signature"
          if "report.pdf" in manifest["files"] else
          f"wrote {args.dir / 'manifest.json'} and {args.dir / 'manifest.json.p7s'}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from audit.signing import verify_report

    v = verify_report(args.dir, trust=args.trust, spec=args.spec)
    for f in v.findings:
        print(f"  {'ok' if f.ok else 'FAILED':<6} {f.file:<17} {f.text}")
    m = v.manifest or {}
    if v.ok:
        signer = (m.get("signer") or {}).get("subject", "?")
        print(f"intact: {', '.join(m.get('files', {}))} as signed at {m.get('signed_at')} by {signer}"
              + ("" if v.trusted else " (signer not trusted)"))
        return EXIT_OK
    print(f"tampered or not as signed: {', '.join(v.tampered)}")
    return EXIT_FAIL


def cmd_standards(args: argparse.Namespace) -> int:
    from audit.standards import ALIASES, builtin_names, load_profile

    console = Console(highlight=False)
    if not args.profiles:
        table = Table(title="Standard profiles (select with `standards:` in a spec)", expand=True)
        for col in ("profile", "title", "clauses", "evidenced by checks", "attestations"):
            table.add_column(col, overflow="fold")
        for name in builtin_names():
            p = load_profile(name)
            n_att = sum(c.attestation for c in p.clauses)
            table.add_row(name, p.title, str(len(p.clauses)), str(len(p.clauses) - n_att), str(n_att))
        for alias, names in ALIASES.items():
            table.add_row(alias, "= " + " + ".join(names), "", "", "")
        console.print(table)
        return EXIT_OK
    for ref in args.profiles:
        p = load_profile(ref, base_dir=Path.cwd())
        console.print(f"[bold]{escape(p.name)}[/]: {escape(p.title)} — {len(p.clauses)} clauses, valid"
                      + (f"\n[dim]{escape(p.source)}[/]" if p.source else ""))
        for c in p.clauses:
            what = "attestation" if c.attestation else "; ".join(
                (f"{e.check}" + (f" ({', '.join(e.metrics)})" if e.metrics else "")) if e.check else f"record: {e.record}"
                for e in c.evidence)
            console.print(f"  {escape(c.id):<22} {escape(c.title)}\n  {'':<22} [dim]{escape(what)}[/]")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "demo": cmd_demo, "validate": cmd_validate, "checks": cmd_checks,
    "render": cmd_render, "diff": cmd_diff, "train": cmd_train,
    "sign": cmd_sign, "verify": cmd_verify, "standards": cmd_standards,
}

if __name__ == "__main__":
    sys.exit(main())
