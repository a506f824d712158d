"""Each benchmark script runs end to end in a tiny mode and writes its JSON, so the scripts never rot.

Not timings: the numbers come from the full runs (BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = "test_resnet"  # a timm test model: ~50k parameters, 160 px

pytestmark = pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs scikit-image (bench extra)")


def run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "IMGCLS_BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cores"] >= 1
    return result


def test_predict_script(tmp_path: Path) -> None:
    skip = [] if importlib.util.find_spec("transformers") else ["transformers"]
    result = run(
        "predict", tmp_path, "--models", TINY, "--images", "8", "--backends", "torch", "auto",
        "--skip", "cli", *skip,
    )  # fmt: skip
    row = result["rows"][0]
    assert row["images"] == 8
    assert row["imgcls:auto"]["img_s"] > 0 and 0 <= row["imgcls:auto"]["top1_agree"] <= 1
    assert row["ceiling"]["img_s"] > 0
    cost = row["per_image"]
    assert cost["decode_ms"] > 0 and cost["resize_crop_ms"] > 0 and cost["model_core_ms"] > 0
    # The bound divides the cores by the summed per-image costs, so it can never exceed the model-only ceiling.
    assert 0 < cost["bound_img_s"] <= row["ceiling"]["img_s"] * 1.001
    assert row["imgcls:auto"]["of_bound"] == pytest.approx(row["imgcls:auto"]["img_s"] / cost["bound_img_s"])


def test_startup_script(tmp_path: Path) -> None:
    rows = run("startup", tmp_path, "--model", TINY, "--repeats", "1")["rows"]
    assert {r["command"] for r in rows} >= {"imgcls --help", "imgcls predict (1 image, auto)"}


def test_serve_script(tmp_path: Path) -> None:
    result = run("serve", tmp_path, "--model", TINY, "--clients", "1", "4", "--requests", "8", "--images", "8")
    assert [r["clients"] for r in result["rows"]] == [1, 4]
    assert all(r["errors"] == 0 for r in result["rows"])


def test_soak_script(tmp_path: Path) -> None:
    result = run(
        "soak", tmp_path, "--model", TINY, "--seconds", "6", "--warmup", "2", "--clients", "4", "--images", "4",
        "--body-timeout", "1", "--seed", "3",
    )["result"]  # fmt: skip
    assert result["passed"] and all(result["checks"].values())
    assert result["client_5xx"] == 0 and result["access_log_5xx"] == 0 and result["wrong_answers"] == 0
    assert result["good_requests"] > 0 and result["healthz_after"]["status"] == 200
    assert result["rss_mb"]["peak"] >= result["rss_mb"]["idle"] > 0


def test_train_script(tmp_path: Path) -> None:
    rows = run(
        "train", tmp_path, "--models", TINY, "--images", "16", "--size", "32", "--batch-size", "8", "--repeats", "1"
    )["rows"]
    assert rows[0]["model"] == TINY and rows[0]["timm_loop_img_s"] > 0 and rows[0]["imgcls_img_s"] > 0


def test_train_script_digits_row(tmp_path: Path) -> None:
    # the quick-start row alone, on all ~1,300 training digits: large batches keep it to a few dozen steps
    rows = run(
        "train", tmp_path, "--models", "--digits", "--digits-model", TINY, "--batch-size", "128", "--repeats", "1"
    )["rows"]
    assert [r["model"] for r in rows] == [f"digits quick start ({TINY}, 32 px)"]
    assert rows[0]["timm_loop_img_s"] > 0 and rows[0]["imgcls_img_s"] > 0


def test_teacher_student_script(tmp_path: Path) -> None:
    # one seed, one epoch per arm: only that every arm trains, evaluates on the test split and is reported
    result = run("teacher_student", tmp_path, "--seeds", "1", "--epochs", "1", "--teacher-epochs", "1")
    assert set(result["distill"]) == {"alone", "distilled"}
    assert {"labels only", "labels only, 2x epochs", "self-training", "teacher labels"} <= set(result["pseudo"])
    assert {"labels only + RandAugment", "noisy student"} <= set(result["pseudo"])
    assert all(0 <= row["mean"] <= 1 for row in result["distill"].values())
