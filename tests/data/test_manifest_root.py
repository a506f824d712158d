"""CSV manifests are untrusted input: rows pointing outside the manifest's folder are refused unless allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.cli import main
from imgcls.data.multilabel import discover_multilabel
from imgcls.data.sources import DataError, discover, load_labeled
from imgfactory import write_class_images


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_class_images(root / "img", per_class=3, seed=0)
    return root


def _manifest(root: Path, outside: str) -> Path:
    rows = [f"img/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted((root / "img").rglob("*.png"))]
    rows.insert(2, f"{outside},cat")
    csv_path = root / "labels.csv"
    csv_path.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return csv_path


@pytest.mark.parametrize("outside", ["../../../../../../etc/passwd", "/etc/passwd", "img/../../secret.png"])
def test_paths_outside_the_root_are_refused_naming_file_row_and_path(dataset: Path, outside: str) -> None:
    csv_path = _manifest(dataset, outside)
    with pytest.raises(DataError) as info:
        discover(csv_path)
    message = str(info.value)
    assert str(csv_path) in message and "line 4" in message and outside in message
    assert "--allow-outside-root" in message
    with pytest.raises(DataError, match="outside the data root"):
        load_labeled(csv_path, ["bird (small)", "cat", "向日葵"])


def test_a_symlink_out_of_the_root_is_refused(dataset: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes((next((dataset / "img" / "cat").iterdir())).read_bytes())
    (dataset / "img" / "link.png").symlink_to(secret)
    with pytest.raises(DataError, match="outside the data root"):
        discover(_manifest(dataset, "img/link.png"))


def test_allow_outside_root_lets_a_trusted_manifest_through(dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "x.png"
    outside.parent.mkdir()
    outside.write_bytes(next((dataset / "img" / "cat").iterdir()).read_bytes())
    csv_path = _manifest(dataset, str(outside))
    splits = discover(csv_path, val_fraction=0.0, allow_outside_root=True)
    assert outside in {s.path for s in splits.train}


def test_multilabel_manifests_are_checked_too(dataset: Path) -> None:
    csv_path = dataset / "multi.csv"
    csv_path.write_text("path,labels\nimg/cat/a.png,cat\n/etc/passwd,cat;dog\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: path '/etc/passwd' is outside the data root"):
        discover_multilabel(csv_path)


def test_cli_check_refuses_and_accepts_with_the_flag(dataset: Path, tmp_path: Path, capsys) -> None:
    outside = tmp_path / "x.png"
    outside.write_bytes(next((dataset / "img" / "cat").iterdir()).read_bytes())
    csv_path = _manifest(dataset, str(outside))
    out = tmp_path / "check.json"
    assert main(["check", str(csv_path), "--out", str(out), "--no-progress"]) == 2
    assert "imgcls check: error:" in capsys.readouterr().err
    assert main(["check", str(csv_path), "--out", str(out), "--no-progress", "--allow-outside-root"]) == 0
    assert out.is_file()
    # The train and evaluate verbs take the flag too.
    for verb in ("train", "evaluate"):
        help_text = subprocess.run(
            [sys.executable, "-m", "imgcls", verb, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "--allow-outside-root" in help_text
