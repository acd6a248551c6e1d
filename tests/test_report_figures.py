"""Report figures: every chart kind draws from its JSON form, the sanitizer keeps
figures from reaching outside (tampered results included), a figure that cannot be
drawn is a note and not a crash, and rendering is byte-for-byte deterministic."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_reports import chart, chart_samples, check_section, make_results, without_figures

import reports
from reports import plots
from reports.charts import KINDS, ChartError, UnknownChart, render_chart, renderer
from reports.svg import UnsafeSVG, sanitize_svg, svg_data_uri

ROOT = Path(__file__).resolve().parents[1]

# Anything by which an SVG could make its viewer fetch something.
_EXTERNAL = re.compile(r"https?:|ftp:|file:|javascript:|//[a-z]|url\((?!#)|image-set|@import|\\|<script|"
                       r"<style|foreignobject|\son\w+=", re.I)


def external(svg: str) -> re.Match | None:
    """The first thing in `svg` by which it could reach outside (the SVG namespace name aside)."""
    svg = svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    return _EXTERNAL.search(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=\s]*", "", svg))


def img_svgs(html: str) -> list[tuple[str, str]]:
    """(alt, decoded SVG) of every figure <img> in the page."""
    out = []
    for alt_src in re.finditer(r'<img class="chart" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">',
                               html):
        out.append((alt_src.group(2), base64.b64decode(alt_src.group(1)).decode("utf-8")))
    return out


# --------------------------------------------------------------------------- chart kinds


def test_every_kind_has_a_sample_and_a_renderer():
    assert set(KINDS) == set(chart_samples())
    for kind in KINDS:
        assert callable(renderer(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_from_json_and_passes_the_sanitizer(kind):
    data = json.loads(json.dumps(chart_samples()[kind]))  # exactly what results.json gives back
    svg = render_chart(kind, data)
    assert svg.startswith("<svg") and "<?xml" not in svg and "DOCTYPE" not in svg
    clean = sanitize_svg(svg)
    assert not external(clean), external(clean)
    assert len(re.findall(r"<(path|image|use)\b", clean)) > 3 and "<text" in clean  # the drawing survives
    assert render_chart(kind, data) == svg  # deterministic


def test_text_in_charts_is_literal():
    svg = render_chart("bar", {"labels": ["$50K-$100K", "b"], "values": [0.5, 0.7], "title": "income $ bands"})
    assert "$50K-$100K" in svg and "income $ bands" in svg  # no mathtext


def test_render_chart_errors_are_clear():
    with pytest.raises(UnknownChart, match=r"unknown chart kind 'sankey'; known kinds: confusion_matrix, "):
        render_chart("sankey", {})
    with pytest.raises(ChartError, match=r"chart 'bar': .*unexpected keyword argument 'colour'"):
        render_chart("bar", {"labels": ["a"], "values": [1.0], "colour": "red"})
    with pytest.raises(ChartError, match=r"chart 'roc': missing a required argument: 'tpr'"):
        render_chart("roc", {"fpr": [0, 1]})
    with pytest.raises(ChartError, match="data must be an object"):
        render_chart("bar", [1, 2])


def test_every_figure_is_an_img_with_alt_text(results_html):
    html, results = results_html
    titles = [ev["title"] for c in results["checks"] for ev in c["evidence"] if ev["type"] in ("chart", "figure")]
    figures = img_svgs(html)
    assert sorted(alt for alt, _ in figures) == sorted(titles + ["Loss per epoch", "Validation metric per epoch"])
    assert len(figures) == html.count("<img")
    for _, svg in figures:
        assert svg.startswith("<svg") and not external(svg)


@pytest.fixture(scope="module")
def results_html():
    results = make_results()
    return reports.render_html(results), results


def test_unknown_kind_and_bad_data_are_notes_not_crashes():
    res = without_figures(make_results())
    integrity = res["checks"][0]
    integrity["evidence"] += [
        chart("class_shares", "Class distribution"),
        chart("sankey", "Flows", {"nodes": []}),
        chart("bar", "Ragged", {"labels": ["a", "b"], "values": [1.0]}),
        chart("line", "Not kwargs", [1, 2]),
        {"type": "chart", "title": "No kind"},
    ]
    out = reports.render_html(res)
    section = check_section(out, "integrity")
    notes = re.findall(r'<p class="figure-missing">Cannot draw this figure: ([^<]*)</p>', section)
    assert len(notes) == 4
    assert notes[0].startswith("unknown chart kind &#39;sankey&#39;")
    assert "2 labels for 1 values" in notes[1]
    assert "data must be an object" in notes[2]
    assert "unknown chart kind None" in notes[3]
    assert "<strong>Flows.</strong>" in section  # the title still says what is missing
    assert 'alt="Class distribution"' in section  # the other figures are drawn


# --------------------------------------------------------------------------- the sanitizer

EVIL = (
    '<?xml version="1.0"?>'
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100pt" height="50pt" '
    'viewBox="0 0 100 50" onload="alert(1)">'
    '<script>alert(1)</script><foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>'
    '<style>@import url(http://evil.example/a.css); rect{fill:url(http://evil.example/b)}</style>'
    '<defs><clipPath id="c"><rect width="10" height="10"/></clipPath></defs>'
    '<image xlink:href="https://evil.example/x.png"/><image href="http://evil.example/y.png"/>'
    '<image href="data:image/svg+xml;base64,PHN2Zy8+"/><image href="data:image/png;base64,iVBORw0KGgo="/>'
    '<a href="javascript:alert(1)"><rect width="1" height="1"/></a>'
    '<rect id="keep" width="5" height="5" fill="#0072B2" clip-path="url(#c)"/>'
    '<use xlink:href="#keep"/><use href="http://evil.example/sprite.svg#icon"/>'
    '<rect style="fill:url(https://evil.example/f); stroke: #000"/>'
    '<rect style="fill: image-set(&quot;http://evil.example/i.png&quot; 1x)"/>'
    '<rect style="fill: image-set(\'//evil.example/i.png\' 1x)"/>'
    '<rect style="background:\\75 rl(http://evil.example/esc)"/>'
    '<rect style="fill:u\\rl(//evil.example/esc2)"/>'
    '<rect style="fill:&#x75;rl(//evil.example/ent)"/>'
    '<rect fill="url(https://evil.example/attr)" mask="url( \'http://evil.example/m\' )"/>'
    '<rect filter="url(data:image/svg+xml,x)"/>'
    '<rect style="fill: u/**/rl(//evil.example/cmt)"/>'
    '<text x="1" y="9" font-family="\'DejaVu Sans\'" transform="rotate(-90 1 9)">label</text>'
    '<animate attributeName="href" to="http://evil.example/anim"/>'
    '<set attributeName="fill" to="url(http://evil.example/set)"/>'
    '</svg>'
)


def test_tampered_figure_becomes_a_harmless_image():
    res = without_figures(make_results())
    res["checks"][0]["evidence"].append({"type": "figure", "title": "Tampered", "svg": EVIL, "caption": "third party"})
    out = reports.render_html(res)
    assert "evil.example" not in out  # not in the page ...
    svg = dict(img_svgs(out))["Tampered"]
    low = svg.lower()
    assert "evil" not in low  # ... nor in the decoded image
    assert not external(svg), external(svg)
    assert "data:image/svg+xml" not in low  # no nested SVG past the sanitizer
    # what a drawing needs survives
    assert 'id="keep"' in svg and 'clip-path="url(#c)"' in svg and 'href="#keep"' in svg
    assert 'href="data:image/png;base64,iVBORw0KGgo="' in svg
    assert 'transform="rotate(-90 1 9)"' in svg and ">label</text>" in svg and 'stroke="#000"' in svg
    assert 'viewBox="0 0 100 50"' in svg and 'width="100pt"' in svg


def test_sanitizer_refuses_entities_and_broken_svg():
    with pytest.raises(UnsafeSVG):
        sanitize_svg('<!DOCTYPE svg [<!ENTITY a "b">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>')
    with pytest.raises(UnsafeSVG):
        sanitize_svg("<svg><g></svg>")
    with pytest.raises(UnsafeSVG):
        sanitize_svg("<html><svg/></html>")
    with pytest.raises(UnsafeSVG):
        svg_data_uri("not svg")


def test_broken_figure_is_a_note():
    res = without_figures(make_results())
    res["checks"][0]["evidence"].append({"type": "figure", "title": "Broken", "svg": "<svg><g></svg>"})
    out = reports.render_html(res)
    assert "Cannot draw this figure: figure SVG is not well-formed" in out


def test_data_uri_round_trip():
    svg = plots.bar_chart_svg(["a", "b"], [0.5, 0.7])
    uri = svg_data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == sanitize_svg(svg)


def test_plots_accept_arrays_too():
    grid = plots.image_grid_svg([np.zeros((8, 8)), np.ones((3, 8, 8))], ["a", "b"], overlays=[np.eye(8), np.eye(8)])
    assert "data:image/png;base64," in grid
    with pytest.raises(ValueError):
        plots.confusion_matrix_svg(np.zeros((2, 3)), ["a", "b"])


# --------------------------------------------------------------------------- determinism, layering

_RENDER = textwrap.dedent("""
    import json, sys
    import reports
    html = reports.render_html(json.load(open(sys.argv[1], encoding="utf-8")))
    sys.stdout.buffer.write(html.encode("utf-8"))
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "checks")
                 or m in ("audit.context", "audit.runner"))
    sys.stderr.write("IMPORTED " + json.dumps(bad))
