"""Dated and signed reports: a signed manifest of hashes, and a PAdES-signed PDF.

``sign_report(DIR, key, cert)``:

1. signs ``report.pdf`` itself with a PAdES B-B signature (pyHanko; the field
   ``AuditSignature``), so that any PDF reader shows it as signed;
2. writes ``manifest.json``: the SHA-256 of ``results.json``, ``report.html`` and the
   signed ``report.pdf`` (those present), the spec's SHA-256 (from the results'
   provenance), the signing time in UTC and the signer certificate's subject and
   SHA-256 fingerprint;
3. writes ``manifest.json.p7s``: a detached CMS (PKCS#7) signature over the manifest's
   bytes, carrying the signer's certificate.

Each file is written atomically (a temporary file renamed into place). The PDF is
replaced first, then the manifest, then its signature: a folder left half-signed by a
crash fails verification rather than passing it.

``verify_report(DIR)`` checks the manifest's signature against the certificate inside it,
every listed file's hash, that no report file is present unlisted, and every PDF
signature (intact, the last one covering the whole file, made by the manifest's signer).

Trust: a signature proves that the files are unchanged since a holder of the key signed
them. Who that is needs a certificate the reader trusts. Without ``trust``, a self-signed
or otherwise unknown signer is reported as "intact, signer not trusted" and accepted;
with ``trust=[CERT, ...]`` the signer must chain to one of them, or verification fails.

Needs the ``sign`` extra (pyHanko, cryptography); without it, signing and verifying raise
an AuditInputError that says how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import AuditInputError
from audit.outputs import atomic_write_bytes

__all__ = ["MANIFEST", "MANIFEST_SCHEMA", "SIGNATURE", "SIGNED_FILES", "Finding", "Verification",
           "make_throwaway_identity", "read_identity", "sign_report", "verify_report"]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.p7s"
MANIFEST_SCHEMA = "audit-manifest/1"
SIGNED_FILES = ("results.json", "report.html", "report.pdf")
PDF_FIELD = "AuditSignature"
PASSPHRASE_ENV = "AUDIT_KEY_PASSPHRASE"
_EXTRA = "signing needs the 'sign' extra: pip install 'audit-suite[sign]' (pyHanko and cryptography)"


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AuditInputError(f"{_EXTRA}; cannot import {exc.name or module}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _quiet_pyhanko() -> Iterator[None]:
    """pyHanko logs every untrusted certificate with a traceback; the verdict is ours to print."""
    loggers = [logging.getLogger(n) for n in ("pyhanko", "pyhanko_certvalidator", "pyhanko.sign")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Identity:
    key_path: Path
    cert_path: Path
    subject: str
    fingerprint: str      # SHA-256 of the certificate's DER
    passphrase: bytes | None = None


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def read_identity(key_path: str | Path, cert_path: str | Path, passphrase: bytes | None = None) -> Identity:
    """Read and check a PEM (or DER) private key and certificate: readable, and the key is
    the certificate's. An encrypted key's passphrase comes from $AUDIT_KEY_PASSPHRASE."""
    x509 = _need("cryptography.x509")
    serialization = _need("cryptography.hazmat.primitives.serialization")
    key_path, cert_path = Path(key_path), Path(cert_path)
    for label, p in (("key", key_path), ("certificate", cert_path)):
        if not p.is_file():
            raise AuditInputError(f"{label} file not found: {p}")
    passphrase = passphrase if passphrase is not None else _passphrase()
    raw_cert = cert_path.read_bytes()
    try:
        cert = (x509.load_pem_x509_certificate(raw_cert) if b"-----BEGIN" in raw_cert
                else x509.load_der_x509_certificate(raw_cert))
    except ValueError as exc:
        raise AuditInputError(f"not an X.509 certificate (PEM or DER): {exc}", where=str(cert_path)) from None
    raw_key = key_path.read_bytes()
    try:
        key = (serialization.load_pem_private_key(raw_key, password=passphrase or None) if b"-----BEGIN" in raw_key
               else serialization.load_der_private_key(raw_key, password=passphrase or None))
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise AuditInputError(f"{exc} (set ${PASSPHRASE_ENV} for an encrypted key)", where=str(key_path)) from None
    except ValueError as exc:
        raise AuditInputError(f"cannot read the private key: {exc}", where=str(key_path)) from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise AuditInputError(f"the private key {key_path} does not belong to the certificate {cert_path}")
    der = cert.public_bytes(serialization.Encoding.DER)
    return Identity(key_path, cert_path, cert.subject.rfc4514_string(), hashlib.sha256(der).hexdigest(), passphrase)


def make_throwaway_identity(folder: str | Path, common_name: str = "audit-suite demo signer (throw-away key)",
                            days: int = 30) -> Identity:
    """A new EC P-256 key and a self-signed certificate for it, written to `folder`
    (key.pem, cert.pem). For demos and tests: nobody can trust it, by design."""
    x509 = _need("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "audit-suite")])
    now = _dt.datetime.now(_dt.timezone.utc)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return read_identity(key_path, cert_path, passphrase=b"")


# --------------------------------------------------------------------------- signing


def _sign_pdf(pdf: bytes, identity: Identity, reason: str) -> bytes:
    signers = _need("pyhanko.sign.signers")
    fields = _need("pyhanko.sign.fields")
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.general import SigningError

    signer = signers.SimpleSigner.load(str(identity.key_path), str(identity.cert_path),
                                       key_passphrase=identity.passphrase or None)
    if signer is None:
        raise AuditInputError("pyHanko could not load the key and certificate", where=str(identity.key_path))
    try:
        existing = {s.field_name for s in PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures}
        name, n = PDF_FIELD, 2
        while name in existing:  # signing again adds a signature; it never replaces one
            name, n = f"{PDF_FIELD}{n}", n + 1
        meta = signers.PdfSignatureMetadata(field_name=name, md_algorithm="sha256",
                                            subfilter=fields.SigSeedSubFilter.PADES, reason=reason)
        out = io.BytesIO()
        with _quiet_pyhanko():
            signers.PdfSigner(meta, signer=signer).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False),
                                                            output=out)
    except (PdfError, ValueError, SigningError) as exc:
        raise AuditInputError(f"cannot sign the PDF: {exc}", where="report.pdf") from None
    return out.getvalue()


def _sign_cms(data: bytes, identity: Identity) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    cert = x509.load_pem_x509_certificate(identity.cert_path.read_bytes()) if b"-----BEGIN" in \
        identity.cert_path.read_bytes() else x509.load_der_x509_certificate(identity.cert_path.read_bytes())
    raw = identity.key_path.read_bytes()
    key = (serialization.load_pem_private_key(raw, password=identity.passphrase or None) if b"-----BEGIN" in raw
           else serialization.load_der_private_key(raw, password=identity.passphrase or None))
    return (pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))


def _results_spec_hash(folder: Path) -> str | None:
    from audit.results import load_results

    prov = load_results(folder / "results.json").get("provenance")
    return prov.get("spec_sha256") if isinstance(prov, dict) else None


def sign_report(folder: str | Path, key: str | Path, cert: str | Path, *, spec: str | Path | None = None,
                now: _dt.datetime | None = None) -> dict[str, Any]:
    """Sign the report in `folder` (see the module docstring). Returns the manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AuditInputError(f"report folder not found: {folder}")
    if not (folder / "results.json").is_file():
        raise AuditInputError(f"no results.json in {folder}: not an audit report folder")
    _need("pyhanko.sign")
    identity = read_identity(key, cert)
    spec_hash = _results_spec_hash(folder)
    if spec is not None:
        got = sha256_file(Path(spec)) if Path(spec).is_file() else None
        if got is None:
            raise AuditInputError(f"spec file not found: {spec}")
        if spec_hash and got != spec_hash:
            raise AuditInputError(f"the spec's SHA-256 {got[:12]}… is not the one the audit ran "
                                  f"({spec_hash[:12]}…, results.json provenance)", where=str(spec))
    signed_at = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    contents: dict[str, bytes] = {}
    for name in SIGNED_FILES:
        path = folder / name
        if path.is_file():
            contents[name] = path.read_bytes()
    if "report.pdf" in contents:
        contents["report.pdf"] = _sign_pdf(contents["report.pdf"], identity,
                                           reason="Audit report as produced by audit-suite (see manifest.json)")
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()},
        "spec_sha256": spec_hash,
        "signed_at": signed_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "signer": {"subject": identity.subject, "certificate_sha256": identity.fingerprint},
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    signature = _sign_cms(manifest_bytes, identity)
    if "report.pdf" in contents:
        atomic_write_bytes(folder / "report.pdf", contents["report.pdf"])
    atomic_write_bytes(folder / MANIFEST, manifest_bytes)
    atomic_write_bytes(folder / SIGNATURE, signature)
    return manifest


