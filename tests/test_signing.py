"""Dated and signed reports: `audit sign` writes a signed manifest of hashes and a
PAdES-signed PDF; `audit verify` exits 0 on the untouched folder, 1 naming the file after
any change (a byte of results.json, a metric in the PDF, the manifest, its signature), and
2 for a folder that is not a signed report. Keys are throw-away ones made with
`cryptography` for each test session."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pyhanko")
pytest.importorskip("cryptography")

from audit.cli import main, prepare_signing  # noqa: E402
from audit.signing import MANIFEST, SIGNATURE, make_throwaway_identity, sign_report, verify_report  # noqa: E402
from reports import write_report  # noqa: E402


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def tiny_results(accuracy: float = 0.97) -> dict:
    return {
        "schema": "audit-results/1", "name": "Signed audit", "standard": None, "verdict": "compliant",
        "summary": {"pass": 1, "warn": 0, "fail": 0, "error": 0, "skipped": 0, "info": 0},
        "checks": [{"id": "heldout", "check": "performance.classification", "version": 1, "clause": "4.1",
                    "status": "pass", "data": "test", "area": "evaluation", "summary": "", "confidence": 0.95,
                    "params": {}, "metrics": {"accuracy": {"value": accuracy, "ci": [accuracy - 0.02, accuracy + 0.01]}},
                    "metric_info": {"accuracy": {"higher_is_better": True}},
                    "thresholds": [{"metric": "accuracy", "op": "min", "limit": 0.9, "level": "must", "status": "pass"}],
                    "message": "", "evidence": [], "duration_s": 0.1, "traceback": None}],
        "datasets": {}, "model": None, "training": None,
        "provenance": {"spec_sha256": "ab" * 32, "started_at": "2025-01-01T00:00:00+00:00"},
    }


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    return make_throwaway_identity(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, keys) -> Path:
    """A report folder (json, html, pdf) signed once for the module; tests tamper with copies."""
    folder = tmp_path_factory.mktemp("signed") / "report"
    write_report(tiny_results(), folder, {"json", "html", "pdf"})
    sign_report(folder, keys.key_path, keys.cert_path)
    return folder


@pytest.fixture
def copy(signed: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(signed, tmp_path / "report"))


def test_manifest_lists_hashes_time_and_signer(signed: Path, keys) -> None:
    m = json.loads((signed / MANIFEST).read_text())
    assert m["schema"] == "audit-manifest/1"
    assert set(m["files"]) == {"results.json", "report.html", "report.pdf"}
    assert m["spec_sha256"] == "ab" * 32 and m["signed_at"].endswith("Z")
    assert m["signer"] == {"subject": keys.subject, "certificate_sha256": keys.fingerprint}
    assert (signed / SIGNATURE).stat().st_size > 100
    assert not list(signed.glob(".*.tmp"))


def test_fresh_report_verifies(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "verify", str(signed))
    assert code == 0, out
    assert "PDF signature 'AuditSignature' (PAdES) intact, covers the whole file" in out
    assert "signer not trusted" in out and out.strip().splitlines()[-1].startswith("intact:")


def test_trust(signed: Path, keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "verify", str(signed), "--trust", str(keys.cert_path))
    assert code == 0 and "signer trusted" in out and "not trusted" not in out
    stranger = make_throwaway_identity(tmp_path / "other", common_name="someone else")
    code, out = run(capsys, "verify", str(signed), "--trust", str(stranger.cert_path))
    assert code == 1 and "NOT trusted by the certificates given with --trust" in out


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_byte_of_results_json(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (copy / "results.json").read_text()
    (copy / "results.json").write_text(text.replace('"value": 0.97', '"value": 0.98', 1))
    code, out = run(capsys, "verify", str(copy))
    assert code == 1
    assert "FAILED results.json" in out and "tampered or not as signed: results.json" in out


def test_pdf_byte_inside_the_signed_range(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _flip_byte(copy / "report.pdf", 400)
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and "tampered or not as signed: report.pdf" in out
    assert "does not match the signed bytes" in out or "cannot read" in out


def test_metric_overprinted_on_the_pdf(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The way a PDF editor changes a number: an incremental update drawing another value
    over the page. The original signature stays intact but no longer covers the file."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.stamp import TextStamp, TextStampStyle

    writer = IncrementalPdfFileWriter(io.BytesIO((copy / "report.pdf").read_bytes()), strict=False)
    TextStamp(writer, style=TextStampStyle(stamp_text="accuracy 0.999", border_width=0)).apply(0, 100, 400)
    out_pdf = io.BytesIO()
    writer.write(out_pdf)
    (copy / "report.pdf").write_bytes(out_pdf.getvalue())
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and "tampered or not as signed: report.pdf" in out
    assert "no longer covers the whole file" in out


def test_pdf_rerendered_with_another_metric(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reports import render_html
    from reports.pdf import pdf_bytes

    (copy / "report.pdf").write_bytes(pdf_bytes(render_html(tiny_results(0.99)), copy))
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and "the PDF carries no signature" in out and "tampered or not as signed: report.pdf" in out


def test_manifest_and_signature_tampering(copy: Path, signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = json.loads((copy / MANIFEST).read_text())
    m["signed_at"] = "2020-01-01T00:00:00Z"
    (copy / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and "tampered or not as signed: manifest.json" in out
    shutil.copy(signed / MANIFEST, copy / MANIFEST)
    (copy / SIGNATURE).unlink()
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and f"tampered or not as signed: {SIGNATURE}" in out
    (copy / SIGNATURE).write_bytes(b"not a signature")
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and SIGNATURE in out.splitlines()[-1]


def test_files_missing_or_added_after_signing(tmp_path: Path, keys, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "r"
    write_report(tiny_results(), folder, {"json"})
    sign_report(folder, keys.key_path, keys.cert_path)
    assert run(capsys, "verify", str(folder))[0] == 0
    (folder / "report.html").write_text("<html>not signed</html>")
    code, out = run(capsys, "verify", str(folder))
    assert code == 1 and "report.html" in out.splitlines()[-1] and "added after signing" in out
    (folder / "report.html").unlink()
    (folder / "results.json").unlink()
    code, out = run(capsys, "verify", str(folder))
    assert code == 1 and "results.json" in out.splitlines()[-1] and "missing" in out


def test_bad_input_exits_2(tmp_path: Path, keys, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "r"
    write_report(tiny_results(), folder, {"json"})
    code, out = run(capsys, "verify", str(folder))
    assert code == 2 and "no manifest.json" in out
    code, out = run(capsys, "verify", str(tmp_path / "nowhere"))
    assert code == 2 and "not found" in out
    code, out = run(capsys, "sign", str(tmp_path), "--key", str(keys.key_path), "--cert", str(keys.cert_path))
    assert code == 2 and "no results.json" in out
    other = make_throwaway_identity(tmp_path / "other")
    code, out = run(capsys, "sign", str(folder), "--key", str(other.key_path), "--cert", str(keys.cert_path))
    assert code == 2 and "does not belong to the certificate" in out
    code, out = run(capsys, "sign", str(folder), "--key", str(tmp_path / "none.pem"), "--cert", str(keys.cert_path))
    assert code == 2 and "key file not found" in out
    (tmp_path / "spec.yaml").write_text("name: other\n")
    code, out = run(capsys, "sign", str(folder), "--key", str(keys.key_path), "--cert", str(keys.cert_path),
                    "--spec", str(tmp_path / "spec.yaml"))
    assert code == 2 and "not the one the audit ran" in out
    assert not (folder / MANIFEST).exists()


def test_pdf_signature_seen_by_poppler(signed: Path) -> None:
    """Any PDF reader shows the signature: poppler's pdfsig checks it independently of pyHanko."""
    if shutil.which("pdfsig") is None:
        pytest.skip("poppler-utils (pdfsig) not installed")
    out = subprocess.run(["pdfsig", str(signed / "report.pdf")], capture_output=True, text=True, timeout=60).stdout
    assert "Signature is Valid." in out and "Total document signed" in out


