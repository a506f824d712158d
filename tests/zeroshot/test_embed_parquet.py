"""`imgcls embed`: pre-logits features streamed to Parquet, equal to open_clip's image embeddings for a CLIP model
and to the package model's own pre-logits for a package; unreadable files are listed, not fatal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clipfactory import write_tiny_clip
from imgcls.embeddings import embed_files, load_backbone
from imgcls.models import WeightsError, create_model, data_config
from imgcls.package import save_package


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(5)
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i in range(5):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (36 + 5 * i, 44, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_clip_embeddings_equal_open_clip(tmp_path: Path, photos: list[Path]) -> None:
    clip = write_tiny_clip(tmp_path / "tiny-clip")
    out = tmp_path / "emb.parquet"
    result = embed_files(load_backbone(f"open_clip:{clip}"), photos, out, batch_size=2, num_workers=0, progress=False)
    assert (result.count, result.dim, result.skipped) == (5, 32, [])
    table = pq.read_table(out)
    assert table.column("path").to_pylist() == [str(p) for p in photos]
    assert table.schema.metadata[b"imgcls.architecture"] == b"imgcls_clip"
    got = torch.tensor(table.column("embedding").to_pylist())

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip}")
    with torch.no_grad():
        expected = model.eval().encode_image(
            torch.stack([preprocess(Image.open(p).convert("RGB")) for p in photos]), normalize=True
        )
    assert torch.allclose(got, expected, atol=1e-5)


def test_cli_embeds_a_package_and_reports_bad_files(tmp_path: Path, photos: list[Path]) -> None:
    torch.manual_seed(0)
    model = create_model("lenet5", 3)
    package = save_package(model.eval(), tmp_path / "pkg", labels=["a", "b", "c"], data_config=data_config(model))
    (photos[0].parent / "broken.png").write_bytes(b"<html>not an image</html>")
    out = tmp_path / "emb.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "imgcls.cli", "embed", str(package), str(photos[0].parent), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr  # like predict: some files failed
    assert "broken.png" in done.stderr and "5 embedding(s) of size 84" in done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 5 and "broken.png" not in " ".join(table.column("path").to_pylist())

    from imgcls import Classifier

    clf = Classifier.load(package, backend="torch")
    batch = torch.from_numpy(clf.preprocess([Image.open(p).convert("RGB") for p in photos]))
    with torch.no_grad():
        expected = clf.model.forward_head(clf.model.forward_features(batch), pre_logits=True)
    assert torch.allclose(torch.tensor(table.column("embedding").to_pylist()), expected, atol=1e-5)


def test_timm_name_offline_is_a_clear_error() -> None:
    with pytest.raises(WeightsError, match="--weights"):
        load_backbone("resnet18")
