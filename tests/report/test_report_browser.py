"""The report opened from disk in headless Chromium: every image loads and shows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_fixtures import make_metrics

from imgcls.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
# No network, no first-run work: the page must render from the file alone.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Set to a path to keep the screenshot for a person to look at, e.g. /tmp/report_screenshot.png.
SCREENSHOT_ENV = "IMGCLS_REPORT_SCREENSHOT"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless browser test needs /usr/bin/chromium (apt-get install chromium)"
)
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    path = write_report(tmp_path / "out", make_metrics(tmp_path / "images"))
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img",
                """els => els.map(el => { const r = el.getBoundingClientRect();
                    return {alt: el.alt, complete: el.complete, naturalWidth: el.naturalWidth,
                            width: r.width, height: r.height, visible: el.checkVisibility()}; })""",
            )
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) == 4 + 3  # four plots, three readable mistakes
    for img in images:
        assert img["complete"] and img["naturalWidth"] > 0, img
        assert img["visible"] and img["width"] > 0 and img["height"] > 0, img
    # Only the file itself and its data URIs: nothing fetched from elsewhere.
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
