"""Time the demo audit end to end (model from cache vs first training), per check.

    python benchmarks/bench_demo.py [--spec digits|adult] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib import resources
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="digits", choices=["digits", "adult"])
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    from audit.cli import DEMOS
    from audit.runner import run_audit
    from audit.spec import load_spec
    from reports import write_report

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AUDIT_CACHE_DIR", str(Path(tmp) / "cache"))
        path = Path(str(resources.files("fixtures") / DEMOS[args.spec]))
        for label in ("cold (trains the reference model)", "warm (model cached)"):
            t0 = time.perf_counter()
            spec = load_spec(path)
            results = run_audit(spec, device=args.device).to_json()
            t_run = time.perf_counter() - t0
            t1 = time.perf_counter()
            write_report(results, Path(tmp) / "out", {"json", "html", "pdf"})
            t_report = time.perf_counter() - t1
            print(f"{label}: audit {t_run:.2f} s + report {t_report:.2f} s = {t_run + t_report:.2f} s "
                  f"(forward samples {results['provenance']['compute']['forward_samples']}, "
                  f"backward samples {results['provenance']['compute']['backward_samples']})")
        for c in results["checks"]:
            print(f"  {c['id']:<24} {c['check']:<30} {c['duration_s']:7.3f} s  {c['status']}")
        for k, v in results["provenance"]["timings"].items():
            if not k.startswith("check:"):
                print(f"  {k:<24} {v:7.3f} s")


if __name__ == "__main__":
    main()