# --------------------------------------------------------------------------- verifying


@dataclass
class Finding:
    file: str
    ok: bool
    text: str


@dataclass
class Verification:
    findings: list[Finding] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    trusted: bool = False

    @property
    def tampered(self) -> list[str]:
        return list(dict.fromkeys(f.file for f in self.findings if not f.ok))

    @property
    def ok(self) -> bool:
        return not self.tampered

    def add(self, file: str, ok: bool, text: str) -> None:
        self.findings.append(Finding(file, ok, text))


def _load_trust(paths: Sequence[str | Path]) -> list[Any]:
    from pyhanko.keys import load_cert_from_pemder

    certs = []
    for p in paths:
        if not Path(p).is_file():
            raise AuditInputError(f"trusted certificate not found: {p}")
        try:
            certs.append(load_cert_from_pemder(str(p)))
        except Exception as exc:  # noqa: BLE001 - asn1crypto/pem raise assorted errors
            raise AuditInputError(f"not a certificate: {exc}", where=str(p)) from None
    return certs


def _context(trust: list[Any]) -> Any:
    from pyhanko_certvalidator import ValidationContext

    return ValidationContext(trust_roots=trust, allow_fetching=False) if trust else None


def _cert_sha256(cert: Any) -> str:
    return hashlib.sha256(cert.dump()).hexdigest()


