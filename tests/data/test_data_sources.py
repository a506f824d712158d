"""discover / load_labeled: the dataset layouts users have, and the mistakes they make."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from imgcls.data import DataError, DataSplits, Sample, discover, load_labeled

CLASSES = ["bird (small)", "cat", "向日葵"]


def make_classes(root: Path, make_image, counts: dict[str, int], seed: int = 0, reverse: bool = False) -> None:
    """``root/<class>/<i>.png`` for each class; ``reverse`` writes files in the opposite order."""
    items = [(name, i) for name, n in counts.items() for i in range(n)]
    for name, i in reversed(items) if reverse else items:
        make_image(root / name / f"{i:03d}.png", seed=seed * 100_000 + zlib.crc32(f"{name}/{i}".encode()) % 100_000)


def relative(samples: list[Sample], root: Path) -> list[tuple[str, int]]:
    return [(s.path.relative_to(root).as_posix(), s.label) for s in samples]


def test_class_folders_with_utf8_names_nested_and_ignored_files(tmp_path: Path, make_image):
    root = tmp_path / "flowers"
    make_classes(root, make_image, {"向日葵": 3, "bird (small)": 2, "cat": 2})
    make_image(root / "cat" / "indoor" / "sofa.jpg", fmt="JPEG")  # nested folders are part of the class
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    make_image(root / "cat" / ".thumbs" / "x.png")  # hidden folder
    make_image(root / ".cache" / "y.png")  # hidden class-like folder

    splits = discover(root, val_fraction=0)
    assert splits.classes == CLASSES  # Python string order: ' ' < 'c' < CJK
    assert splits.root == root.absolute()
    assert splits.counts() == {"train": {"bird (small)": 2, "cat": 3, "向日葵": 3}}
    assert splits.val == [] and splits.test == []
    assert list(splits.splits()) == ["train"]
    cat = CLASSES.index("cat")
    assert sorted(p for p, label in relative(splits.train, root) if label == cat) == [
        "cat/000.png",
        "cat/001.png",
        "cat/indoor/sofa.jpg",
    ]


def test_train_val_test_layout(tmp_path: Path, make_image):
    make_classes(tmp_path / "train", make_image, {"cat": 4, "dog": 4, "fox": 2})
    make_classes(tmp_path / "val", make_image, {"cat": 1, "dog": 1}, seed=1)
    make_classes(tmp_path / "test", make_image, {"cat": 2, "fox": 1}, seed=2)
    splits = discover(tmp_path)
    assert splits.classes == ["cat", "dog", "fox"]
    assert splits.counts() == {
        "train": {"cat": 4, "dog": 4, "fox": 2},
        "val": {"cat": 1, "dog": 1, "fox": 0},
        "test": {"cat": 2, "dog": 0, "fox": 1},
    }
    assert all(s.path.parts[-3] == "val" for s in splits.val)


def test_valid_folder_counts_as_val(tmp_path: Path, make_image):
    make_classes(tmp_path / "train", make_image, {"a": 2, "b": 2})
    make_classes(tmp_path / "valid", make_image, {"a": 1}, seed=1)
    assert len(discover(tmp_path).val) == 1


def test_class_named_train_next_to_other_classes_is_a_class(tmp_path: Path, make_image):
    make_classes(tmp_path, make_image, {"train": 2, "car": 2, "bus": 2})
    assert discover(tmp_path, val_fraction=0).classes == ["bus", "car", "train"]


def test_class_only_in_val_is_an_error(tmp_path: Path, make_image):
    make_classes(tmp_path / "train", make_image, {"cat": 2, "dog": 2})
    make_classes(tmp_path / "val", make_image, {"cat": 1, "owl": 1}, seed=1)
    with pytest.raises(DataError, match=r"class 'owl' appears in val .*no training images"):
        discover(tmp_path)


def test_val_without_train_is_an_error(tmp_path: Path, make_image):
    make_classes(tmp_path / "val", make_image, {"cat": 1, "dog": 1})
    make_classes(tmp_path / "test", make_image, {"cat": 1, "dog": 1})
    with pytest.raises(DataError, match=r"no train/ folder"):
        discover(tmp_path)


def test_stratified_split_is_deterministic_and_covers_every_class(tmp_path: Path, make_image):
    counts = {"a": 20, "b": 10, "c": 3, "d": 2, "e": 1}
    make_classes(tmp_path / "one", make_image, counts)
    make_classes(tmp_path / "two", make_image, counts, reverse=True)  # other creation order on disk

    first = discover(tmp_path / "one", val_fraction=0.2, seed=7)
    again = discover(tmp_path / "one", val_fraction=0.2, seed=7)
    elsewhere = discover(tmp_path / "two", val_fraction=0.2, seed=7)
    assert first == again
    assert relative(first.val, tmp_path / "one") == relative(elsewhere.val, tmp_path / "two")

    val_counts = first.counts()["val"]
    assert val_counts == {"a": 4, "b": 2, "c": 1, "d": 1, "e": 0}  # >= 1 per class with 2+ images
    assert first.counts()["train"] == {"a": 16, "b": 8, "c": 2, "d": 1, "e": 1}
    assert not {s.path for s in first.train} & {s.path for s in first.val}

    other_seed = discover(tmp_path / "one", val_fraction=0.2, seed=8)
    assert {s.path for s in other_seed.val} != {s.path for s in first.val}


def test_no_val_when_fraction_is_zero(tmp_path: Path, make_image):
    make_classes(tmp_path, make_image, {"a": 5, "b": 5})
    splits = discover(tmp_path, val_fraction=0)
    assert len(splits.train) == 10 and splits.val == []
    assert "val" not in splits.splits()


def test_csv_manifest(tmp_path: Path, make_image):
    for seed, name in enumerate(("a1", "a2", "b1", "b2", "b3")):
        make_image(tmp_path / "imgs" / f"{name}.png", seed=seed)
    (tmp_path / "labels.csv").write_text(
        "path,label,split\n"
        "imgs/a1.png,向日葵,train\n"
        "\n"
        "imgs/a2.png,向日葵,val\n"
        "imgs/b1.png,bird (small),train\n"
        'imgs/b2.png,"bird (small)",TRAIN\n'
        f"{tmp_path / 'imgs' / 'b3.png'},bird (small),test\n",
        encoding="utf-8",
    )
    splits = discover(tmp_path / "labels.csv")
    assert splits.classes == ["bird (small)", "向日葵"]
    assert splits.counts() == {
        "train": {"bird (small)": 2, "向日葵": 1},
        "val": {"bird (small)": 0, "向日葵": 1},
        "test": {"bird (small)": 1, "向日葵": 0},
    }
    assert all(s.path.is_file() for split in splits.splits().values() for s in split)


def test_csv_without_split_column_gets_a_val_split(tmp_path: Path, make_image):
    rows = ["path,label"]
    for i in range(6):
        make_image(tmp_path / f"{i}.png", seed=i)
        rows.append(f"{i}.png,{'even' if i % 2 == 0 else 'odd'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    splits = discover(tmp_path / "m.csv", val_fraction=0.3)
    assert splits.counts()["val"] == {"even": 1, "odd": 1}


def test_csv_missing_label_column(tmp_path: Path):
    (tmp_path / "bad.csv").write_text("path,class\na.png,cat\n")
    with pytest.raises(DataError) as info:
        discover(tmp_path / "bad.csv")
    message = str(info.value)
    assert str(tmp_path / "bad.csv") in message
    assert "line 1" in message and "'label'" in message and "path,label" in message


def test_csv_empty_label_names_the_line(tmp_path: Path, make_image):
    make_image(tmp_path / "a.png")
    (tmp_path / "bad.csv").write_text("path,label\na.png,cat\n\na.png,\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 4: empty 'label'"):
        discover(tmp_path / "bad.csv")


def test_csv_whose_paths_all_miss(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("path,label\nx/1.png,a\nx/2.png,b\n")
    with pytest.raises(
        DataError, match=r"none of the 2 image paths exist.*relative paths are read from the CSV's folder"
    ):
        discover(tmp_path / "sub" / "m.csv")


def test_missing_path_lists_builtin_datasets(tmp_path: Path):
    with pytest.raises(DataError, match=r"no such file or folder.*digits"):
        discover(tmp_path / "nowhere")


def test_empty_folder(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images found"):
        discover(tmp_path / "empty")


def test_images_without_class_folders(tmp_path: Path, make_image):
    make_image(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"no class subfolders; put each class in its own subfolder"):
        discover(tmp_path)


def test_one_class_is_not_enough(tmp_path: Path, make_image):
    make_classes(tmp_path, make_image, {"cat": 3})
    with pytest.raises(DataError, match=r"only class 'cat'; a classifier needs at least two classes"):
        discover(tmp_path)


def test_class_folder_without_images(tmp_path: Path, make_image):
    make_classes(tmp_path, make_image, {"cat": 2, "dog": 2})
    (tmp_path / "owl").mkdir()
    (tmp_path / "owl" / "owl.heic").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.raises(
        DataError, match=r"owl: class folder has no images \(1 files with other extensions, e\.g\. owl\.heic\)"
    ):
        discover(tmp_path)


def test_not_a_csv_file(tmp_path: Path):
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match=r"not a CSV manifest"):
        discover(tmp_path / "data.json")


def test_bad_val_fraction(tmp_path: Path):
    with pytest.raises(DataError, match=r"val_fraction"):
        discover(tmp_path, val_fraction=1.0)


def test_data_splits_helpers():
    splits = DataSplits(root=Path("."), classes=["a", "b"], train=[Sample(Path("1"), 0)], test=[Sample(Path("2"), 1)])
    assert list(splits.splits()) == ["train", "test"]
    assert splits.counts() == {"train": {"a": 1, "b": 0}, "test": {"a": 0, "b": 1}}


class TestLoadLabeled:
    def test_prefers_test_then_val(self, tmp_path: Path, make_image):
        make_classes(tmp_path / "train", make_image, {"cat": 2, "dog": 2})
        make_classes(tmp_path / "val", make_image, {"cat": 1}, seed=1)
        make_classes(tmp_path / "test", make_image, {"dog": 2}, seed=2)
        samples = load_labeled(tmp_path, ["cat", "dog"])
        assert [s.label for s in samples] == [1, 1] and all("test" in s.path.parts for s in samples)
        (tmp_path / "test").rename(tmp_path / "old")
        with pytest.raises(DataError):  # "old" is not a split: now the root reads as class folders
            load_labeled(tmp_path, ["cat", "dog"])
        (tmp_path / "old").rename(tmp_path / ".old")
        assert [s.label for s in load_labeled(tmp_path, ["cat", "dog"])] == [0]
        assert len(load_labeled(tmp_path, ["cat", "dog"], split="all")) == 5

    def test_labels_follow_the_model_class_order(self, tmp_path: Path, make_image):
        make_classes(tmp_path, make_image, {"cat": 1, "dog": 2})
        samples = load_labeled(tmp_path, ["dog", "zebra", "cat"])
        assert sorted(s.label for s in samples) == [0, 0, 2]

    def test_unknown_class_lists_the_known_ones(self, tmp_path: Path, make_image):
        make_classes(tmp_path, make_image, {"cat": 1, "owl": 1})
        with pytest.raises(DataError, match=r"class 'owl' .* not one of the model's classes: 'cat', 'dog'"):
            load_labeled(tmp_path, ["cat", "dog"])

    def test_missing_split(self, tmp_path: Path, make_image):
        make_classes(tmp_path / "train", make_image, {"cat": 1})
        with pytest.raises(DataError, match=r"no 'test' split \(splits found: train\)"):
            load_labeled(tmp_path, ["cat"], split="test")
        make_classes(tmp_path / "flat", make_image, {"cat": 1})
        with pytest.raises(DataError, match=r"holds class folders"):
            load_labeled(tmp_path / "flat", ["cat"], split="val")

    def test_csv(self, tmp_path: Path, make_image):
        make_image(tmp_path / "1.png", seed=1)
        make_image(tmp_path / "2.png", seed=2)
        (tmp_path / "m.csv").write_text("path,label,split\n1.png,cat,train\n2.png,dog,test\n")
        assert load_labeled(tmp_path / "m.csv", ["cat", "dog"]) == [Sample(tmp_path / "2.png", 1)]
        (tmp_path / "u.csv").write_text("path,label\n1.png,cow\n")
        with pytest.raises(DataError, match=r"'cow'"):
            load_labeled(tmp_path / "u.csv", ["cat", "dog"])
