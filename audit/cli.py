"""The `audit` command line.

Exit codes: 0 compliant (warnings allowed unless --strict), 1 non-compliant,
2 invalid spec or input (one clear message, no traceback), 3 a check errored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audit.errors import AuditInputError

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_ERROR = 0, 1, 2, 3
DEMOS = {"digits": "demo_digits.yaml", "adult": "demo_adult.yaml", "text": "demo_text.yaml", "ner": "demo_ner.yaml"}
_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "error": "magenta", "skipped": "dim",
                 "info": "cyan"}

err = Console(stderr=True, highlight=False)


def _formats(value: str) -> set[str]:
    formats = {f.strip().lower() for f in value.split(",") if f.strip()}
    unknown = formats - {"html", "pdf", "json"}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format(s): {', '.join(sorted(unknown))} (choose from html, pdf, json)")
    return formats | {"json"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audit", description="Audit a model against a YAML spec and write a compliance report.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, out: bool = True) -> None:
        if out:
            sp.add_argument("--out", type=Path, default=Path("audit-report"), help="output folder (default: audit-report/)")
            sp.add_argument("--format", type=_formats, default={"html", "pdf", "json"},
                            help="comma-separated: html,pdf,json (json is always written)")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    run = sub.add_parser("run", help="run the audit")
    run.add_argument("spec", type=Path)
    run.add_argument("--device", help="override the spec's device (auto, cpu, cuda, cuda:N)")
    run.add_argument("--strict", action="store_true", help="warnings make the audit non-compliant (exit 1)")
    common(run)

    demo = sub.add_parser("demo", help="run a built-in demo spec on the embedded fixtures")
    demo.add_argument("--spec", choices=sorted(DEMOS), default="digits", help="which demo (default: digits)")
    demo.add_argument("--device")
    demo.add_argument("--strict", action="store_true")
    common(demo)

    val = sub.add_parser("validate", help="check a spec, run nothing")
    val.add_argument("spec", type=Path)

    sub.add_parser("checks", help="list checks, their parameters and metrics")

    ren = sub.add_parser("render", help="re-render HTML/PDF from results.json without re-running")
    ren.add_argument("results", type=Path)
    common(ren)

    diff = sub.add_parser("diff", help="what changed between two audits")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)

    train = sub.add_parser("train", help="train the spec's model (model.train) and save it, without auditing")
    train.add_argument("spec", type=Path)
    train.add_argument("--device")
    common(train, out=False)
    return p


def _version() -> str:
    from audit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AuditInputError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        return EXIT_INPUT
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


# ---- progress ----------------------------------------------------------------------------
@contextmanager
def progress_reporter(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if quiet:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int, detail: str | None = None) -> None:
            # `detail` (e.g. training's per-epoch loss and metric) trails the description
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total,
                       description=f"{what} · {detail}" if detail else what)

        yield update


def _print_check(result: Any) -> None:
    style = _STATUS_STYLE.get(result.status, "")
    err.print(f"  [{style}]{result.status:>7}[/] {escape(result.id)} ({escape(result.check)}) "
              f"[dim]{result.duration_s:.1f}s[/]  {escape(result.message)}", markup=True, soft_wrap=True)


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
    from audit.results import exit_code
    from audit.runner import run_audit
    from audit.spec import load_spec

    spec = load_spec(spec_path or args.spec)
    if not args.quiet:
        err.print(f"[bold]{escape(spec.name)}[/] — {len(spec.checks)} checks", markup=True)
    with progress_reporter(args.quiet) as progress:
        results = run_audit(spec, device=args.device, progress=progress,
                            on_check=None if args.quiet else _print_check).to_json()
    # how the data were read (class order taken from the data, resized images): said even when quiet
    for note in dict.fromkeys(n for d in results["datasets"].values() for n in d.get("notices") or []):
        err.print(f"note: {note}", markup=False, soft_wrap=True, highlight=False)
    paths = _write(results, args.out, args.format, args.quiet)
    code = exit_code(results, strict=args.strict)
    if not args.quiet:
        for line in verdict_lines(results):
            err.print(line, markup=False, soft_wrap=True, highlight=False)
        err.print("report: " + ", ".join(str(p) for p in paths.values()), markup=False, soft_wrap=True)
    return code


def _write(results: dict[str, Any], out: Path, formats: set[str], quiet: bool) -> dict[str, Path]:
    from reports import write_report

    if not quiet:
        err.print(f"writing {', '.join(sorted(formats))} to {out}/")
    return write_report(results, out, formats)


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
            table.add_row(name, f"[red]cannot import: {exc}[/]", "")
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
        table.add_row(f"[bold]{name}[/]\n{cls.summary}", metrics, "\n".join(params))
    console.print(table)
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from audit.results import load_results

    results = load_results(args.results)
    paths = _write(results, args.out, args.format, args.quiet)
    if not args.quiet:
        err.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from audit.results import load_results
    from reports.diff import diff_results, format_diff

    old, new = load_results(args.old), load_results(args.new)
    print(format_diff(diff_results(old, new)))
    return EXIT_OK


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
                     indent=2))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "demo": cmd_demo, "validate": cmd_validate, "checks": cmd_checks,
    "render": cmd_render, "diff": cmd_diff, "train": cmd_train,
}

if __name__ == "__main__":
    sys.exit(main())
