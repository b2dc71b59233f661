"""The HTML renderings of the executed notebooks (``results/html/``) open in a real browser: every table
and every figure of the notebook is on the page, and painted.

Not part of the default ``pytest`` run (pyproject's ``addopts`` deselects the ``browser`` marker); run it
with headless Chromium installed (Debian: ``apt-get install -y chromium``)::

    python -m pytest -m browser tests/browser -p no:cacheprovider

``CHROMIUM=/path/to/chrome`` chooses the browser; without one the tests fail naming it (they never skip).

Each page is ``results/html/<notebook>.html`` as ``./run_all.sh`` wrote it, or, where that is missing,
the committed executed notebook ``results/notebooks/<notebook>.ipynb`` rendered afresh with the
runner's own :func:`~twostream_lib.runner.render_html` (nothing is executed). What is expected comes
from the executed notebook itself: the header cells of each table it outputs and the bytes of each PNG
figure. Chromium loads the page twice, once to dump the DOM after a small script has measured it (each
image decoded at its PNG's size, each table laid out), once for a screenshot, cut at each figure and
table: a figure that is not one flat colour, a table with text on it.
"""
from __future__ import annotations

import base64
import html as html_lib
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from twostream_lib.config import REPO_ROOT
from twostream_lib.runner import render_html

pytestmark = pytest.mark.browser

RESULTS = REPO_ROOT / "results"
EXECUTED = sorted(p for p in (RESULTS / "notebooks").glob("*.ipynb") if not p.name.startswith("."))  # not a run's temp
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH = 1280
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# what nbconvert shows of an output with several representations (its display_data_priority, in order)
SHOWN_BEFORE_PNG = ("application/javascript", "text/html", "text/markdown", "image/svg+xml", "text/latex")

# appended to a copy of the page: after load, what the browser made of the images and tables
PROBE = """<script>
window.addEventListener("load", function () {
  function box(e) { var r = e.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height}; }
  var out = {
    height: document.documentElement.scrollHeight,
    images: [].map.call(document.images, function (i) {
      return {src: i.getAttribute("src") || "", complete: i.complete, natural: [i.naturalWidth, i.naturalHeight],
              box: box(i)}; }),
    tables: [].map.call(document.querySelectorAll("table"), function (t) {
      return {rows: t.rows.length, headers: [].map.call(t.querySelectorAll("th"), function (h) {
                return h.textContent; }), box: box(t)}; })
  };
  var pre = document.createElement("pre"); pre.id = "render-probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


# ----------------------------------------------------------------------------- the browser

def chromium() -> str:
    """The browser's executable: $CHROMIUM, else the first of BROWSERS on PATH; fails naming what is missing."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        path = shutil.which(chosen)
        if not path:
            pytest.fail(f"CHROMIUM={chosen!r}: no such executable", pytrace=False)
        return path
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"headless Chromium not found (looked for {', '.join(BROWSERS)} on PATH): install Debian's "
                "package with `apt-get install -y chromium`, or set CHROMIUM=/path/to/chromium", pytrace=False)


def run_browser(page: Path, profile: Path, *args: str, height: int = 2000) -> str:
    cmd = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
           "--disable-dev-shm-usage", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
           f"--window-size={WIDTH},{height}", *args, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout


