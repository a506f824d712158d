"""Multi-label data (both CSV layouts, empty label sets), the label check, and a whole training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls import evaluate, train
from imgcls.data.builtin import materialize
from imgcls.data.multilabel import check_multilabel, discover_multilabel
from imgcls.data.sources import DataError


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def test_both_manifest_layouts_give_the_same_samples(tmp_path: Path) -> None:
    rows = [("a.png", "cat;dog"), ("b.png", ""), ("c.png", "dog"), ("d.png", "向日葵;cat"), ("e.png", "cat")]
    for i, (name, _) in enumerate(rows):
        _image(tmp_path / "img" / name, i)
    with (tmp_path / "labels.csv").open("w", encoding="utf-8") as f:
        f.write("path,labels\n" + "".join(f"img/{n},{labs}\n" for n, labs in rows))
    classes = ["cat", "dog", "向日葵"]
    with (tmp_path / "wide.csv").open("w", encoding="utf-8") as f:
        f.write("path," + ",".join(classes) + "\n")
        for n, labs in rows:
            f.write(f"img/{n}," + ",".join("1" if c in labs.split(";") else "0" for c in classes) + "\n")
    narrow = discover_multilabel(tmp_path / "labels.csv", val_fraction=0)
    wide = discover_multilabel(tmp_path / "wide.csv", val_fraction=0)
    assert narrow.classes == wide.classes == classes
    assert narrow.train == wide.train
    by_name = {s.path.name: s.label for s in narrow.train}
    assert by_name["b.png"] == () and by_name["d.png"] == (0, 2)
    # A folder holding labels.csv reads the same.
    assert discover_multilabel(tmp_path, val_fraction=0).train == narrow.train


def test_the_check_reports_label_statistics_and_broken_files(tmp_path: Path) -> None:
    lines = ["path,labels,split"]
    for i in range(12):
        _image(tmp_path / f"{i}.png", i)
        lines.append(f"{i}.png,{'cat;dog' if i % 3 == 0 else 'cat'}{';bird' if i == 5 else ''},train")
    (tmp_path / "broken.png").write_bytes(b"")
    lines.append("broken.png,dog,train")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    splits, report = check_multilabel(discover_multilabel(tmp_path, val_fraction=0), progress=False)
    assert [b["path"].endswith("broken.png") for b in report["bad_files"]] == [True]
    assert report["label_counts"]["train"] == {"bird": 1, "cat": 12, "dog": 4}
    assert report["cooccurrence"][0] == {"labels": ["cat", "dog"], "count": 4}
    assert report["rare_labels"] == ["bird", "dog"]
    assert len(splits.train) == 12


def test_bad_manifests_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,label\nx.png,cat\n", encoding="utf-8")
    with pytest.raises(DataError, match="labels"):
        discover_multilabel(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,cat,dog\nx.png,1,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2.*0 or 1"):
        discover_multilabel(tmp_path / "b.csv")


def test_multilabel_training_tunes_thresholds_and_evaluates(tmp_path: Path) -> None:
    data = materialize("digit_pairs", tmp_path / "digit_pairs")
    with (data / "labels.csv").open(encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 2000
    result = train(
        data=str(data),
        task="multilabel",
        model="lenet5",
        img_size=32,
        epochs=2,
        batch_size=64,
        lr=3e-3,
        warmup_epochs=0.0,
        num_workers=0,
        progress=False,
        runs_dir=str(tmp_path / "runs"),
        hflip=0.0,
        crop_scale=0.9,
        crop_pct=1.0,
        label_smoothing=0.0,
        class_weights="auto",
    )
    config = json.loads((result.package_dir / "config.json").read_text(encoding="utf-8"))
    assert config["imgcls"]["task"] == "multilabel"
    thresholds = config["imgcls"]["thresholds"]
    assert len(thresholds) == 10 and all(0 < t < 1 for t in thresholds)
    metrics = json.loads((result.run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "multilabel" and metrics["thresholds"] == pytest.approx(thresholds)
    assert metrics["map"]["macro"] > 0.3  # two epochs of LeNet: far above chance (~0.17), far from done
    check = json.loads((result.run_dir / "data_check.json").read_text(encoding="utf-8"))
    assert check["task"] == "multilabel" and len(check["label_counts"]["train"]) == 10
    with (result.run_dir / "eval" / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["num_samples"] and rows[0]["true_labels"]
    page = (result.run_dir / "eval" / "report.html").read_text(encoding="utf-8")
    assert "Subset accuracy" in page and "data:image/png;base64," in page
    assert (result.run_dir / "eval" / "pr_curves.png").stat().st_size > 10_000
    from imgcls import Classifier

    clf = Classifier.load(result.package_dir, backend="torch")
    image = data / rows[0]["path"] if not Path(rows[0]["path"]).is_absolute() else Path(rows[0]["path"])
    top = clf(image, top_k=3)
    positives = [t for t in top if t["positive"]]
    # Every label at or above its threshold is returned and marked; the rest fill up to top_k for inspection.
    assert all(t["score"] >= thresholds[clf.labels.index(t["label"])] for t in positives)
    assert all(t["score"] < thresholds[clf.labels.index(t["label"])] for t in top if not t["positive"])
    assert len(top) == max(3, len(positives))
    from PIL import Image

    assert clf.positive_labels([Image.open(image).convert("RGB")]) == [[t["label"] for t in positives]]
    again = evaluate(result.package_dir, data, progress=False, num_workers=0, out=tmp_path / "again")
    assert again["map"]["macro"] == pytest.approx(metrics["map"]["macro"], abs=1e-6)
