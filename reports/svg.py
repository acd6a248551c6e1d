"""The SVG sanitizer: the security boundary between figure SVG and the report.

Every figure reaches the page through :func:`svg_data_uri`: sanitized here, then
embedded as ``<img src="data:image/svg+xml;base64,...">``. Three layers, because a
tampered ``results.json`` can carry any SVG (``audit render`` of a file from elsewhere):

* an SVG *image* never runs script and browsers load nothing external from it;
* the report's Content-Security-Policy allows ``data:`` images only (``reports.html``);
* WeasyPrint (the PDF) draws the SVG with its own renderer and fetches what the SVG
  names (through the report's url_fetcher, which refuses the network). This module
  makes sure the SVG names nothing: only drawing elements, ``href`` only to fragments
  (``#id``) or embedded rasters (``data:image/png;base64,...``), no CSS that can reach
  out, no style sheets, no document type or entities.

Which library does what, and why not more:

* ``defusedxml`` parses: no entity declarations, no external references, and no
  document type other than the bare ``<!DOCTYPE svg PUBLIC ...>`` line matplotlib writes.
* ``tinycss2`` (WeasyPrint's own CSS parser, by the same maintainers) tokenizes every
  attribute value and ``style`` declaration as a browser would, so ``url(``,
  ``image-set(`` and friends are seen after CSS's own decoding, not guessed by regex.
* The element/attribute/property allow-lists below are our own. ``nh3`` (ammonia) was
  tried and is not correct for this job: it parses and serializes HTML, not XML (its
  output, e.g. ``&nbsp;``, is not a valid standalone SVG image); it keeps
  ``fill="url(http://...)"`` and ``style="fill: image-set('http://...' 1x)"`` because it
  does not look inside CSS values; with ``data`` allowed as a URL scheme it keeps
  ``data:image/svg+xml`` (a nested SVG past the sanitizer), and it keeps relative
  hrefs such as ``evil.svg`` (which WeasyPrint would resolve against the report folder).
  ``bleach`` is deprecated and has the same HTML-not-XML problem.

It is an allow-list: what it does not know, it drops.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import tinycss2
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

__all__ = ["UnsafeSVG", "sanitize_svg", "svg_data_uri"]

_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

# Drawing elements only: no script, style, foreignObject, a, animate/set (they can
# rewrite an href), filters (feImage fetches), iframe, ...  SVG names are case-sensitive.
_SVG_ELEMENTS = frozenset({
    "svg", "g", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "text", "tspan",
    "defs", "clipPath", "mask", "use", "image", "title", "desc", "linearGradient", "radialGradient",
    "stop", "pattern", "marker", "symbol",
})

# CSS properties that SVG also accepts as attributes. A `style` declaration of one of
# these becomes that attribute (same effect without style sheets); any other is dropped,
# so no `style` attribute (and no vendor `-webkit-*` property) reaches the output.
_PRESENTATION = frozenset({
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-linecap", "stroke-linejoin",
    "stroke-miterlimit", "stroke-dasharray", "stroke-dashoffset", "stroke-opacity", "opacity",
    "font-family", "font-size", "font-style", "font-weight", "font-variant", "font-stretch", "text-anchor",
    "dominant-baseline", "alignment-baseline", "baseline-shift", "clip-rule", "clip-path", "mask",
    "marker-start", "marker-mid", "marker-end", "color", "visibility", "display", "overflow",
    "letter-spacing", "word-spacing", "text-decoration", "stop-color", "stop-opacity", "image-rendering",
    "shape-rendering", "text-rendering", "paint-order", "vector-effect", "writing-mode", "direction",
})

# Geometry and structure attributes, besides the presentation ones and href (checked apart).
_ATTRIBUTES = _PRESENTATION | {
    "id", "class", "version", "width", "height", "viewBox", "preserveAspectRatio", "x", "y", "x1", "y1",
    "x2", "y2", "cx", "cy", "r", "rx", "ry", "fx", "fy", "fr", "d", "points", "pathLength", "transform",
    "dx", "dy", "rotate", "textLength", "lengthAdjust", "offset", "gradientUnits", "gradientTransform",
    "spreadMethod", "patternUnits", "patternContentUnits", "patternTransform", "clipPathUnits",
    "maskUnits", "maskContentUnits", "markerWidth", "markerHeight", "markerUnits", "refX", "refY",
    "orient", "role", "aria-label",
}

# CSS/SVG functions a drawing needs: colours and transforms. url() is allowed to a
# fragment only, and checked apart; image-set(), image(), expression(), var(), attr(),
# -webkit-anything() ... are not here, so a value using one is dropped.
_SAFE_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla", "matrix", "translate", "scale", "rotate",
                             "skewx", "skewy"})
_TOKENS = frozenset({"whitespace", "ident", "number", "percentage", "dimension", "hash", "string", "literal"})

_FRAGMENT = re.compile(r"#[A-Za-z0-9_.:-]+")
# Embedded rasters only; never data:image/svg+xml (a nested SVG would bypass this module).
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*")
# Refused in any value before parsing: CSS escapes and comments (a drawing never needs
# them, and decoding is where filters and parsers disagree), and anything that looks
# like a URL with a scheme, even where CSS would not load it.
_RAW_REFUSED = re.compile(r"\\|/\*|://|\b(javascript|vbscript|data|file|https?|ftp)\s*:", re.I)


class UnsafeSVG(ValueError):
    """The figure is not well-formed SVG, or declares a document type or entities."""


class _SVGParser(DefusedXMLParser):
    """defusedxml refusing every DTD but the bare ``<!DOCTYPE svg PUBLIC "..." "...">``
    that matplotlib writes: it declares nothing, and expat never fetches it."""

    def __init__(self) -> None:
        super().__init__(target=ET.TreeBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True)

    def defused_start_doctype_decl(self, name: str, sysid: Any, pubid: Any, has_internal_subset: Any) -> None:
        if has_internal_subset or name != "svg":
            super().defused_start_doctype_decl(name, sysid, pubid, has_internal_subset)


def _safe_tokens(tokens: Iterable[Any]) -> bool:
    """Whether CSS component values (tinycss2 nodes) can reach nothing outside the SVG."""
    for t in tokens:
        if t.type in _TOKENS:
            continue
        if t.type == "url":  # unquoted url(...): a fragment only
            if not _FRAGMENT.fullmatch(t.value):
                return False
        elif t.type == "function" and t.lower_name == "url":  # url("...")
            args = [a for a in t.arguments if a.type != "whitespace"]
            if not (len(args) == 1 and args[0].type == "string" and _FRAGMENT.fullmatch(args[0].value)):
                return False
        elif t.type == "function":
            if t.lower_name not in _SAFE_FUNCTIONS or not _safe_tokens(t.arguments):
                return False
        elif t.type == "() block":
            if not _safe_tokens(t.content):
                return False
        else:  # at-keywords (@import), comments, {} and [] blocks, parse errors, ...
            return False
    return True


def _safe_value(value: str) -> bool:
    """Whether an attribute value, read as CSS, can reach nothing outside the SVG."""
    return not _RAW_REFUSED.search(value) and _safe_tokens(tinycss2.parse_component_value_list(value))


def _style_to_attributes(el: ET.Element, style: str) -> None:
    """Safe presentation declarations of `style` become attributes (they win over the
    element's own attributes, as `style` does); the rest is dropped. A style carrying
    an escape or a comment is hostile: all of it goes."""
    if "\\" in style or "/*" in style:
        return
    for decl in tinycss2.parse_blocks_contents(style, skip_comments=False, skip_whitespace=True):
        if decl.type == "declaration" and decl.lower_name in _PRESENTATION:
            value = tinycss2.serialize(decl.value).strip()
            if _safe_value(value):
                el.set(decl.lower_name, value)


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


def _clean(el: ET.Element) -> None:
    # Plain names; references use SVG 2's plain `href`, understood by browsers and WeasyPrint.
    el.tag = _split(el.tag)[1]
    attrs = dict(el.attrib)
    el.attrib.clear()
    for name, value in attrs.items():
        ns, local = _split(name)
        if local == "href" and ns in ("", _XLINK_NS):
            v = value.strip()
            if _FRAGMENT.fullmatch(v) or _DATA_IMAGE.fullmatch(v):
                el.set("href", v)
        elif ns == _XML_NS and local in ("space", "lang"):
            el.set(name, value)
        elif not ns and local in _ATTRIBUTES and _safe_value(value):
            el.set(local, value)
    if "style" in attrs:
        _style_to_attributes(el, attrs["style"])
    for child in list(el):
        # Comments and processing instructions have a non-str tag; other namespaces
        # (XHTML, MathML, ...) are not drawing elements even when a local name matches.
        if isinstance(child.tag, str) and _split(child.tag)[0] in ("", _SVG_NS) \
                and _split(child.tag)[1] in _SVG_ELEMENTS:
            _clean(child)
            # An <image> whose href was dropped draws nothing, and WeasyPrint would still
            # ask its url_fetcher for it (as None): it goes too.
            if child.tag == "image" and "href" not in child.attrib:
                el.remove(child)
        else:
            el.remove(child)


def sanitize_svg(svg: str) -> str:
    """A standalone SVG document that contains only drawing elements and references
    nothing outside itself. Raises :class:`UnsafeSVG` when `svg` is not well-formed SVG
    or declares a document type or entities (refused by defusedxml, not expanded)."""
    if not isinstance(svg, str) or "<svg" not in svg:
        raise UnsafeSVG("figure has no <svg> element")
    parser = _SVGParser()
    try:
        parser.feed(svg)  # text: expat reads it as such, whatever encoding an XML declaration names
        root = parser.close()
    except DefusedXmlException as exc:  # not echoed: its system id is the tamperer's text
        raise UnsafeSVG("figure SVG declares a document type or entities") from exc
    except ET.ParseError as exc:
        raise UnsafeSVG(f"figure SVG is not well-formed: {exc}") from exc
    if _split(root.tag) not in (("", "svg"), (_SVG_NS, "svg")):
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