""")


def _render_in_subprocesses(path: Path, hash_seeds: list[str]) -> list[tuple[bytes, list[str]]]:
    """Render `path` in one fresh process per hash seed (run side by side)."""
    procs = [subprocess.Popen([sys.executable, "-c", _RENDER, str(path)], cwd=ROOT,
                              env={**os.environ, "PYTHONHASHSEED": seed},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in hash_seeds]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        out.append((stdout, json.loads(stderr.decode().rsplit("IMPORTED ", 1)[1])))
    return out


def test_render_is_byte_identical_across_processes(tmp_path):
    """The same results.json rendered by two processes (different hash seeds) gives the
    same bytes, equal to this process's; and rendering imports neither torch nor checks."""
    res = make_results()
    res["checks"][0]["evidence"].append({"type": "figure", "title": "Third party",
                                         "svg": plots.roc_curve_svg([0, 0.5, 1], [0, 0.8, 1])})
    path = tmp_path / "results.json"
    path.write_text(reports.results_json(res), encoding="utf-8")
    (a, imported_a), (b, imported_b) = _render_in_subprocesses(path, ["1", "2"])
    assert a == b
    assert a.decode("utf-8") == reports.render_html(json.loads(path.read_text(encoding="utf-8")))
    assert imported_a == imported_b == []
