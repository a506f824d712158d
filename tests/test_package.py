"""The model package is timm's format: plain timm loads it with identical logits; broken packages are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from imgcls import Classifier, train
from imgcls.package import PackageError, load_package

PLAIN_TIMM = """
import sys, timm, torch
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
print(type(model).__name__, "imgcls" in sys.modules)
"""


@pytest.fixture(scope="module")
def timm_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imgfactory import write_class_images

    root = tmp_path_factory.mktemp("pkg")
    write_class_images(root / "data" / "train", per_class=8, seed=3)
    result = train(
        data=str(root / "data"),
        model="test_resnet",
        img_size=32,
        epochs=1,
        batch_size=8,
        num_workers=0,
        progress=False,
        runs_dir=str(root / "runs"),
        val_fraction=0.25,
        hflip=0.0,
    )
    return result.package_dir


def test_plain_timm_loads_the_package_with_identical_logits(timm_package: Path, tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    # A fresh interpreter that never imports imgcls: only timm reads the folder.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_TIMM, str(timm_package), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout.split() == ["ResNet", "False"]
    plain = torch.load(tmp_path / "y.pt", weights_only=True)
    ours = load_package(timm_package).model
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain, rtol=0, atol=0)


def test_package_carries_labels_and_preprocessing(timm_package: Path) -> None:
    config = json.loads((timm_package / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"] == "test_resnet"
    assert config["label_names"] == ["bird (small)", "cat", "向日葵"]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["imgcls"]["task"] == "multiclass"
    clf = Classifier.load(timm_package)
    assert clf.data_config["input_size"] == (3, 32, 32)
    assert clf.labels == config["label_names"]


def test_broken_packages_are_refused_with_a_clear_error(timm_package: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not a model package folder"):
        load_package(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((timm_package / "model.safetensors").read_bytes())
    with pytest.raises(PackageError, match="no config.json"):
        load_package(broken)
    config = json.loads((timm_package / "config.json").read_text(encoding="utf-8"))
    config["label_names"] = config["label_names"][:2]
    (broken / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(PackageError, match="label_names"):
        load_package(broken)
    config["label_names"] = ["a", "b", "c"]
    (broken / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PackageError, match="weights do not load"):
        load_package(broken)


def test_classifier_accepts_paths_pil_images_and_arrays(timm_package: Path, tmp_path: Path) -> None:
    import numpy as np

    clf = Classifier.load(timm_package)
    pixels = np.full((20, 30, 3), (40, 200, 40), dtype=np.uint8)
    path = tmp_path / "green.png"
    Image.fromarray(pixels).save(path)
    from_path = clf(path)
    assert len(from_path) == 3
    assert [p["label"] for p in from_path] == [p["label"] for p in clf(Image.open(path))]
    assert clf(pixels)[0]["label"] == from_path[0]["label"]
    assert clf(pixels[:, :, 0])[0]["label"] in clf.labels  # grayscale arrays work too
    batch = clf([path, Image.open(path), pixels], top_k=2)
    assert len(batch) == 3 and all(len(top) == 2 for top in batch)
    assert batch[0][0]["score"] == pytest.approx(from_path[0]["score"], abs=1e-6)


@pytest.mark.parametrize(
    ("arch", "size", "crop_pct", "interpolation"),
    [("resnet10t", 32, 1.0, None), ("lenet5", 32, None, None), ("vit_tiny_patch16_224", None, 0.9, "bicubic")],
)
def test_data_config_without_timm_equals_timms(
    tmp_path: Path, arch: str, size: int | None, crop_pct: float | None, interpolation: str | None
) -> None:
    # The package's preprocessing is read from config.json alone (so ONNX predictions skip torch and timm); it
    # must be what timm resolves from the model it builds from the same package.
    from timm.data import resolve_data_config as timm_resolve

    from imgcls.models import create_model, data_config
    from imgcls.package import load_package, save_package

    model = create_model(arch, 3)
    kwargs = {"interpolation": interpolation} if interpolation else {}
    cfg = data_config(model, input_size=size, crop_pct=crop_pct, **kwargs)
    path = save_package(model.eval(), tmp_path / "pkg", labels=["a", "b", "c"], data_config=cfg)
    package = load_package(path, lazy=True)
    assert package._model is None  # nothing built yet
    ours = package.data_config
    theirs = timm_resolve(model=package.model)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in theirs.items()} == ours
