"""Charts and the Snakemake report, opened offline in headless Chromium.

A tiny study runs through Snakemake; its chart HTML and the report are rendered to
screenshots whose pixels must show a drawing (a blank page fails the same check, tested
here too), and the chart's DOM after JavaScript must hold the marks vega-embed drew.
Skips unless a `chromium` or `chromium-browser` binary is on PATH (apt-get install chromium).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser")
WINDOW = (1000, 800)

BROWSER_STUDY = """\
study: browser_smoke
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 6}
architectures:
  gru: {family: gru, hidden: 8}
training: {env_steps: 192, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 30}
baselines: [random, ucb1]
"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} on PATH (apt-get install chromium)")
    return path


def chromium(browser: str, *arguments: str, url: str) -> subprocess.CompletedProcess:
    """Headless Chromium, offline, with a throwaway profile; virtual time lets scripts finish."""
    with tempfile.TemporaryDirectory(prefix="mesaprobe-chromium-") as profile:
        return subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--virtual-time-budget=10000",
                *arguments,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )


def screenshot(browser: str, page: Path, png: Path) -> Path:
    result = chromium(browser, f"--screenshot={png}", url=page.resolve().as_uri())
    assert png.exists(), f"no screenshot of {page.name} (exit {result.returncode}): {result.stderr[-2000:]}"
    return png


def dump_dom(browser: str, page: Path) -> str:
    result = chromium(browser, "--dump-dom", url=page.resolve().as_uri())
    assert result.returncode == 0 and result.stdout, f"--dump-dom of {page.name}: {result.stderr[-2000:]}"
    return result.stdout


# --- PNG, decoded with zlib alone (8-bit RGB or RGBA, not interlaced: what Chromium writes) ---


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    position, compressed = 8, []
    width = height = channels = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour_type in (2, 6), (depth, colour_type, interlace)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(compressed))
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(bytes(line) if channels == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


@dataclass
class Pixels:
    colours: int  # distinct colours
    non_white: float  # fraction of pixels darker than near-white
    colourful: float  # fraction of saturated pixels (lines, bands, legend), not grey text

    @classmethod
    def of(cls, png: Path) -> Pixels:
        width, height, rows = read_png(png)
        assert (width, height) == WINDOW
        counts = Counter(row[i : i + 3] for row in rows for i in range(0, len(row), 3))
        total = width * height
        non_white = sum(n for colour, n in counts.items() if min(colour) < 240)
        colourful = sum(n for colour, n in counts.items() if max(colour) - min(colour) > 40)
        return cls(len(counts), non_white / total, colourful / total)

    def is_chart(self) -> bool:
        """A drawn chart: many colours (anti-aliasing, bands), ink, and colour, not just text."""
        return self.colours >= 100 and self.non_white >= 0.05 and self.colourful >= 0.002

    def is_page(self) -> bool:
        """Something rendered at all."""
        return self.colours >= 20 and self.non_white >= 0.01


class Elements(HTMLParser):
    """Elements in a document; scripts' text is not parsed, so code strings don't count."""

    def __init__(self, html: str):
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs).get("class") or ""))

    def drawn(self) -> list[tuple[str, str]]:
        return [(tag, css) for tag, css in self.found if tag in ("svg", "canvas")]

    def classes(self) -> set[str]:
        return {name for _, css in self.found for name in css.split()}


@pytest.fixture(scope="module")
def study_pages(browser, tmp_path_factory) -> dict[str, Path]:
    """A tiny study run locally through Snakemake: a chart's HTML and the report."""
    workdir = tmp_path_factory.mktemp("browser")
    spec = workdir / "browser_smoke.yaml"
    spec.write_text(BROWSER_STUDY)
    executable = Path(sys.executable).with_name("snakemake")
    snakemake = [
        str(executable) if executable.exists() else shutil.which("snakemake") or "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--config",
        f"spec={spec}",
    ]
    ran = subprocess.run([*snakemake, "--cores", "2"], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = workdir / "report.html"
    made = subprocess.run([*snakemake, "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    chart = workdir / "results" / "browser_smoke" / "charts" / "regret_bandit2_adaptation.html"
    assert chart.exists(), sorted(p.name for p in chart.parent.iterdir())
    return {"chart": chart, "report": report}


def test_blank_page_fails_the_pixel_checks(browser, tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    pixels = Pixels.of(screenshot(browser, blank, tmp_path / "blank.png"))
    assert not pixels.is_page() and not pixels.is_chart(), pixels
    text = tmp_path / "text.html"
    text.write_text(
        "<!doctype html><html><body><p>" + "Error: could not draw the chart. " * 40 + "</p></body></html>"
    )
    pixels = Pixels.of(screenshot(browser, text, tmp_path / "text.png"))
    assert not pixels.is_chart(), pixels


def test_chart_draws_offline(browser, study_pages, tmp_path):
    chart = study_pages["chart"]
    pixels = Pixels.of(screenshot(browser, chart, tmp_path / "chart.png"))
    assert pixels.is_chart(), pixels

    # The page ships no drawing; vega-embed's JavaScript (inlined, there is no network)
    # must create it: an <svg class="marks"> or <canvas class="marks"> holding data marks.
    assert Elements(chart.read_text(errors="replace")).drawn() == []
    after = Elements(dump_dom(browser, chart))
    assert any(css.split()[:1] == ["marks"] for _, css in after.drawn()), after.drawn()
    classes = after.classes()
    assert "vega-embed" in classes and "role-mark" in classes, sorted(classes)[:40]


def test_report_renders(browser, study_pages, tmp_path):
    report = study_pages["report"]
    pixels = Pixels.of(screenshot(browser, report, tmp_path / "report.png"))
    assert pixels.is_page(), pixels
    # The report is a single-page app: its script builds the page, drawings included.
    assert Elements(report.read_text(errors="replace")).drawn() == []
    assert Elements(dump_dom(browser, report)).drawn(), "the report's script drew nothing"
