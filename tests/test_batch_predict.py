"""Batch prediction to Parquet: a killed run resumes with no image twice and none missing; work splits by share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imgcls import Classifier
from imgcls.batch_predict import predict_to_parquet
from imgcls.models import create_model, data_config
from imgcls.package import save_package

LABELS = ["bird (small)", "cat", "向日葵"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LeNet-5 package (random weights: these tests check bookkeeping, not accuracy)."""
    model = create_model("lenet5", len(LABELS), img_size=32)
    return save_package(
        model.eval(),
        tmp_path_factory.mktemp("pkg") / "model",
        labels=LABELS,
        data_config=data_config(model, input_size=32),
    )


def write_images(folder: Path, n: int, *, broken: int = 0) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    for i in range(broken):
        path = folder / f"broken_{i}.jpg"
        path.write_text("<html>not found</html>")
        paths.append(path)
    return sorted(paths)


def read_rows(out: Path) -> list[dict]:
    return pq.read_table(out).to_pylist()


def test_predictions_match_the_classifier_and_bad_files_get_an_error_row(package: Path, tmp_path: Path) -> None:
    files = write_images(tmp_path / "imgs", 10, broken=1)
    clf = Classifier.load(package, backend="torch")
    result = predict_to_parquet(clf, [tmp_path / "imgs"], tmp_path / "p.parquet", top_k=2, batch_size=4, part_size=3)
    rows = {r["path"]: r for r in read_rows(tmp_path / "p.parquet")}
    assert sorted(rows) == [str(f) for f in files]
    assert result.predicted == 11 and result.failed == 1 and result.parts_written == 4
    broken = rows[str(tmp_path / "imgs" / "broken_0.jpg")]
    assert "HTML page" in broken["error"] and broken["label"] is None
    direct = clf(str(files[-1]), top_k=2)
    row = rows[str(files[-1])]
    assert row["top_labels"] == [d["label"] for d in direct]
    assert row["top_scores"] == pytest.approx([d["score"] for d in direct], abs=1e-6)
    assert row["label"] == direct[0]["label"] and row["error"] is None
    # Run again: everything is done, nothing is predicted twice.
    again = predict_to_parquet(clf, [tmp_path / "imgs"], tmp_path / "p.parquet", part_size=3)
    assert again.predicted == 0 and again.done_before == 11
    assert len(read_rows(tmp_path / "p.parquet")) == 11


def test_shares_split_the_work_disjointly(package: Path, tmp_path: Path) -> None:
    files = write_images(tmp_path / "imgs", 13)
    clf = Classifier.load(package, backend="torch")
    out = tmp_path / "p.parquet"
    counts = [
        predict_to_parquet(clf, [tmp_path / "imgs"], out, num_shards=3, shard_index=i, workers=0).predicted
        for i in range(3)
    ]
    assert counts == [5, 4, 4]
    paths = [r["path"] for r in read_rows(out)]
    assert sorted(paths) == [str(f) for f in files]
    assert {p.name[:11] for p in out.iterdir()} == {"part-00000-", "part-00001-", "part-00002-"}


def test_a_share_index_out_of_range_is_refused(package: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", str(package), str(tmp_path), "--out", str(tmp_path / "p.parquet"),
         "--num-shards", "2", "--shard-index", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--shard-index 2 must be in 0..1" in out.stderr


def test_sigkill_then_resume_predicts_every_image_exactly_once(package: Path, tmp_path: Path) -> None:
    files = write_images(tmp_path / "imgs", 600)
    out = tmp_path / "preds.parquet"
    cmd = [sys.executable, "-m", "imgcls", "predict", str(package), str(tmp_path / "imgs"), "--out", str(out),
           "--batch-size", "2", "--part-size", "2", "--workers", "0", "--backend", "torch"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Kill it for real (no clean-up can run) once some, but not all, parts are on disk.
    while time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 5:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    first = read_rows(out)
    assert 0 < len(first) < len(files), "the first run must have been cut off midway"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(first):,} were already done" in resumed.stderr
    paths = [r["path"] for r in read_rows(out)]
    assert len(paths) == len(set(paths)), "an image was predicted twice"
    assert sorted(paths) == [str(f) for f in files], "an image is missing"
    assert not list(out.glob(".*.tmp"))
