"""check_splits / check_samples: bad files are dropped and reported, duplicates and leakage are found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from imgcls.data import CheckReport, DataError, Sample, check_samples, check_splits, discover


@pytest.fixture
def dataset(tmp_path: Path, make_image, broken_files: dict[str, Path]) -> Path:
    """train/ with 3 classes (4 broken files among 'cat') and val/; all good images are unique."""
    root = tmp_path / "ds"
    seed = 0
    for split, counts in (("train", {"cat": 4, "dog": 3, "向日葵": 2}), ("val", {"cat": 1, "dog": 1, "向日葵": 1})):
        for name, n in counts.items():
            for i in range(n):
                seed += 1
                make_image(root / split / name / f"{i}.png", seed=seed)
    for path in broken_files.values():
        shutil.copy(path, root / "train" / "cat" / path.name)
    return root


def test_bad_files_are_dropped_and_reported(dataset: Path):
    splits = discover(dataset)
    assert len(splits.train) == 13
    clean, report = check_splits(splits, progress=False)

    assert report.num_files == 16
    assert {Path(bad["path"]).name: bad["reason"] for bad in report.bad_files} == {
        "empty.jpg": "empty file (0 bytes)",
        "truncated.jpg": "truncated image",
        "page.jpg": f"not an image (HTML page, {(dataset / 'train/cat/page.jpg').stat().st_size} bytes)",
        "noise.png": "not an image (unrecognised format, 300 bytes)",
    }
    assert all(bad["split"] == "train" for bad in report.bad_files)
    assert report.bad_files[0]["path"].startswith("train/cat/")  # relative to the dataset root
    assert report.class_counts == {"train": {"cat": 4, "dog": 3, "向日葵": 2}, "val": {"cat": 1, "dog": 1, "向日葵": 1}}
    assert clean.classes == splits.classes and len(clean.train) == 9 and clean.val == splits.val
    assert report.imbalance_ratio == 2.0
    assert report.duplicates == [] and report.cross_split_duplicates == [] and report.conflicting_labels == []

    summary = report.summary()
    assert "4 of 16 files skipped (2 not an image, 1 empty, 1 truncated); see data_check.json" in summary
    assert "train: 9 images: cat 4, dog 3, 向日葵 2" in summary


def test_duplicates_leakage_and_conflicting_labels(dataset: Path):
    train, val = dataset / "train", dataset / "val"
    shutil.copy(train / "dog" / "0.png", train / "dog" / "copy.png")  # harmless duplicate within train
    shutil.copy(train / "cat" / "1.png", val / "cat" / "leaked.png")  # same image in train and val
    shutil.copy(train / "dog" / "2.png", train / "向日葵" / "mislabelled.png")  # same image, two labels

    _, report = check_splits(discover(dataset), progress=False)
    assert sorted(report.duplicates) == [
        ["train/cat/1.png", "val/cat/leaked.png"],
        ["train/dog/0.png", "train/dog/copy.png"],
        ["train/dog/2.png", "train/向日葵/mislabelled.png"],
    ]
    assert report.cross_split_duplicates == [
        {"paths": ["train/cat/1.png", "val/cat/leaked.png"], "splits": ["train", "val"]}
    ]
    assert report.conflicting_labels == [
        {"paths": ["train/dog/2.png", "train/向日葵/mislabelled.png"], "labels": ["dog", "向日葵"]}
    ]
    summary = report.summary()
    assert "appear in more than one split (leakage" in summary
    assert "train/cat/1.png [train] = val/cat/leaked.png [val]" in summary
    assert "carry different labels" in summary


def test_class_with_only_bad_files_stops_training(tmp_path: Path, make_image, broken_files: dict[str, Path]):
    root = tmp_path / "ds"
    make_image(root / "cat" / "1.png", seed=1)
    make_image(root / "dog" / "1.png", seed=2)
    make_image(root / "dog" / "2.png", seed=3)
    (root / "owl").mkdir()
    shutil.copy(broken_files["truncated"], root / "owl" / "a.jpg")
    shutil.copy(broken_files["html"], root / "owl" / "b.jpg")

    with pytest.raises(DataError) as info:
        check_splits(discover(root, val_fraction=0), progress=False)
    message = str(info.value)
    assert "class 'owl' has no usable training images: all 2 failed to load" in message
    assert "owl/a.jpg: truncated image" in message
    assert isinstance(info.value.report, CheckReport) and len(info.value.report.bad_files) == 2


def test_imbalance_warning(tmp_path: Path, make_image):
    for i in range(8):
        make_image(tmp_path / "many" / f"{i}.png", seed=i)
    make_image(tmp_path / "few" / "0.png", seed=100)
    make_image(tmp_path / "few" / "1.png", seed=101)
    _, report = check_splits(discover(tmp_path, val_fraction=0), progress=False)
    assert report.imbalance_ratio == 4.0
    assert "classes are imbalanced; the largest training class has 4.0x the images of the smallest" in report.summary()
    assert report.summary().startswith("All 10 files decode.")


def test_report_json_keeps_utf8_names(dataset: Path, tmp_path: Path):
    _, report = check_splits(discover(dataset), progress=False, workers=1)
    path = report.write_json(tmp_path / "run" / "data_check.json")
    text = path.read_text(encoding="utf-8")
    assert "向日葵" in text
    loaded = json.loads(text)
    assert loaded["num_files"] == 16 and len(loaded["bad_files"]) == 4
    assert set(loaded) >= {
        "bad_files",
        "class_counts",
        "duplicates",
        "cross_split_duplicates",
        "conflicting_labels",
        "imbalance_ratio",
        "num_files",
    }


def test_progress_bar_runs(dataset: Path):
    clean, _ = check_splits(discover(dataset), progress=True)
    assert len(clean.train) == 9


def test_check_samples_for_evaluation(tmp_path: Path, make_image, broken_files: dict[str, Path]):
    good = Sample(make_image(tmp_path / "a.png"), 1)
    samples = [good, Sample(broken_files["empty"], 0), Sample(tmp_path / "gone.png", 0)]
    kept, bad = check_samples(samples, ["cat", "dog"], progress=False)
    assert kept == [good]
    assert [b["reason"] for b in bad] == ["empty file (0 bytes)", "file not found"]
    with pytest.raises(DataError, match=r"label 5 is outside the 2 classes"):
        check_samples([Sample(good.path, 5)], ["cat", "dog"], progress=False)
