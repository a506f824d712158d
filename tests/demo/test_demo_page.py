"""The Gradio demo: what it shows, which examples it finds, and the real page driven in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_helpers import LABELS, free_port, http_get, make_package, write_upload_image
from PIL import Image

from imgcls.data.images import to_rgb
from imgcls.demo import build_demo, card_summary, default_examples, launch_options
from imgcls.predict import Classifier

CHROMIUM = Path("/usr/bin/chromium")
# No network, no first-run work: the page must come up from the local server alone.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Set to a path to keep the screenshot for a person to look at, e.g. /tmp/demo_screenshot.png.
SCREENSHOT_ENV = "IMGCLS_DEMO_SCREENSHOT"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def clf(package: Path) -> Classifier:
    return Classifier.load(package)


@pytest.fixture(scope="module")
def server(clf: Classifier) -> Iterator[tuple[Any, str]]:
    """The demo, launched exactly as `launch_demo` launches it, on a free port of 127.0.0.1."""
    demo = build_demo(clf)
    _, url, _ = demo.launch(**launch_options(port=free_port()), prevent_thread_lock=True, quiet=True)
    try:
        yield demo, url.rstrip("/")
    finally:
        demo.close()


def _top(clf: Classifier, path: Path) -> list[dict[str, Any]]:
    return clf.predict_images([to_rgb(Image.open(path))])[0]


# -- what the page says -------------------------------------------------------------------------------------------------
def test_card_summary_reads_heading_and_first_paragraph() -> None:
    card = (
        "---\nlibrary_name: timm\ntags: [a]\n---\n\n# Flowers v2\n\nTells five flowers\napart.\n\n## Training\n\n- x\n"
    )
    assert card_summary(card) == ("Flowers v2", "Tells five flowers apart.")
    assert card_summary("no heading, one line") == (None, "no heading, one line")
    assert card_summary("---\na: 1\n---\n# Only a title\n\n```\ncode\n```\n") == ("Only a title", None)


def test_page_text_comes_from_the_model_card(clf: Classifier) -> None:
    demo = build_demo(clf, examples=[])
    assert demo.title == "lenet5 fine-tuned with imgcls"
    assert "3 classes" in demo.description and "`向日葵`" in demo.description
    custom = build_demo(clf, examples=[], title="Shapes", description="Red, green or blue?")
    assert (custom.title, custom.description) == ("Shapes", "Red, green or blue?")


def test_page_text_without_a_card_lists_the_labels(tmp_path: Path) -> None:
    package = make_package(tmp_path, with_data=False)
    (package / "README.md").unlink()
    demo = build_demo(Classifier.load(package))
    assert demo.title == "lenet5 image classifier"
    assert demo.description == "Classifies images into 3 classes: `bird (small)`, `cat`, `向日葵`."


# -- examples -----------------------------------------------------------------------------------------------------------
def test_default_examples_one_per_class_from_the_test_split(package: Path) -> None:
    examples = default_examples(package)
    assert [p.parent.name for p in examples] == LABELS
    assert all(p.is_absolute() and p.parent.parent.name == "test" for p in examples)
    assert len(default_examples(package, limit=2)) == 2


def test_default_examples_prefers_the_package_examples_folder(tmp_path: Path, package: Path) -> None:
    copy = shutil.copytree(package, tmp_path / "model")
    (copy / "examples").mkdir()
    Image.new("RGB", (8, 8), "red").save(copy / "examples" / "b.png")
    Image.new("RGB", (8, 8), "blue").save(copy / "examples" / "a.jpg")
    (copy / "examples" / "notes.txt").write_text("not an image")
    assert [p.name for p in default_examples(copy)] == ["a.jpg", "b.png"]


def test_no_examples_when_the_training_data_is_gone(tmp_path: Path) -> None:
    package = make_package(tmp_path)
    shutil.rmtree(tmp_path / "data")
    assert default_examples(package) == []
    assert default_examples(make_package(tmp_path / "plain", with_data=False)) == []


def test_import_is_cheap() -> None:
    code = "import sys, imgcls.demo; print(sorted(m for m in ('gradio', 'torch', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_backend_is_passed_only_where_load_takes_it(monkeypatch: pytest.MonkeyPatch, package: Path) -> None:
    from imgcls import demo as demo_module

    calls: list[dict[str, Any]] = []

    def load_with_backend(ref: str | Path, *, device: str = "cpu", backend: str = "auto") -> str:
        calls.append({"backend": backend})
        return "loaded"

    def load_without(ref: str | Path, *, device: str = "cpu") -> str:
        calls.append({})
        return "loaded"

    monkeypatch.setattr(Classifier, "load", staticmethod(load_with_backend))
    assert demo_module._load_classifier(package, "onnx") == "loaded" and calls[-1] == {"backend": "onnx"}
    monkeypatch.setattr(Classifier, "load", staticmethod(load_without))
    assert demo_module._load_classifier(package, "auto") == "loaded" and calls[-1] == {}
    with pytest.raises(ValueError, match="backend='onnx'"):
        demo_module._load_classifier(package, "onnx")


# -- the live server ----------------------------------------------------------------------------------------------------
def test_launch_options_stay_private() -> None:
    options = launch_options()
    assert options["server_name"] == "127.0.0.1" and options["share"] is False
    assert options["allowed_paths"] == [] and options["enable_monitoring"] is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_no_file_of_the_machine_is_served(server: tuple[Any, str], package: Path) -> None:
    _, url = server
    assert http_get(url + "/")[0] == 200

    def get_file(path: str | Path) -> int:
        return http_get(url + "/gradio_api/file=" + urllib.parse.quote(str(path)))[0]

    assert get_file("/etc/passwd") == 403
    assert http_get(url + "/gradio_api/file/etc/passwd")[0] == 403  # the older spelling of the route
    assert get_file(package / "config.json") == 403
    # Not even the example images themselves, nor their neighbours: the page shows copies in the temp folder.
    assert get_file(default_examples(package)[0]) == 403
    assert get_file(package.parent / "data" / "train" / "cat" / "cat_1_0.png") == 403
    assert http_get(url + "/monitoring/summary")[0] == 403


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless browser test needs /usr/bin/chromium (apt-get install chromium)"
)
def test_demo_page_in_chromium(server: tuple[Any, str], clf: Classifier, package: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    _, url = server
    upload = write_upload_image(tmp_path / "upload.png")
    example = default_examples(package)[2]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            top = page.locator("[data-testid=label-output-value]")

            page.locator("input[type=file]").first.set_input_files(str(upload))
            page.get_by_role("button", name="Submit").click()
            top.wait_for(timeout=60_000)  # generous: a loaded 2-core CI machine
            shown_top = top.inner_text()
            rows = {
                row.get_attribute("data-testid").removesuffix("-confidence-set"): row.inner_text()
                for row in page.locator("[data-testid$=-confidence-set]").all()
            }
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)

            # An example: one click fills the input, Submit classifies it.
            page.get_by_role("button", name="Clear").click()
            top.wait_for(state="detached", timeout=10_000)
            page.locator("button.gallery-item").nth(2).click()
            page.get_by_role("button", name="Submit").click()
            top.wait_for(timeout=60_000)  # generous: a loaded 2-core CI machine
            example_top = top.inner_text()
        finally:
            browser.close()
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])

    expected = _top(clf, upload)
    assert shown_top == expected[0]["label"]
    # Every class (3 < 5) with its probability in percent, as Gradio rounds it.
    assert set(rows) == set(LABELS)
    for item in expected:
        assert rows[item["label"]].split()[-1] == f"{round(item['score'] * 100)}%", rows
    assert example_top == _top(clf, example)[0]["label"]
    # The upload went to the demo's private temp folder, nowhere else.
    temp_dir = Path(os.environ["GRADIO_TEMP_DIR"])
    assert any(f.read_bytes() == upload.read_bytes() for f in temp_dir.rglob("*.png"))
    assert shot.stat().st_size > 10_000
