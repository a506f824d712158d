"""`imgcls check --near-duplicates`: a re-encoded copy across splits (leakage) and an edited copy within a split are
found; byte-identical copies stay in the exact-duplicate report only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from clipfactory import write_tiny_clip


def _distinct_image(path: Path, rng: np.random.Generator) -> Path:
    # A random 4x4 colour layout blown up to 48 px: every image has its own content, not just its own noise.
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((48, 48), Image.Resampling.BICUBIC).save(path)
    return path


def test_check_finds_near_duplicates_across_and_within_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    train = [_distinct_image(root / "train" / ("a" if i < 4 else "b") / f"{i}.png", rng) for i in range(8)]
    _distinct_image(root / "val" / "a" / "8.png", rng)
    _distinct_image(root / "val" / "b" / "9.png", rng)
    # Leakage hashing misses: train/a/0 resized and re-encoded as JPEG in val.
    Image.open(train[0]).resize((40, 40), Image.Resampling.BILINEAR).save(root / "val" / "a" / "copy.jpg", quality=85)
    # Within train: train/a/1 slightly brightened, filed under another class.
    brighter = np.clip(np.asarray(Image.open(train[1])).astype(int) + 6, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(root / "train" / "b" / "bright.png")
    # Byte-identical: the exact check reports it; the near-duplicate list must not repeat it.
    shutil.copy(train[5], root / "val" / "b" / "same.png")

    clip = write_tiny_clip(tmp_path / "tiny-clip")
    out = tmp_path / "check.json"
    cmd = [sys.executable, "-m", "imgcls.cli", "check", str(root), "--out", str(out), "--no-progress"]
    # The tiny random CLIP puts distinct images up to 0.995 apart and these copies above 0.9995.
    done = subprocess.run(
        [*cmd, "--near-duplicates", "--embed-model", str(clip), "--similarity", "0.999"],
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["duplicates"] == [["train/b/5.png", "val/b/same.png"]]
    pairs = {tuple(p["paths"]): p for p in report["near_duplicates"]}
    assert set(pairs) == {("train/a/0.png", "val/a/copy.jpg"), ("train/a/1.png", "train/b/bright.png")}
    assert pairs[("train/a/0.png", "val/a/copy.jpg")]["splits"] == ["train", "val"]
    assert all(0.999 <= p["similarity"] <= 1.0 for p in pairs.values())
    assert [p["paths"] for p in report["cross_split_near_duplicates"]] == [["train/a/0.png", "val/a/copy.jpg"]]
    assert report["near_duplicate_check"]["similarity"] == 0.999
    assert report["near_duplicate_check"]["architecture"] == "imgcls_clip"
    printed = " ".join(done.stdout.split())  # the console wraps long lines
    assert "2 near-duplicate pairs" in printed and "1 near-duplicate pairs span two splits" in printed
    assert "train/a/0.png [train] ~ val/a/copy.jpg [val]" in printed

    # Without the flag the report has no near-duplicate section, and the model option alone is refused.
    plain = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    assert plain.returncode == 0 and json.loads(out.read_text(encoding="utf-8"))["near_duplicate_check"] is None
    refused = subprocess.run([*cmd, "--embed-model", str(clip)], capture_output=True, text=True)
    assert refused.returncode == 2 and "--embed-model is for --near-duplicates" in refused.stderr
