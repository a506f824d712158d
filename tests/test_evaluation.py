"""`imgcls evaluate` end to end: the report files, calibration stored in the package, compare, bad labels."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from imgcls import Classifier, evaluate, train
from imgcls.compare import compare, load_evaluation, to_markdown
from imgcls.data.sources import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from imgfactory import write_class_images

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    write_class_images(data / "train", per_class=10, seed=5)
    write_class_images(data / "val", per_class=4, seed=6)
    write_class_images(data / "test", per_class=5, seed=7)
    result = train(
        data=str(data),
        model="lenet5",
        img_size=32,
        epochs=2,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=0.0,
        num_workers=0,
        progress=False,
        runs_dir=str(root / "runs"),
        name="lenet",
        hflip=0.0,
        crop_scale=0.6,
    )
    return result.run_dir, data


def test_training_writes_the_full_report(trained: tuple[Path, Path]) -> None:
    run_dir, _ = trained
    eval_dir = run_dir / "eval"
    for name in (
        "report.html",
        "metrics.json",
        "predictions.csv",
        "confusion_matrix.png",
        "pr_curves.png",
        "roc_curves.png",
        "reliability.png",
    ):
        assert (eval_dir / name).is_file(), name
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["split"] == "test" and metrics["num_samples"] == 15
    with (eval_dir / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15
    assert list(rows[0]) == ["path", "true_label", "predicted_label", "score", "bird (small)", "cat", "向日葵"]
    accuracy = sum(r["true_label"] == r["predicted_label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["top1"], abs=1e-9)
    assert all(abs(sum(float(r[c]) for c in ("bird (small)", "cat", "向日葵")) - 1) < 1e-4 for r in rows)


def test_calibrate_stores_a_temperature_that_later_predictions_use(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, data = trained
    package = tmp_path / "model"
    shutil.copytree(run_dir / "model", package)
    image = next((data / "test" / "cat").glob("*.png"))
    before = Classifier.load(package)(image)
    metrics = evaluate(package, data, out=tmp_path / "eval", calibrate_temperature=True, progress=False, num_workers=0)
    temperature = metrics["calibration"]["temperature"]
    assert temperature is not None and temperature > 0 and temperature != 1.0
    assert "ece_before" in metrics["calibration"]
    config = json.loads((package / "config.json").read_text(encoding="utf-8"))
    assert config["imgcls"]["temperature"] == temperature
    after = Classifier.load(package)(image)
    assert after[0]["label"] == before[0]["label"]  # calibration never changes the ranking
    assert after[0]["score"] != pytest.approx(before[0]["score"], abs=1e-6)
    assert "temperature" in (package / "README.md").read_text(encoding="utf-8")


def test_unknown_labels_are_a_clear_error(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from imgfactory import write_class_images

    run_dir, _ = trained
    other = tmp_path / "other"
    write_class_images(other, per_class=2, seed=9)
    (other / "cat").rename(other / "dog")
    with pytest.raises(DataError, match="dog"):
        evaluate(run_dir / "model", other, progress=False, num_workers=0)


def test_a_class_absent_from_the_data_is_reported(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, data = trained
    subset = tmp_path / "subset"
    shutil.copytree(data / "test", subset)
    shutil.rmtree(subset / "cat")
    metrics = evaluate(run_dir / "model", subset, out=tmp_path / "eval", progress=False, num_workers=0)
    assert metrics["absent_classes"] == ["cat"]
    cat = next(r for r in metrics["per_class"] if r["label"] == "cat")
    assert cat["support"] == 0 and cat["ap"] is None and cat["auc"] is None
    assert "cat" in (tmp_path / "eval" / "report.html").read_text(encoding="utf-8")


def test_compare_lines_up_two_evaluations(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, data = trained
    evaluate(
        run_dir / "model", data, split="val", out=tmp_path / "val_eval", progress=False, num_workers=0, report=False
    )
    result = compare([load_evaluation(run_dir), load_evaluation(tmp_path / "val_eval" / "metrics.json")])
    assert [e.name for e in result.evaluations] == ["lenet", "val_eval"]
    top1 = dict(result.summary)["top-1"]
    assert top1[0] == json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))["top1"]
    assert {label for label, _ in result.per_class} == {"bird (small)", "cat", "向日葵"}
    markdown = to_markdown(result)
    assert "| top-1 |" in markdown and "向日葵" in markdown
    with pytest.raises(DataError, match="no evaluation found"):
        load_evaluation(tmp_path / "nothing")
