"""The `imgcls` command as a user runs it: help for every verb, the whole path, clear errors for bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VERBS = [
    "train",
    "evaluate",
    "compare",
    "predict",
    "export",
    "serve",
    "demo",
    "push",
    "pull",
    "check",
    "models",
    "data",
]
IMGCLS = [sys.executable, "-m", "imgcls"]


def run(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    out = subprocess.run([*IMGCLS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"imgcls {' '.join(args)} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def test_help_of_every_verb() -> None:
    top = run("--help")
    for verb in VERBS:
        assert verb in top.stdout
        out = run(verb, "--help")
        assert out.stdout.startswith(f"usage: imgcls {verb}"), verb
    assert "--freeze-epochs" in run("train", "--help").stdout
    assert run("--version").stdout.startswith("imgcls ")


def test_train_evaluate_predict_from_the_command_line(image_folder: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # Real datasets hold broken files: they are reported and skipped, never fatal.
    (image_folder / "train" / "cat" / "zero.png").write_bytes(b"")
    (image_folder / "train" / "cat" / "saved_page.jpg").write_text("<html><body>Not found</body></html>")
    check = run("check", str(image_folder), "--out", str(tmp_path / "check.json"), "--no-progress")
    assert "2 of" in check.stdout
    report = json.loads((tmp_path / "check.json").read_text(encoding="utf-8"))
    assert sorted(Path(b["path"]).name for b in report["bad_files"]) == ["saved_page.jpg", "zero.png"]
    out = run(
        "train",
        str(image_folder),
        "--model",
        "lenet5",
        "--img-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--warmup-epochs",
        "0",
        "--hflip",
        "0",
        "--crop-scale",
        "0.6",
        "--val-fraction",
        "0.25",
        "--num-workers",
        "0",
        "--runs-dir",
        str(runs),
        "--name",
        "cli",
        "--no-progress",
    )
    package = runs / "cli" / "model"
    assert "model package: " + str(package) in out.stderr
    assert (package / "model.safetensors").is_file()
    assert "2 of" in out.stderr  # the one summary line about skipped files
    report = json.loads((runs / "cli" / "data_check.json").read_text(encoding="utf-8"))
    assert len(report["bad_files"]) == 2

    ev = run("evaluate", str(package), str(image_folder), "--num-workers", "0", "--no-progress")
    metrics = json.loads((runs / "cli" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_samples"] == 12 and metrics["top1"] >= 0.9
    assert "top-1" in ev.stdout and "向日葵" in ev.stdout

    # A folder with one broken file among good ones: the good ones still get predictions.
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((image_folder / "test" / "cat").glob("*.png"))[:2]:
        (photos / src.name).write_bytes(src.read_bytes())
    (photos / "broken.jpg").write_text("<!DOCTYPE html><html>403</html>")
    pred = run("predict", str(package), str(photos), "--format", "jsonl", "--top-k", "2", check=False)
    assert pred.returncode == 1
    records = [json.loads(line) for line in pred.stdout.splitlines()]
    assert len(records) == 3
    good = [r for r in records if "predictions" in r]
    assert len(good) == 2 and all(r["predictions"][0]["label"] == "cat" for r in good)
    assert all(len(r["predictions"]) == 2 for r in good)
    bad = [r for r in records if "error" in r]
    assert bad[0]["path"].endswith("broken.jpg") and "not an image" in bad[0]["error"]
    assert "broken.jpg" in pred.stderr

    pred_csv = run("predict", str(package), str(photos / "*.png"), "--format", "csv", "--top-k", "1")
    rows = list(csv.DictReader(io.StringIO(pred_csv.stdout)))
    assert [r["label_1"] for r in rows] == ["cat", "cat"]
    table = run("predict", str(package), str(photos / "*.png"))
    assert "cat" in table.stdout
    # Piped into `head`, the command stops quietly instead of a BrokenPipeError traceback.
    piped = subprocess.run(
        f"{sys.executable} -m imgcls predict {package} {photos}/*.png --format csv | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert piped.stdout == "path,label" and "Traceback" not in piped.stderr

    # --resume with a higher epoch count continues the same run folder.
    run("train", "--resume", str(runs / "cli"), "--epochs", "3", "--no-progress")
    assert "epochs: 3" in (runs / "cli" / "config.yaml").read_text(encoding="utf-8")
    # --config re-runs a run's options; flags typed after it override them.
    run("train", "--config", str(runs / "cli" / "config.yaml"), "--epochs", "1", "--name", "again", "--no-progress")
    again = (runs / "again" / "config.yaml").read_text(encoding="utf-8")
    assert "epochs: 1" in again and "model: lenet5" in again and "lr: 0.003" in again


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "no such file or folder"),
        ("empty", "no images found"),
        ("one_class", "at least two classes"),
    ],
)
def test_bad_data_is_a_clear_error_before_training(tmp_path: Path, layout: str, message: str) -> None:
    data = tmp_path / "data"
    if layout == "empty":
        data.mkdir()
    elif layout == "one_class":
        from imgfactory import write_class_images

        write_class_images(data, per_class=3, seed=0)
        for folder in ["bird (small)", "向日葵"]:
            for f in (data / folder).iterdir():
                f.unlink()
            (data / folder).rmdir()
    out = run("train", str(data), "--model", "lenet5", "--runs-dir", str(tmp_path / "runs"), check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("imgcls train: error: "), out.stderr
    assert message in out.stderr.lower()
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_evaluate_names_a_missing_package(image_folder: Path, tmp_path: Path) -> None:
    out = run("evaluate", str(tmp_path / "nope"), str(image_folder), check=False)
    assert out.returncode == 2 and "not a model package" in out.stderr


def test_models_lists_timm_and_our_own() -> None:
    names = run("models", "*net*").stdout.split()
    assert "lenet5" in names and "alexnet" in names and "resnet18" in names
    assert "vit_tiny_patch16_224" in run("models", "vit_tiny*").stdout.split()
    assert run("models", "no_such_model_*", check=False).returncode == 1
