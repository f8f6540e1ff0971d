"""The HTML report in a real browser (issue 19, item 14): Debian's chromium, headless, driven by
Playwright. Every figure loads, no link is broken, and the page is readable at phone width (no
horizontal scrolling at 390 px). Skips with the reason where no browser or Playwright is installed;
``scripts/media_assets.sh`` installs chromium (apt-get) and the ``dev`` extra Playwright.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from msalign.cli import main

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), shutil.which("chromium")
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TINY = "synthetic:n_train=96,n_valid=32,n_test=32"


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')"
    )
    if CHROMIUM is None:
        pytest.skip("no chromium browser installed (bash scripts/media_assets.sh installs Debian's chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def html_report(tmp_path_factory) -> Path:
    """A benchmark report with every kind of figure but the sweep's: confusion, per-class, curves, modality gap."""
    out = tmp_path_factory.mktemp("browser") / "bench"
    assert (
        main(
            [
                "benchmark",
                "--models",
                "late_fusion,decalign",
                "--dataset",
                TINY,
                "--seeds",
                "1111",
                "--epochs",
                "1",
                "--set",
                "width=16",
                "heads=2",
                "layers=1",
                "train.threads=1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["report", str(out), "--format", "html"]) == 0
    return out / "report" / "report.html"


def test_every_figure_loads_and_no_link_is_broken(browser, html_report):
    page = browser.new_page()
    page.goto(html_report.as_uri())
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(images) >= 6  # 2 confusion, per-class, 3 curves, 3 gap pairs
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, f"figures that did not load: {broken}"
    links = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    for link in links:
        url = urlparse(link)
        if url.scheme == "file":
            assert Path(unquote(url.path)).exists(), f"broken link {link}"
            if url.fragment:
                assert page.query_selector(f"[id='{url.fragment}']"), f"broken anchor {link}"
        else:
            assert url.scheme in ("http", "https"), link  # an external link is not fetched here
    page.close()


def test_readable_at_phone_width(browser, html_report):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(html_report.as_uri())
    page.wait_for_load_state("load")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390px"
    widest = page.evaluate("Math.max(...[...document.images].map(i => i.getBoundingClientRect().right))")
    assert widest <= 390
    font = page.evaluate("parseFloat(getComputedStyle(document.querySelector('p')).fontSize)")
    assert font >= 12
    page.close()
