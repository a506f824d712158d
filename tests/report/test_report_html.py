"""The HTML report and its PNG plots, built from a scikit-learn-computed metrics dict."""

from __future__ import annotations

import base64
import html
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from report_fixtures import ABSENT, make_metrics

from imgcls.report import PLOT_FILES, render_plots, write_report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("report")
    metrics = make_metrics(root / "images")
    path = write_report(root / "out", metrics, title="Flowers <test> & co")
    return path, metrics, path.read_text(encoding="utf-8")


def test_writes_html_and_the_four_plots(report: tuple[Path, dict, str]) -> None:
    path, _, _ = report
    assert path.name == "report.html"
    for name in PLOT_FILES:
        png = path.parent / f"{name}.png"
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.format == "PNG"
            assert img.width >= 400 and img.height >= 250, (name, img.size)
            assert img.width <= 2500 and img.height <= 2500, (name, img.size)


def test_plots_are_embedded_byte_for_byte(report: tuple[Path, dict, str]) -> None:
    path, _, text = report
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == len(PLOT_FILES)
    files = {(path.parent / f"{name}.png").read_bytes() for name in PLOT_FILES}
    assert {base64.b64decode(data) for data in embedded} == files


def test_per_class_rows_worst_f1_first_absent_last(report: tuple[Path, dict, str]) -> None:
    _, metrics, text = report
    table = re.search(r'<table class="per-class">(.*?)</table>', text, re.S)
    assert table is not None
    shown = re.findall(r"<tr[^>]*><td>(.*?)(?:<span|</td>)", table.group(1))
    present = sorted((r for r in metrics["per_class"] if r["support"]), key=lambda r: r["f1"])
    expected = [html.escape(r["label"]) for r in present] + [html.escape(ABSENT)]
    assert shown == expected
    assert len({r["f1"] for r in present}) == len(present)  # the order is not decided by ties
    absent_row = re.search(r"<tr class=absent><td>zebra<span class=\"tag\">absent</span>.*?</tr>", text)
    assert absent_row is not None and "—" in absent_row.group(0)


def test_labels_paths_and_title_are_escaped(report: tuple[Path, dict, str]) -> None:
    _, _, text = report
    assert "dog & <wolf>" not in text
    assert "dog &amp; &lt;wolf&gt;" in text
    assert "向日葵" in text and "bird (small)" in text
    assert "<title>Flowers &lt;test&gt; &amp; co</title>" in text
    assert "broken &lt;1&gt;.jpg" in text  # skipped file, in the warnings box
    assert "向日葵 &lt;0&gt; &amp; co.png" in text  # mistake path


def test_summary_warnings_and_sections(report: tuple[Path, dict, str]) -> None:
    _, metrics, text = report
    assert f"{100 * metrics['top1']:.1f}%" in text
    assert f"{metrics['calibration']['ece']:.3f}" in text
    assert "Temperature" in text
    assert "1 class has no images" in text and "1 file could not be read" in text
    order = [text.index(f'id="{anchor}"') for anchor in ("summary", "per-class", "confusion", "curves")]
    order += [text.index(f'id="{anchor}"') for anchor in ("calibration", "confused-pairs", "mistakes")]
    assert order == sorted(order)
    pair = metrics["confused_pairs"][0]
    assert f"<td>{html.escape(pair['true'])}</td><td>{html.escape(pair['predicted'])}</td>" in text


def test_mistake_thumbnails_and_placeholder(report: tuple[Path, dict, str]) -> None:
    _, metrics, text = report
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', text)
    readable = [m for m in metrics["mistakes"] if Path(m["path"]).exists()]
    assert len(thumbs) == len(readable) == 3
    for data in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "JPEG" and max(img.size) <= 128
    assert "no preview<br>file not found" in text


def test_self_contained(report: tuple[Path, dict, str]) -> None:
    _, _, text = report
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text and "@import" not in text and "url(" not in text


def test_minimal_metrics_still_give_a_report(tmp_path: Path) -> None:
    """Without curves, calibration, mistakes or model info every section degrades to a note."""
    metrics = {
        "num_samples": 4,
        "top1": 0.5,
        "labels": ["a", "b"],
        "per_class": [
            {"label": "a", "precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 2, "ap": None, "auc": None},
            {"label": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "ap": None, "auc": None},
        ],
        "confusion_matrix": [[2, 0], [2, 0]],
    }
    path = write_report(tmp_path, metrics)
    text = path.read_text(encoding="utf-8")
    assert text.count('<img src="data:image/png;base64,') == len(PLOT_FILES)
    assert all((tmp_path / f"{name}.png").stat().st_size > 0 for name in PLOT_FILES)
    assert "No mistakes to show" in text


def test_many_classes_render(tmp_path: Path) -> None:
    """120 classes: no cell numbers, no tick labels, legends capped; it must still draw in reasonable size."""
    n = 120
    labels = [f"class {i}" for i in range(n)]
    matrix = [[5 if i == j else (1 if j == (i + 1) % n else 0) for j in range(n)] for i in range(n)]
    curve = {"precision": [1.0, 0.5, 0.2], "recall": [0.0, 0.6, 1.0]}
    metrics = {
        "labels": labels,
        "confusion_matrix": matrix,
        "per_class": [{"label": x, "f1": 0.8, "support": 6, "ap": i / n, "auc": 0.9} for i, x in enumerate(labels)],
        "curves": {
            "pr": dict.fromkeys(labels, curve),
            "roc": dict.fromkeys(labels, {"fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.8, 1.0]}),
            "pr_micro": curve,
        },
    }
    plots = render_plots(metrics)
    with Image.open(io.BytesIO(plots["confusion_matrix"])) as img:
        assert max(img.size) <= 2000


def test_import_is_cheap() -> None:
    code = "import sys, imgcls.report; sys.exit(int(any(m in sys.modules for m in ('matplotlib', 'torch', 'PIL'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
