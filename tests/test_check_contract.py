"""Every registered check meets the contract (tests/check_contract.py), and so does a
third-party check installed as a distribution with an `audit.checks` entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from audit.registry import Registry, RegistryError, registry
from tests.check_contract import assert_check_contract

THIRD_PARTY = Path(__file__).parent / "third_party"


@pytest.mark.parametrize("name", registry.names())
def test_check_meets_the_contract(name: str) -> None:
    assert_check_contract(registry.get(name))


def test_a_third_party_check_is_found_through_its_entry_point_and_meets_the_contract(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A distribution on sys.path (dist-info with an entry_points.txt), as pip installs one.
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    fresh = Registry()
    assert "example.mean_confidence" in fresh.names()
    cls = fresh.get("example.mean_confidence")
    assert cls.__module__ == "audit_example_checks.confidence"
    assert_check_contract(cls)
    sys.modules.pop("audit_example_checks.confidence", None)
    sys.modules.pop("audit_example_checks", None)


def test_registering_something_that_is_not_a_check_is_a_clear_error(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "bogus_checks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "thing.py").write_text(
        "from audit.registry import register_check\n\n"
        "@register_check\nclass NotACheck:\n    name = 'bogus.thing'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    reg.add_source("bogus_checks")
    assert "bogus.thing" in reg.names()
    with pytest.raises(RegistryError, match="not a Check subclass"):
        reg.get("bogus.thing")
    sys.modules.pop("bogus_checks.thing", None)
    sys.modules.pop("bogus_checks", None)


def test_a_duplicate_name_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "dup_checks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    body = ("from audit.registry import register_check\nfrom audit.check import Check\n\n"
            "@register_check\nclass C{i}(Check):\n    name = 'performance.classification'\n")
    (pkg / "one.py").write_text(body.format(i=1))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    reg.names()
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add_source("dup_checks")


def test_listing_the_checks_imports_none_of_them() -> None:
    import subprocess

    code = ("import sys; from audit.registry import registry; names = registry.names(); "
            "assert len(names) >= 12, names; "
            "loaded = [m for m in sys.modules if m.startswith('checks.') or m in ('torch', 'captum', 'shap')]; "
            "print(loaded); assert not loaded, loaded")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_scan_is_kept_per_file_and_a_changed_file_is_read_again(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ast
    import os

    from audit import registry as reg_module

    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    pkg = tmp_path / "cached_checks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    body = ("from audit.registry import register_check\nfrom audit.check import Check\n\n"
            "@register_check\nclass A(Check):\n    name = '{name}'\n")
    (pkg / "a.py").write_text(body.format(name="cached.one"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reg_module.scan("cached_checks") == {"cached.one": "cached_checks.a:A"}
    assert (tmp_path / "cache" / "registry-scan.json").exists()

    parsed: list[str] = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda src, filename="<unknown>", **kw: (
        parsed.append(str(filename)), real_parse(src, filename=filename, **kw))[1])
    assert reg_module.scan("cached_checks") == {"cached.one": "cached_checks.a:A"}
    assert parsed == []  # every file from the cache
    (pkg / "a.py").write_text(body.format(name="cached.renamed"))
    st = (pkg / "a.py").stat()
    os.utime(pkg / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert reg_module.scan("cached_checks") == {"cached.renamed": "cached_checks.a:A"}
    assert parsed == [str(pkg / "a.py")]  # only the file that changed

    # a broken cache file, or one that cannot be written, is not an error: the files are read
    (tmp_path / "cache" / "registry-scan.json").write_text("{not json")
    assert reg_module.scan("cached_checks") == {"cached.renamed": "cached_checks.a:A"}
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("")
    assert reg_module.scan("cached_checks") == {"cached.renamed": "cached_checks.a:A"}