def _trust_text(trusted: bool, want_trust: bool) -> str:
    if trusted:
        return "signer trusted"
    return ("signer NOT trusted by the certificates given with --trust" if want_trust
            else "signer not trusted (self-signed or unknown issuer; pass --trust CERT to require a trusted signer)")


def verify_report(folder: str | Path, *, trust: Sequence[str | Path] = (), spec: str | Path | None = None) -> Verification:
    """Check a signed report folder; see the module docstring. Raises AuditInputError for a
    folder that is not a signed report (no folder, no manifest.json)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AuditInputError(f"report folder not found: {folder}")
    if not (folder / MANIFEST).is_file():
        raise AuditInputError(f"no {MANIFEST} in {folder}: the report is not signed (sign it with `audit sign`)")
    _need("pyhanko.sign.validation")
    roots = _load_trust(trust)
    context = _context(roots)
    v = Verification()
    manifest_bytes = (folder / MANIFEST).read_bytes()
    signer_fp = _verify_manifest_signature(folder, manifest_bytes, context, bool(roots), v)
    try:
        manifest = json.loads(manifest_bytes)
        if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA \
                or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"not an {MANIFEST_SCHEMA} manifest")
    except ValueError as exc:
        if v.ok:  # a validly signed manifest that is not one of ours
            raise AuditInputError(f"unreadable manifest: {exc}", where=str(folder / MANIFEST)) from None
        v.add(MANIFEST, False, f"unreadable: {exc}")
        return v
    v.manifest = manifest
    named = (manifest.get("signer") or {}).get("certificate_sha256") if isinstance(manifest.get("signer"), dict) else None
    if signer_fp and named != signer_fp:
        v.add(MANIFEST, False, "names a signer other than the certificate that signed it")
    listed = manifest["files"]
    for name, expected in listed.items():
        path = folder / str(name)
        if Path(str(name)).name != str(name) or name not in SIGNED_FILES:
            v.add(str(name), False, "listed in the manifest but not a report file")
        elif not path.is_file():
            v.add(name, False, "missing (listed in the manifest)")
        elif (got := sha256_file(path)) != expected:
            v.add(name, False, f"TAMPERED: SHA-256 {got[:16]}… differs from the manifest's {str(expected)[:16]}…")
        else:
            v.add(name, True, "SHA-256 matches the manifest")
    for name in SIGNED_FILES:
        if name not in listed and (folder / name).exists():
            v.add(name, False, "present but not covered by the signed manifest (added after signing)")
    if "report.pdf" in listed and (folder / "report.pdf").is_file():
        _verify_pdf(folder / "report.pdf", context, bool(roots), signer_fp, v)
    _verify_spec(folder, manifest, spec, v)
    return v


def _verify_manifest_signature(folder: Path, manifest_bytes: bytes, context: Any, want_trust: bool,
                               v: Verification) -> str | None:
    from asn1crypto import cms
    from pyhanko.sign.validation import async_validate_detached_cms

    sig_path = folder / SIGNATURE
    if not sig_path.is_file():
        v.add(SIGNATURE, False, "missing: the manifest is not signed")
        return None
    try:
        info = cms.ContentInfo.load(sig_path.read_bytes())
        signed_data = info["content"]
        if info["content_type"].native != "signed_data":
            raise ValueError("not CMS signed data")
        with _quiet_pyhanko():
            status = asyncio.run(async_validate_detached_cms(manifest_bytes, signed_data,
                                                             signer_validation_context=context))
    except Exception as exc:  # noqa: BLE001 - a corrupt signature file is tampering, whatever asn1crypto raises
        v.add(SIGNATURE, False, f"TAMPERED: not a readable CMS signature ({type(exc).__name__}: {exc})")
        return None
    subject = status.signing_cert.subject.human_friendly if status.signing_cert else "?"
    if not status.intact or not status.valid:
        v.add(MANIFEST, False, "TAMPERED: the manifest does not match its signature")
        return None
    v.trusted = bool(status.trusted)
    ok = status.trusted or not want_trust
    v.add(MANIFEST, ok, f"signature intact, signed by {subject}; {_trust_text(bool(status.trusted), want_trust)}")
    return _cert_sha256(status.signing_cert)


def _verify_pdf(path: Path, context: Any, want_trust: bool, signer_fp: str | None, v: Verification) -> None:
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature

    name = path.name
    try:
        with open(path, "rb") as fh, _quiet_pyhanko():
            reader = PdfFileReader(fh, strict=False)
            sigs = list(reader.embedded_signatures)
            if not sigs:
                v.add(name, False, "TAMPERED: the PDF carries no signature")
                return
            for i, sig in enumerate(sigs):
                status = validate_pdf_signature(sig, signer_validation_context=context)
                last = i == len(sigs) - 1
                label = f"PDF signature '{sig.field_name}'"
                if not status.intact or not status.valid:
                    v.add(name, False, f"TAMPERED: {label} does not match the signed bytes")
                    continue
                if last and getattr(status.coverage, "name", "") != "ENTIRE_FILE":
                    v.add(name, False, f"TAMPERED: the PDF was changed after {label} (it no longer covers the whole file)")
                    continue
                if signer_fp and _cert_sha256(status.signing_cert) != signer_fp:
                    v.add(name, False, f"{label} was made by {status.signing_cert.subject.human_friendly}, "
                                       "not by the manifest's signer")
                    continue
                when = status.signer_reported_dt.isoformat(timespec="seconds") if status.signer_reported_dt else "?"
                ok = status.trusted or not want_trust
                cover = "covers the whole file" if last else "a later signature covers what was added after it"
                v.add(name, ok, f"{label} (PAdES) intact, {cover}, signed {when}; "
                                f"{_trust_text(bool(status.trusted), want_trust)}")
    except Exception as exc:  # noqa: BLE001 - a PDF pyHanko cannot parse is not the one that was signed
        v.add(name, False, f"TAMPERED: cannot read the PDF's signatures ({type(exc).__name__}: {exc})")


def _verify_spec(folder: Path, manifest: dict[str, Any], spec: str | Path | None, v: Verification) -> None:
    want = manifest.get("spec_sha256")
    if v.ok and (folder / "results.json").is_file():
        try:
            have = _results_spec_hash(folder)
        except AuditInputError:
            have = None
        if want and have != want:
            v.add("results.json", False, "its provenance names another spec than the manifest")
    if spec is not None:
        got = sha256_file(Path(spec)) if Path(spec).is_file() else None
        if got is None:
            raise AuditInputError(f"spec file not found: {spec}")
        v.add(Path(spec).name, got == want, "the spec the audit ran (SHA-256 matches the manifest)" if got == want
              else f"not the spec the audit ran: SHA-256 {got[:16]}… differs from the manifest's {str(want)[:16]}…")