def test_demo_signing_uses_a_throwaway_key(tmp_path: Path) -> None:
    import hashlib

    args = argparse.Namespace(sign=True, key=None, cert=None, demo_key=True, format={"json", "html"})
    signing = prepare_signing(args)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: demo\n")
    results = tiny_results()
    results["provenance"]["spec_sha256"] = hashlib.sha256(spec.read_bytes()).hexdigest()
    marked = signing.mark(results)
    assert marked["signing"]["throwaway"] is True and "throw-away" in marked["signing"]["signer"]
    assert marked["signing"]["files"] == ["results.json", "report.html"]
    key_dir = Path(signing.throwaway.name)
    folder = tmp_path / "r"
    write_report(marked, folder, {"json", "html"})
    signing.sign(folder, spec, quiet=True)
    assert not key_dir.exists(), "the throw-away key is deleted once used"
    assert verify_report(folder, spec=spec).ok
    with pytest.raises(Exception, match="--sign needs --key KEY and --cert CERT"):
        prepare_signing(argparse.Namespace(sign=True, key=None, cert=None, demo_key=False, format={"json"}))


RUN_SPEC = """\
name: Signed run
standards: [eu-ai-act-art15]
model: {fixture: digits-cnn}
data:
  test: {fixture: digits, split: test}
checks:
  - {id: heldout, check: performance.classification, thresholds: {accuracy: {min: 0.5}}}
"""


def test_run_sign_end_to_end(tmp_path: Path, keys, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "audit.yaml"
    spec.write_text(RUN_SPEC)
    out = tmp_path / "out"
    code, text = run(capsys, "run", str(spec), "--out", str(out), "--quiet", "--sign",
                     "--key", str(keys.key_path), "--cert", str(keys.cert_path))
    assert code == 0, text
    results = json.loads((out / "results.json").read_text())
    assert results["signing"]["signer"] == keys.subject and results["signing"]["throwaway"] is False
    assert [s["name"] for s in results["standards"]] == ["eu-ai-act-art15"]
    rows = {r["id"]: r["coverage"] for r in results["standards"][0]["clauses"]}
    assert rows["15(3)"] == "partial" and rows["15(4) ¶2"] == "attestation"
    assert "Digitally signed." in (out / "report.html").read_text()
    code, text = run(capsys, "verify", str(out), "--spec", str(spec))
    assert code == 0, text
    code, text = run(capsys, "run", str(spec), "--out", str(tmp_path / "o2"), "--quiet", "--sign")
    assert code == 2 and "--sign needs --key KEY and --cert CERT" in text


def test_manifest_resigned_by_another_key_naming_the_first_signer(copy: Path, keys, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Someone with another key re-signs the manifest but leaves the original signer's name in it."""
    from audit.signing import _sign_cms

    other = make_throwaway_identity(tmp_path / "other", common_name="forger")
    (copy / SIGNATURE).write_bytes(_sign_cms((copy / MANIFEST).read_bytes(), other))
    code, out = run(capsys, "verify", str(copy))
    assert code == 1 and "names a signer other than the certificate that signed it" in out
