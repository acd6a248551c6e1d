"""HTML -> PDF with WeasyPrint, fetching nothing from the network.

The report is self-contained (inline CSS; figures are sanitized SVG as ``data:``
images, see :mod:`reports.svg`), so the only resources WeasyPrint may load are ``data:`` URLs and files
inside the report's own folder. Anything else (http, https, ftp, a file outside
the folder, ...) is refused by :class:`ReportURLFetcher`; WeasyPrint then leaves
that resource out and carries on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

__all__ = ["ExternalResourceRefused", "ReportURLFetcher", "make_url_fetcher", "pdf_document", "pdf_bytes",
           "render_pdf"]

log = logging.getLogger(__name__)


class ExternalResourceRefused(ValueError):
    """A resource outside ``data:`` URLs and the report folder was requested."""


def _allowed(url: str, base_dir: Path) -> bool:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        return True
    if scheme != "file":
        return False
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return False
    try:
        path = Path(url2pathname(unquote(parts.path))).resolve()
        root = base_dir.resolve()
    except (OSError, ValueError):
        return False
    return path == root or root in path.parents


def _check(url: str, base_dir: Path, refused: list[str]) -> None:
    if not _allowed(url, base_dir):
        refused.append(url)
        log.warning("report PDF: refused to fetch %s (only data: URLs and files inside %s)", url, base_dir)
        raise ExternalResourceRefused(f"refused to fetch {url!r}: the report may only use data: URLs "
                                      f"and files inside {str(base_dir)!r}")


try:  # WeasyPrint >= 68: fetchers are URLFetcher objects
    from weasyprint.urls import URLFetcher as _URLFetcher
except ImportError:  # pragma: no cover - older WeasyPrint takes a plain function
    _URLFetcher = None


if _URLFetcher is not None:

    class ReportURLFetcher(_URLFetcher):
        """Fetches ``data:`` URLs and files inside `base_dir`; raises for anything else."""

        def __init__(self, base_dir: Path, **kwargs: Any) -> None:
            super().__init__(allowed_protocols=("data", "file"), allow_redirects=False, **kwargs)
            self.base_dir = Path(base_dir)
            self.refused: list[str] = []

        def fetch(self, url, headers=None):  # noqa: D102 - WeasyPrint's signature
            _check(url, self.base_dir, self.refused)
            return super().fetch(url, headers)

else:  # pragma: no cover

    class ReportURLFetcher:  # type: ignore[no-redef]
        def __init__(self, base_dir: Path, **kwargs: Any) -> None:
            self.base_dir = Path(base_dir)
            self.refused: list[str] = []

        def fetch(self, url, headers=None):
            from weasyprint import default_url_fetcher

            _check(url, self.base_dir, self.refused)
            return default_url_fetcher(url)

        def __call__(self, url):
            return self.fetch(url)


@contextlib.contextmanager
def _quiet_weasyprint(quiet: bool):
    """WeasyPrint warns about every CSS property it does not know and about font
    subsetting back-ends; during a report render that is noise. Refused URLs are
    still logged, by this module's own logger."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("weasyprint", "fontTools")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            if lg.getEffectiveLevel() < logging.ERROR and not log.isEnabledFor(logging.DEBUG):
                lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def make_url_fetcher(base_dir: Path) -> ReportURLFetcher:
    return ReportURLFetcher(Path(base_dir))


def pdf_document(html: str, base_dir: Path, url_fetcher: ReportURLFetcher | None = None, *, quiet: bool = True):
    """Lay out the report; returns WeasyPrint's Document (``len(doc.pages)`` pages)."""
    from weasyprint import HTML

    base_dir = Path(base_dir)
    fetcher = url_fetcher or make_url_fetcher(base_dir)
    with _quiet_weasyprint(quiet):
        return HTML(string=html, base_url=base_dir.resolve().as_uri() + "/", url_fetcher=fetcher,
                    media_type="print").render()


def pdf_bytes(html: str, base_dir: Path, url_fetcher: ReportURLFetcher | None = None, *, quiet: bool = True) -> bytes:
    doc = pdf_document(html, base_dir, url_fetcher, quiet=quiet)
    with _quiet_weasyprint(quiet):
        return doc.write_pdf()


def render_pdf(html: str, out_path: Path, base_dir: Path) -> Path:
    """Render `html` to `out_path` (written atomically). Resources resolve against
    `base_dir`, which is also the only folder files may come from."""
    from reports import atomic_write_bytes

    data = pdf_bytes(html, Path(base_dir))
    atomic_write_bytes(Path(out_path), data)
    return Path(out_path)