def open_page(html: Path, tmp_path: Path):
    """What headless Chromium made of ``html``: the probe's measurements and a screenshot of the whole page
    (a PIL image). The page is opened from a copy in ``tmp_path``: it needs no file beside it."""
    from PIL import Image

    probed = tmp_path / f"{html.stem}.probe.html"
    text = html.read_text(encoding="utf-8")
    assert "</body>" in text, f"{html}: no </body>"
    probed.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    dom = run_browser(probed, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="render-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"{html.name}: the page's load event never ran the probe (DOM of {len(dom)} characters)"
    probe = json.loads(html_lib.unescape(found.group(1)))
    shot = tmp_path / f"{html.stem}.png"
    run_browser(probed, tmp_path / "profile", f"--screenshot={shot}", height=min(int(probe["height"]) + 50, 16000))
    assert shot.exists(), f"{html.name}: Chromium wrote no screenshot"
    return probe, Image.open(shot).convert("RGB")


# ----------------------------------------------------------------------------- what the notebook holds

class _Headers(HTMLParser):
    """The text of every <th> of an HTML fragment, and how many <table>s it has."""

    def __init__(self):
        super().__init__()
        self.headers, self.tables, self._in = [], 0, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        if tag == "th":
            self._in = True
            self.headers.append("")

    def handle_endtag(self, tag):
        if tag == "th":
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.headers[-1] += data


def markdown_tables(text: str) -> list[list[str]]:
    """The header cells of each pipe table of a markdown text."""
    lines = text.splitlines()
    tables = []
    for above, line in itertools.pairwise(lines):
        if re.fullmatch(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*", line) and "|" in above:
            tables.append([c for c in above.strip().strip("|").split("|")])
    return tables


def norm(cell: str) -> str:
    """A header cell as text: markdown emphasis and code marks dropped, spaces collapsed."""
    return " ".join(re.sub(r"[*`]", "", cell).split())


def expected(notebook: Path) -> tuple[list[list[str]], list[bytes]]:
    """The header cells of each table the executed notebook shows (markdown cells, markdown and HTML
    outputs) and the PNG bytes of each figure it outputs."""
    nb = nbformat.read(str(notebook), as_version=4)
    tables, pngs = [], []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            tables += markdown_tables(cell.source)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                parser = _Headers()
                parser.feed(data["text/html"])
                if parser.tables:
                    tables.append(parser.headers)
            elif "text/markdown" in data:
                tables += markdown_tables(data["text/markdown"])
            if "image/png" in data and not any(m in data for m in SHOWN_BEFORE_PNG):
                pngs.append(base64.b64decode(data["image/png"]))
    return [[norm(c) for c in t] for t in tables], pngs


def png_size(data: bytes, where: str = "") -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{where}: an image of {len(data)} bytes is not a PNG"
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------- the check

def check_page(html: Path, notebook: Path, tmp_path: Path) -> dict:
    """Open ``html`` in headless Chromium and check every table and figure of ``notebook`` is painted."""
    tables, pngs = expected(notebook)
    probe, shot = open_page(html, tmp_path)
    page = f"{html.name} (from {notebook.name})"

    # tables: as many as the notebook shows, each laid out with its header cells
    shown = [t for t in probe["tables"] if t["box"]["h"] > 0 and t["rows"] >= 2]
    assert len(shown) >= len(tables), f"{page}: {len(shown)} tables rendered, the notebook shows {len(tables)}"
    headers = {norm(h) for t in probe["tables"] for h in t["headers"]}
    for cells in tables:
        missing = [c for c in cells if c and c not in headers]
        assert not missing, f"{page}: header cells {missing} of a table are not on the page"

    # figures: every PNG of the notebook is on the page, decoded by the browser at its own size
    images = [i for i in probe["images"] if i["src"].startswith("data:image/png;base64,")]
    on_page = {}
    for img in images:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        width, height = png_size(data, page)
        assert img["complete"] and img["natural"] == [width, height], \
            f"{page}: an embedded PNG of {width}x{height} px was decoded as {img['natural']}"
        assert img["box"]["w"] > 0 and img["box"]["h"] > 0, f"{page}: an image is not laid out"
        on_page[data] = img
    for data in pngs:
        assert data in on_page, f"{page}: a figure of the notebook ({len(data)} bytes) is not on the page"
        assert len(data) > 1000 and min(png_size(data, page)) >= 50, f"{page}: a figure of {len(data)} bytes is trivial"

    # the screenshot: not blank; each figure is more than one colour and each table has text on it
    assert len(shot.getcolors(1 << 24)) > 16, f"{page}: the screenshot is (nearly) one colour"
    for what, boxes in (("figure", [on_page[d]["box"] for d in pngs]), ("table", [t["box"] for t in shown])):
        for b in boxes:
            left, top = int(b["x"]), int(b["y"])
            right, bottom = min(int(b["x"] + b["w"]), shot.width), min(int(b["y"] + b["h"]), shot.height)
            if right - left < 4 or bottom - top < 4:
                continue  # below the longest screenshot taken (16000 px)
            crop = shot.crop((left, top, right, bottom))
            colours = crop.getcolors(1 << 24)
            assert len(colours) > 2, f"{page}: a {what} at {b} is painted in {len(colours)} colour(s)"
            grey = crop.convert("L")
            assert grey.getextrema()[0] < 128, f"{page}: a {what} at {b} has nothing dark on it (no text or lines)"
    return {"tables": len(shown), "figures": len(pngs)}


def page_of(notebook: Path, tmp_path: Path) -> Path:
    """results/html/<notebook>.html where run_all.sh wrote it, else a fresh rendering of the executed notebook."""
    written = RESULTS / "html" / f"{notebook.stem}.html"
    if written.exists():
        return written
    return render_html(notebook, tmp_path / "html" / f"{notebook.stem}.html")


@pytest.mark.parametrize("notebook", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_every_executed_notebook_renders_its_tables_and_figures(notebook, tmp_path):
    counts = check_page(page_of(notebook, tmp_path), notebook, tmp_path)
    assert counts["tables"] + counts["figures"] > 0, f"{notebook.name}: neither a table nor a figure to check"


def test_the_results_have_executed_notebooks():
    """The parametrised test above has pages to open (results/notebooks is committed)."""
    assert EXECUTED, f"no executed notebooks in {RESULTS / 'notebooks'}: run ./run_all.sh"


def test_a_table_and_a_figure_of_a_tiny_notebook_render(tmp_path):
    """The check itself, on a notebook made here: a markdown table output and a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
    ax.plot([0, 1, 2], [0, 1, 4], color="tab:red")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    table = "| fusion | accuracy (%) |\n|:--|--:|\n| sum | 85.9 |\n| conv | 86.1 |\n"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/markdown": table, "text/plain": "t"},
                                           execution_count=1),
                    nbformat.v4.new_output("display_data", {"image/png": base64.b64encode(png).decode(),
                                                            "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), cell]
    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nb, str(notebook))
    html = render_html(notebook, tmp_path / "html" / "tiny.html")
    assert check_page(html, notebook, tmp_path) == {"tables": 1, "figures": 1}
    assert expected(notebook)[0] == [["fusion", "accuracy (%)"]]
