"""Find the labelled images of a dataset: class folders, train/val/test folders, a CSV, or a built-in name.

The result is a :class:`DataSplits` of plain ``(path, label)`` samples; nothing is decoded here (that is
:mod:`imgcls.data.check`). Every problem that would make training meaningless stops here with a
:class:`DataError` that names the path and the fix.

Layouts understood by :func:`discover`::

    ROOT/<class>/**/<image>                        class folders; val is split off train
    ROOT/train/<class>/**/<image>                  plus optional ROOT/val/ (or valid/, validation/)
                                                   and ROOT/test/, each with the same class folders
    manifest.csv                                   header path,label[,split]; paths relative to the CSV;
                                                   split is train, val or test (empty: train)
    digits                                         a built-in dataset name (see imgcls.data.builtin)

Class names are folder names (or CSV labels), NFC-normalised, sorted in Python string order, so
``"10"`` sorts before ``"2"``; the order is stored with the model, so it only has to be stable.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.data.images import IMAGE_EXTENSIONS

__all__ = ["DataError", "DataSplits", "Sample", "discover", "load_labeled"]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
# Folder names people use for a split -> our split name (Kaggle and Roboflow exports use "valid").
_SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_CSV_SPLITS = dict(_SPLIT_FOLDERS)
_MAX_LISTED = 20


class DataError(ValueError):
    """A problem with a dataset that must be fixed before training; the message names the path and the fix."""


def check_inside_root(image: Path, csv_path: Path, line: int, allow_outside_root: bool) -> None:
    """Refuse a manifest row whose image lies outside the CSV's folder (``../../etc/passwd``, ``/home/...``).

    A manifest is often downloaded with a dataset; it must not make training, evaluation or the check read (and
    report on, or hash) arbitrary files. Symbolic links are followed, so a link out of the folder is refused too.
    """
    if allow_outside_root:
        return
    root = csv_path.parent.resolve()
    if not image.resolve().is_relative_to(root):
        raise DataError(
            f"{csv_path}: line {line}: path {str(image)!r} is outside the data root {root}; a manifest may only "
            "list images under its own folder. If you trust this manifest, pass --allow-outside-root "
            "(Python: allow_outside_root=True)"
        )


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes:
        path: The image file.
        label: Index into the dataset's class list.
    """

    path: Path
    label: int


