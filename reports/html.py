"""The compliance report as one self-contained HTML page: the Jinja environment and
the render call. What the page shows is prepared by :mod:`reports.view`.

The same page is the source of the PDF (print CSS via ``@page``). Autoescape is on, so
every string from the results is data; the only markup that reaches the page untouched
is our own style sheet. Figures are ``<img>`` elements with sanitized ``data:`` SVG
(see :mod:`reports.svg`), and a Content-Security-Policy forbids every external load.

`render_html` is a pure function of the results: the same results give the same bytes
(no clock, no random ids, deterministic SVG), so a report can be checked by re-rendering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from audit.formatting import short_hash
from reports.view import STATUS_LABEL, STATUS_SYMBOL, build_view

__all__ = ["CSP", "environment", "render_html"]

# No scripts, no external anything: inline styles (ours) and data: images (figures) only.
# Everything not named falls back to default-src 'none' (scripts, fonts, frames, fetch,
# media, ...); base-uri and form-action do not fall back, so they are named.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _load_template(name: str) -> str:
    return resources.files("templates").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (_load_template(name), None, lambda: False)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["short"] = short_hash
    env.tests["sha"] = lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{32,}", v) is not None
    env.globals["status_label"] = STATUS_LABEL
    env.globals["status_symbol"] = STATUS_SYMBOL
    return env


@lru_cache(maxsize=1)
def _css() -> Markup:
    css = _load_template("report.css")
    if "</" in css:  # never let the style sheet close its own <style> element
        raise ValueError("report.css must not contain '</'")
    return Markup(css)


def render_html(results: Mapping[str, Any]) -> str:
    """Render the compliance report as one self-contained HTML document."""
    view = build_view(results)
    # CSP is our constant (no double quote): passed as markup so the page shows it as written.
    return environment().get_template("report.html.j2").render(r=view, css=_css(), csp=Markup(CSP))
