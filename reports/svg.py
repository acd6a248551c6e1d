"""The SVG sanitizer: the security boundary between figure SVG and the report.

Every figure reaches the page through :func:`svg_data_uri`: sanitized here, then
embedded as ``<img src="data:image/svg+xml;base64,...">``. Two layers, because a
tampered ``results.json`` can carry any SVG (``audit render`` of a file from elsewhere):

* an SVG *image* never runs script and browsers load nothing external from it, and the
  report's Content-Security-Policy allows ``data:`` images only;
* WeasyPrint (the PDF) draws the SVG with its own renderer, which fetches what the SVG
  names through the report's url_fetcher; the sanitizer makes sure it names nothing:
  only drawing elements, ``href`` only to fragments (``#id``) or embedded rasters
  (``data:image/png;base64,...``), and no CSS that can reach out (``url()`` other than
  ``url(#id)``, ``image-set()``, ``@import``, escapes such as ``\\75 rl(``).

It is an allow-list: what it does not know, it drops.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["UnsafeSVG", "sanitize_svg", "svg_data_uri"]

_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

# Drawing elements only: no script, style, foreignObject, a, animate/set, iframe, ...
_SVG_ELEMENTS = {
    "svg", "g", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "text", "tspan",
    "defs", "clipPath", "mask", "use", "image", "title", "desc", "linearGradient", "radialGradient",
    "stop", "pattern", "marker", "symbol",
}
# Embedded rasters only; never data:image/svg+xml (a nested SVG would bypass this module).
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*$")
_HEADER = re.compile(r"^\s*(<\?xml[^>]*\?>)?\s*(<!--.*?-->\s*)*(<!DOCTYPE\s+svg[^>\[]*>)?", re.S)
# CSS/SVG functional notation in an attribute value: `name(`.
_FUNCTION = re.compile(r"([a-zA-Z_-][a-zA-Z0-9_-]*)\s*\(")
# The functions a drawing needs: colours, transforms, and url() to a fragment (checked apart).
_SAFE_FUNCTIONS = {"url", "rgb", "rgba", "hsl", "hsla", "matrix", "translate", "scale", "rotate",
                   "skewx", "skewy"}
_URL_FRAGMENT = re.compile(r"url\(\s*(['\"]?)#[A-Za-z0-9_.:-]+\1\s*\)", re.I)
# A URL with a scheme anywhere in a value (href is handled on its own).
_SCHEME = re.compile(r"://|\b(javascript|vbscript|data|file|https?|ftp)\s*:", re.I)

# CSS properties that SVG also accepts as attributes. Moving them out of `style`
# keeps WeasyPrint's cascade from parsing (and warning about) every one.
_PRESENTATION = {
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-linecap", "stroke-linejoin",
    "stroke-miterlimit", "stroke-dasharray", "stroke-dashoffset", "stroke-opacity", "opacity",
    "font-family", "font-size", "font-style", "font-weight", "font-variant", "text-anchor",
    "dominant-baseline", "alignment-baseline", "baseline-shift", "clip-rule", "color", "visibility",
    "letter-spacing", "word-spacing", "text-decoration", "stop-color", "stop-opacity", "image-rendering",
}


class UnsafeSVG(ValueError):
    """The figure is not well-formed SVG, or declares a document type or entities."""


def _safe_value(value: str) -> bool:
    """Whether an attribute value (or a style declaration) can reach nothing outside the SVG.
    Backslashes (CSS escapes), comments and at-rules are refused outright rather than
    decoded: a drawing never needs them, and decoding is where filters get fooled."""
    if "\\" in value or "/*" in value or "@" in value:
        return False
    if _SCHEME.search(value):
        return False
    rest = _URL_FRAGMENT.sub("", value)  # url(#id) is fine; any other url() is not
    return all(name.lower() in _SAFE_FUNCTIONS - {"url"} for name in _FUNCTION.findall(rest))


def _style_to_attributes(el: ET.Element) -> None:
    style = el.attrib.pop("style", None)
    if not style:
        return
    rest = []
    for decl in style.split(";"):
        name, sep, value = decl.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name or not re.fullmatch(r"[a-z-]+", name) or not _safe_value(value):
            continue
        if name in _PRESENTATION and "!important" not in value:
            el.set(name, value)
        else:
            rest.append(f"{name}: {value}")
    if rest:
        el.set("style", "; ".join(rest))


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


def _local(tag: Any) -> str:
    return _split(str(tag))[1]


def _clean(el: ET.Element) -> None:
    # Plain names; references use SVG 2's plain `href`, understood by browsers and WeasyPrint.
    el.tag = _local(el.tag)
    for name in list(el.attrib):
        value = el.attrib.pop(name)
        ns, local = _split(name)
        if local.lower().startswith("on"):
            continue  # event handlers
        if local == "href" and ns in ("", _XLINK_NS):
            v = value.strip()
            if re.fullmatch(r"#[A-Za-z0-9_.:-]+", v) or _DATA_IMAGE.match(v):
                el.set("href", v)
            continue
        if ns == _XML_NS:
            if local in ("space", "lang"):
                el.set(f"{{{_XML_NS}}}{local}", value)
            continue
        if ns or (local != "style" and not _safe_value(value)):
            continue  # `style` is checked declaration by declaration below
        el.set(local, value)
    _style_to_attributes(el)
    for child in list(el):
        if not isinstance(child.tag, str) or _local(child.tag) not in _SVG_ELEMENTS:
            el.remove(child)
        else:
            _clean(child)


def sanitize_svg(svg: str) -> str:
    """A standalone SVG document that contains only drawing elements and references
    nothing outside itself. Raises :class:`UnsafeSVG` when `svg` is not well-formed SVG
    or declares a document type or entities (entity expansion is refused, not parsed)."""
    if not isinstance(svg, str) or "<svg" not in svg:
        raise UnsafeSVG("figure has no <svg> element")
    body = _HEADER.sub("", svg, count=1)
    if "<!DOCTYPE" in body or "<!ENTITY" in body:
        raise UnsafeSVG("figure SVG declares a document type or entities")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise UnsafeSVG(f"figure SVG is not well-formed: {exc}") from exc
    if _local(root.tag) != "svg":
        raise UnsafeSVG("figure root element is not <svg>")
    _clean(root)
    # matplotlib's only style sheet is `*{stroke-linejoin: round; stroke-linecap: butt}`;
    # style sheets are dropped (CSS is where external loads hide), so inherit it instead.
    root.attrib.setdefault("stroke-linejoin", "round")
    root.attrib.setdefault("stroke-linecap", "butt")
    root.set("xmlns", _SVG_NS)
    return ET.tostring(root, encoding="unicode", short_empty_elements=True)


def svg_data_uri(svg: str) -> str:
    """Sanitize `svg` and return it as a ``data:image/svg+xml;base64,...`` URI for an
    ``<img>``: the only form in which figure SVG reaches the report."""
    clean = sanitize_svg(svg)
    return "data:image/svg+xml;base64," + base64.b64encode(clean.encode("utf-8")).decode("ascii")