@dataclass
class DataSplits:
    """The samples of a dataset, by split, with the class list their labels index.

    Attributes:
        root: The dataset folder (for a CSV manifest, the CSV file).
        classes: Class names; ``Sample.label`` indexes this list.
        train: Training samples.
        val: Validation samples (possibly split off ``train``).
        test: Held-out test samples; often empty.
    """

    root: Path
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)

    def splits(self) -> dict[str, list[Sample]]:
        """The non-empty splits, in train, val, test order."""
        return {name: samples for name in SPLIT_NAMES if (samples := getattr(self, name))}

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each non-empty split: ``{"train": {"cat": 120, "dog": 0, ...}, ...}``.

        Every class is listed in every split, with 0 where a split has none of it.
        """
        result: dict[str, dict[str, int]] = {}
        for name, samples in self.splits().items():
            per_class = dict.fromkeys(self.classes, 0)
            for sample in samples:
                per_class[self.classes[sample.label]] += 1
            result[name] = per_class
        return result


def discover(
    ref: str | Path, *, val_fraction: float = 0.1, seed: int = 0, allow_outside_root: bool = False
) -> DataSplits:
    """Find the images and labels of a dataset and split them into train, val and test.

    Args:
        ref: A folder with one subfolder per class; a folder with ``train/`` (required then) and optional
            ``val/`` and ``test/`` subfolders, each holding class folders; a CSV manifest with a
            ``path,label`` header and an optional ``split`` column; or a built-in dataset name.
        val_fraction: When there is no validation data, the share of each training class moved to
            val (at least one image of any class with two or more); 0 means no validation split.
        seed: Seed of that split. The split depends only on the file names, the seed and the
            fraction, never on the order the filesystem lists files in.
        allow_outside_root: let a CSV manifest list images outside its own folder.

    Returns:
        The splits; samples are sorted by label, then path.

    Raises:
        DataError: The path does not exist (and is not a built-in name), holds no images, has fewer than
            two classes, an empty class folder in train, or a class in val/test that train lacks.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1); got {val_fraction}")
    path = _resolve(ref)
    if path.is_file():
        by_split = _read_manifest(path, allow_outside_root=allow_outside_root)
    else:
        by_split = _scan_dataset_folder(path)

    for split_name in ("val", "test"):
        unknown = sorted(set(by_split.get(split_name, {})) - set(by_split["train"]))
        if unknown:
            example = by_split[split_name][unknown[0]][0]
            raise DataError(
                f"{path}: class {unknown[0]!r} appears in {split_name} ({example}) but has no training images; "
                f"add training images for it or remove it from {split_name}"
                + (f" (also: {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
            )
    classes = sorted(by_split["train"])
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no classes"
        raise DataError(
            f"{path}: found {found}; a classifier needs at least two classes, one subfolder per class "
            "(e.g. ROOT/cat/1.jpg, ROOT/dog/2.jpg)"
        )
    index = {name: i for i, name in enumerate(classes)}

    def samples(split_name: str) -> list[Sample]:
        per_class = by_split.get(split_name, {})
        return [Sample(p, index[name]) for name in classes for p in sorted(per_class.get(name, ()))]

    splits = DataSplits(root=path, classes=classes, train=samples("train"), val=samples("val"), test=samples("test"))
    if not splits.val and val_fraction > 0:
        splits.train, splits.val = _stratified_split(splits.train, classes, val_fraction, seed)
    return splits


def load_labeled(
    ref: str | Path, classes: list[str], *, split: str = "auto", allow_outside_root: bool = False
) -> list[Sample]:
    """Load labelled images to evaluate a trained model whose class list is ``classes``.

    Args:
        ref: A dataset root, a folder of class subfolders, a CSV manifest or a built-in dataset name.
        classes: The model's class names; labels index this list.
        split: ``"train"``, ``"val"``, ``"test"``, ``"all"``, or ``"auto"``: the test split if there is one,
            else val, else everything.

    Returns:
        Samples sorted by label, then path.

    Raises:
        DataError: The path does not exist, the split is missing, no images are found, or a class
            (folder or CSV label) is not one of ``classes``.
    """
    if split not in ("auto", "all", *SPLIT_NAMES):
        raise DataError(f"split must be one of auto, all, train, val, test; got {split!r}")
    path = _resolve(ref)
    if path.is_file():
        by_split = _read_manifest(path, require_train=False, allow_outside_root=allow_outside_root)
    else:
        split_dirs = _split_dirs(path, _visible_subdirs(path))
        if split_dirs is None:
            if split not in ("auto", "all"):
                raise DataError(
                    f"{path}: holds class folders, not train/, val/, test/ folders, so it has no {split!r} split; "
                    "pass split='auto' to use all of it"
                )
            split_dirs = {"test": path}
        by_split = {name: _scan_class_folders(folder, require_images=False) for name, folder in split_dirs.items()}
    available = [name for name in SPLIT_NAMES if by_split.get(name)]
    if split == "auto":
        chosen = ["test"] if "test" in available else ["val"] if "val" in available else available
    elif split == "all":
        chosen = available
    elif split in available:
        chosen = [split]
    else:
        have = ", ".join(available) or "none"
        raise DataError(f"{path}: has no {split!r} split (splits found: {have}); pass split='auto' or another split")

    index = {name: i for i, name in enumerate(classes)}
    samples: list[Sample] = []
    for split_name in chosen:
        for name, paths in by_split[split_name].items():
            if name not in index:
                raise DataError(
                    f"{path}: class {name!r} ({paths[0]}) is not one of the model's classes: "
                    f"{_list_names(classes)}; remove or rename it"
                )
            samples.extend(Sample(p, index[name]) for p in paths)
    if not samples:
        raise DataError(f"{path}: no images found in the {'/'.join(chosen) or 'dataset'} split")
    return sorted(samples, key=lambda s: (s.label, s.path))


# A dataset read from disk, before classes are numbered: split -> class name -> paths.
_ByClass = dict[str, list[Path]]
_BySplit = dict[str, _ByClass]


def _resolve(ref: str | Path) -> Path:
    """Turn ``ref`` into an existing folder or CSV file, materialising a built-in dataset if it names one."""
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() != ".csv":
            raise DataError(
                f"{path}: is a file but not a CSV manifest; pass a folder with one subfolder per class, "
                "or a .csv file with a path,label header"
            )
        return path.absolute()
    # Imported here: builtin imports DataError from this module.
    from imgcls.data.builtin import BUILTIN_DATASETS, materialize

    if isinstance(ref, str) and ref in BUILTIN_DATASETS:
        return materialize(ref).absolute()
    raise DataError(
        f"{path}: no such file or folder, and not a built-in dataset ({', '.join(sorted(BUILTIN_DATASETS))}); "
        "pass a folder with one subfolder per class, a train/val/test folder, or a CSV manifest"
    )


def _scan_dataset_folder(root: Path) -> _BySplit:
    """Read a training dataset folder: either split folders or class folders."""
    subdirs = _visible_subdirs(root)
    split_dirs = _split_dirs(root, subdirs)
    if split_dirs is not None:
        if "train" not in split_dirs:
            found = ", ".join(f"{d.name}/" for d in split_dirs.values())
            raise DataError(f"{root}: has {found} but no train/ folder; training needs ROOT/train/<class>/<images>")
        by_split = {
            name: _scan_class_folders(folder, require_images=name == "train") for name, folder in split_dirs.items()
        }
    else:
        by_split = {"train": _scan_class_folders(root, require_images=True)}
    return by_split


def _split_dirs(root: Path, subdirs: list[Path]) -> dict[str, Path] | None:
    """Split name -> folder when every subfolder of ``root`` is a split folder; None for class folders.

    Requiring *every* subfolder to be a split keeps a class that happens to be called "train" (trains,
    next to "car" and "bus") a class.
    """
    if not subdirs or any(d.name.lower() not in _SPLIT_FOLDERS for d in subdirs):
        return None
    result: dict[str, Path] = {}
    for d in subdirs:
        name = _SPLIT_FOLDERS[d.name.lower()]
        if name in result:
            raise DataError(f"{root}: both {result[name].name}/ and {d.name}/ hold the {name} split; keep one of them")
        result[name] = d
    return result


def _scan_class_folders(folder: Path, *, require_images: bool) -> _ByClass:
    """Class name -> sorted image paths for each class subfolder of ``folder``."""
    class_dirs = _visible_subdirs(folder)
    loose = [p for p in _visible_files(folder) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not class_dirs:
        if loose:
            raise DataError(
                f"{folder}: holds {len(loose):,} images but no class subfolders; "
                f"put each class in its own subfolder, e.g. {folder / 'cat' / loose[0].name}"
            )
        others = _visible_files(folder)
        found = f"only {len(others):,} other files, e.g. {others[0].name}" if others else "nothing"
        raise DataError(
            f"{folder}: no images found ({found}); expected one subfolder per class "
            f"(e.g. {folder / 'cat' / '1.jpg'}) or train/, val/, test/ folders"
        )
    if loose:
        log.warning("%s: %d images outside any class folder are ignored, e.g. %s", folder, len(loose), loose[0].name)

    by_class: _ByClass = {}
    for class_dir in class_dirs:
        name = unicodedata.normalize("NFC", class_dir.name)
        paths, others = _images_under(class_dir)
        if paths:
            by_class.setdefault(name, []).extend(paths)
        elif require_images:
            hint = f" ({len(others):,} files with other extensions, e.g. {others[0].name})" if others else ""
            raise DataError(
                f"{class_dir}: class folder has no images{hint}; add images or remove the folder. "
                f"Image extensions: {' '.join(sorted(IMAGE_EXTENSIONS))}"
            )
    for paths in by_class.values():
        paths.sort()
    return by_class


def _images_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (recursively, hidden files and folders skipped) and the other files."""
    images: list[Path] = []
    others: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        # Pruning in place stops os.walk from entering .git, .ipynb_checkpoints, __MACOSX's ._ files...
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if filename.startswith("."):
                continue
            p = Path(dirpath, filename)
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return sorted(images), others


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def _read_manifest(csv_path: Path, *, require_train: bool = True, allow_outside_root: bool = False) -> _BySplit:
    """Read a ``path,label[,split]`` CSV; paths are relative to the CSV's folder."""
    base = csv_path.parent
    by_split: _BySplit = {}
    rows = 0
    missing: list[Path] = []  # only the count and the first one are reported
    for line, row in _manifest_rows(csv_path):
        image = Path(row["path"]).expanduser()
        image = image if image.is_absolute() else base / image
        check_inside_root(image, csv_path, line, allow_outside_root)
        split_name = _CSV_SPLITS.get(row.get("split", "").strip().lower() or "train")
        if split_name is None:
            raise DataError(
                f"{csv_path}: line {line}: split {row['split']!r} is not one of train, val, test; fix the value"
            )
        label = unicodedata.normalize("NFC", row["label"])
        by_split.setdefault(split_name, {}).setdefault(label, []).append(image)
        rows += 1
        if not image.exists():
            missing.append(image)
    if rows == 0:
        raise DataError(f"{csv_path}: the CSV manifest lists no images; add rows of path,label under the header")
    if len(missing) == rows:
        # The usual cause: paths written relative to the working directory instead of the CSV.
        raise DataError(
            f"{csv_path}: none of the {rows:,} image paths exist, e.g. {missing[0]}; "
            f"relative paths are read from the CSV's folder ({base})"
        )
    if require_train and "train" not in by_split:
        raise DataError(f"{csv_path}: no row has split 'train'; training needs training images")
    for per_class in by_split.values():
        for paths in per_class.values():
            paths.sort()
    return by_split


def _manifest_rows(csv_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each non-blank data row, after checking the header."""
    try:
        handle = csv_path.open(newline="", encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except OSError as err:
        raise DataError(f"{csv_path}: cannot read the CSV manifest ({err.strerror or err})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(_non_blank(reader), None)
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataError(f"{csv_path}: line 1: not a readable UTF-8 CSV file ({err})") from None
        if header is None:
            raise DataError(f"{csv_path}: the CSV manifest is empty; it needs a header line path,label[,split]")
        columns = [name.strip().lower() for name in header]
        for required in ("path", "label"):
            if required not in columns:
                raise DataError(
                    f"{csv_path}: line {reader.line_num}: missing column {required!r} in the header "
                    f"({','.join(header)}); the header must be path,label or path,label,split"
                )
        try:
            for row in _non_blank(reader):
                line = reader.line_num
                values = dict(zip(columns, (cell.strip() for cell in row), strict=False))  # short rows: missing cells
                for required in ("path", "label"):
                    if not values.get(required):
                        raise DataError(
                            f"{csv_path}: line {line}: empty {required!r}; every row needs a path and a label"
                        )
                yield line, values
        except (csv.Error, UnicodeDecodeError) as err:
            raise DataError(f"{csv_path}: line {reader.line_num}: cannot parse the CSV ({err})") from None


def _non_blank(rows: Iterable[list[str]]) -> Iterator[list[str]]:
    return (row for row in rows if any(cell.strip() for cell in row))


def _stratified_split(
    train: list[Sample], classes: list[str], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Move ``val_fraction`` of each class from train to val; at least one, and never a class's last image."""
    by_label: dict[int, list[Sample]] = {}
    for sample in train:
        by_label.setdefault(sample.label, []).append(sample)
    new_train: list[Sample] = []
    val: list[Sample] = []
    for label, samples in sorted(by_label.items()):
        samples = sorted(samples, key=lambda s: s.path)
        n_val = min(len(samples) - 1, max(1, math.floor(len(samples) * val_fraction + 0.5)))
        # Seeding per class by name: adding a class or images of one class leaves the others' split alone.
        rng = random.Random(f"{seed}:{classes[label]}")
        picked = set(rng.sample(range(len(samples)), n_val)) if n_val > 0 else set()
        for i, sample in enumerate(samples):
            (val if i in picked else new_train).append(sample)
    return new_train, val


def _list_names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f" ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")
