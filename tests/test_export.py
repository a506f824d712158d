"""ONNX/INT8 export checked against PyTorch, and the torch/onnx/auto backends of Classifier (real ONNX Runtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgcls import Classifier
from imgcls.backends import BackendError, OnnxBackend, TorchBackend
from imgcls.export import export_onnx
from imgcls.models import create_model, data_config
from imgcls.package import save_package

LABELS = ["bird (small)", "cat", "向日葵"]


@pytest.fixture
def package(tmp_path: Path) -> tuple[Path, Path]:
    from imgfactory import write_class_images

    data = tmp_path / "data"
    write_class_images(data, per_class=6, seed=11)
    torch.manual_seed(0)
    model = create_model("resnet10t", len(LABELS))
    cfg = data_config(model, input_size=32, crop_pct=1.0)
    path = save_package(
        model.eval(), tmp_path / "model", labels=LABELS, data_config=cfg, info={"training": {"data": str(data)}}
    )
    return path, data


def test_onnx_export_matches_pytorch_and_is_recorded(package: tuple[Path, Path]) -> None:
    path, data = package
    result = export_onnx(path)
    assert (path / "model.onnx").is_file() and not list(path.glob(".export-*"))
    assert result.check["top1_agreement"] == 1.0 and result.check["max_abs_logit_diff"] < 1e-4
    assert result.check["images_are_noise"] is False  # it checked on the training images
    stored = json.loads((path / "config.json").read_text(encoding="utf-8"))["imgcls"]["exports"]["onnx"]
    assert stored == result.check

    images = sorted(data.rglob("*.png"))
    by_torch = Classifier.load(path, backend="torch")
    by_onnx = Classifier.load(path, backend="onnx")
    assert isinstance(by_torch.backend, TorchBackend) and isinstance(by_onnx.backend, OnnxBackend)
    a, b = by_torch(images), by_onnx(images)
    for x, y in zip(a, b, strict=True):
        assert [t["label"] for t in x] == [t["label"] for t in y]
        assert [t["score"] for t in x] == pytest.approx([t["score"] for t in y], abs=1e-4)
    auto = Classifier.load(path, backend="auto")
    assert type(auto.backend) in (TorchBackend, OnnxBackend)
    assert auto(images[0])[0]["label"] == a[0][0]["label"]


def test_onnx_prediction_never_imports_torch(package: tuple[Path, Path]) -> None:
    # The start-up of a one-image `imgcls predict` is mostly importing torch and timm; with an exported model the
    # ONNX path must need neither (benchmarks/startup.py times it).
    path, data = package
    export_onnx(path)
    image = sorted(data.rglob("*.png"))[0]
    script = (
        "import json, sys\n"
        "from imgcls.cli import main\n"
        f"rc = main(['predict', {str(path)!r}, {str(image)!r}, '--backend', 'onnx', '--format', 'jsonl'])\n"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'lightning') if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    prediction, status = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert status == {"rc": 0, "heavy": []}
    expected = Classifier.load(path, backend="torch")(image)
    assert [t["label"] for t in prediction["predictions"]] == [t["label"] for t in expected]
    assert [t["score"] for t in prediction["predictions"]] == pytest.approx([t["score"] for t in expected], abs=1e-4)


def test_onnx_backend_without_export_is_a_clear_error(package: tuple[Path, Path]) -> None:
    path, _ = package
    with pytest.raises(BackendError, match="imgcls export"):
        Classifier.load(path, backend="onnx")
    assert isinstance(Classifier.load(path, backend="auto").backend, TorchBackend)


def test_int8_is_measured_and_refused_beyond_max_drop(package: tuple[Path, Path]) -> None:
    path, data = package
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "imgcls", "export", str(path), "--int8", "--data", str(data)]
    # A negative allowance refuses even a perfect INT8 model: the guard really gates the file.
    refused = subprocess.run([*cmd, "--max-drop", "-1"], capture_output=True, text=True, env=env)
    assert refused.returncode == 1, refused.stderr
    assert "more than --max-drop" in refused.stderr
    assert (path / "model.onnx").is_file() and not (path / "model.int8.onnx").exists()
    accepted = subprocess.run([*cmd, "--max-drop", "100"], capture_output=True, text=True, env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert (path / "model.int8.onnx").is_file()
    assert "(int8)" in accepted.stdout
    q = json.loads((path / "config.json").read_text(encoding="utf-8"))["imgcls"]["exports"]["int8"]
    assert q["data_images"] == 18 and 0 <= q["top1_int8"] <= 1
    # The INT8 file runs in ONNX Runtime and mostly agrees with fp32 on the first ranking.
    batch = torch.randn(4, 3, 32, 32)
    assert OnnxBackend(path / "model.int8.onnx")(batch).shape == (4, 3)
