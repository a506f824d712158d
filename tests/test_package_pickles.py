"""A malicious pickle inside a model package is never unpickled: refused when it is the only weights, ignored when
model.safetensors is there. Every way in is tried: `load_package`, `Classifier.load`, `imgcls predict`, a teacher,
and the check a hub pull runs."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from imgcls import Classifier
from imgcls.errors import PackageError
from imgcls.models import create_model, data_config
from imgcls.package import load_package, save_package

LABELS = ["bird (small)", "cat", "向日葵"]


class Payload:
    """Unpickling this calls exec(...), which creates the marker file: the proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("lenet5", len(LABELS)).eval()
    return save_package(model, tmp_path / "pkg", labels=LABELS, data_config=data_config(model))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned.txt"


def plant(folder: Path, marker: Path) -> None:
    """pytorch_model.bin as timm's local-dir loader would look for it: a plain pickle stream, and a torch.save zip
    holding a state dict with the payload inside (what a tampered download would look like)."""
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    torch.save({"conv1.weight": torch.zeros(6, 3, 5, 5), "evil": Payload(marker)}, folder / "model.pth")
    # The payload works: unpickling it outside imgcls runs it (then the marker is removed for the real test).
    pickle.loads((folder / "pytorch_model.bin").read_bytes())
    assert marker.read_text() == "pwned"
    marker.unlink()


def image(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 40, 90)).save(path)
    return path


def run_predict(package: Path, img: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "imgcls", "predict", str(package), str(img), "--backend", "torch", "--format", "jsonl"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_pickle_next_to_safetensors_is_never_read(package: Path, marker: Path, tmp_path: Path) -> None:
    img = image(tmp_path)
    clean = tmp_path / "clean"
    shutil.copytree(package, clean)
    plant(package, marker)

    loaded = load_package(package)
    reference = load_package(clean)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the weights are the safetensors ones, bit for bit
        torch.testing.assert_close(loaded.model(x), reference.model(x), rtol=0, atol=0)
    top = Classifier.load(package, backend="torch")(img)
    assert top == Classifier.load(clean, backend="torch")(img)
    proc = run_predict(package, img)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[0])
    assert top[0]["label"] in json.dumps(row, ensure_ascii=False)
    assert not marker.exists()


def test_package_whose_only_weights_are_a_pickle_is_refused(package: Path, marker: Path, tmp_path: Path) -> None:
    from imgcls.hub import verify_package
    from imgcls.training import load_teacher

    img = image(tmp_path)
    plant(package, marker)
    (package / "model.safetensors").unlink()
    expected = r"only in model\.pth, pytorch_model\.bin, a pickle file.*never unpickles.*safetensors"

    with pytest.raises(PackageError, match=expected):
        load_package(package)
    with pytest.raises(PackageError, match=expected):
        load_package(package, lazy=True)
    with pytest.raises(PackageError, match=expected):
        Classifier.load(package, backend="torch")
    with pytest.raises(PackageError, match=expected):  # what `imgcls pull` and hf:// / git+ references run
        verify_package(package)
    with pytest.raises(PackageError, match=expected):  # `imgcls train --teacher PACKAGE`
        load_teacher(str(package), LABELS, {"input_size": (3, 32, 32)})
    proc = run_predict(package, img)
    assert proc.returncode == 2
    assert "pytorch_model.bin" in proc.stderr and "safetensors" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
