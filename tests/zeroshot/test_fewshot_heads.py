"""`train --head linear-probe|knn`: heads fitted on frozen embeddings, checked against scikit-learn on the same
embeddings, saved as ordinary packages (evaluated, exported)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clipfactory import write_tiny_clip
from imgcls import Classifier, discover, train
from imgcls.config import ConfigError
from imgcls.embeddings import embed_samples, load_backbone
from imgcls.export import export_onnx


@pytest.fixture
def tiny_clip(tmp_path: Path) -> Path:
    return write_tiny_clip(tmp_path / "tiny-clip", seed=3)


def _kwargs(tmp_path: Path, **extra: object) -> dict:
    return dict(runs_dir=str(tmp_path / "runs"), num_workers=0, progress=False, val_fraction=0.25, **extra)


def _reference(model_ref: str, data: Path, estimator: object) -> tuple[torch.Tensor, list]:
    """Fit `estimator` with scikit-learn on the same training embeddings; its probabilities on the test images."""
    splits = discover(data, val_fraction=0.25, seed=0)
    backbone = load_backbone(model_ref, pretrained=False)
    train_emb, kept = embed_samples(backbone, splits.train, progress=False, num_workers=0)
    test_emb, _ = embed_samples(backbone, splits.test, progress=False, num_workers=0)
    estimator.fit(train_emb.double().numpy(), [splits.train[i].label for i in kept])
    return torch.from_numpy(estimator.predict_proba(test_emb.double().numpy())).float(), splits.test


def _probabilities(package: Path, samples: list) -> torch.Tensor:
    clf = Classifier.load(package, backend="torch")
    from PIL import Image

    return clf.probabilities([Image.open(s.path).convert("RGB") for s in samples])


def test_linear_probe_on_clip_equals_scikit_learn(tiny_clip: Path, tmp_path: Path, image_folder: Path) -> None:
    run = train(data=str(image_folder), model=str(tiny_clip), head="linear-probe", **_kwargs(tmp_path))
    for name in ("config.yaml", "data_check.json", "metrics.csv", "model/model.safetensors", "eval/metrics.json"):
        assert (run.run_dir / name).is_file(), name
    expected, test = _reference(
        str(tiny_clip), image_folder, make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    )
    got = _probabilities(run.package_dir, test)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    config = json.loads((run.package_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"] == "imgcls_clip" and config["imgcls"]["training"]["head"] == "linear-probe"
    assert config["imgcls"]["evaluation"]["top1"] == pytest.approx(run.metrics["top1"], abs=1e-6)
    assert run.eval_split == "test" and run.metrics["num_samples"] == 12
    with (run.run_dir / "metrics.csv").open(encoding="utf-8") as f:
        assert next(csv.DictReader(f))["head"] == "linear-probe"


def test_knn_head_equals_scikit_learn_and_exports(tiny_clip: Path, tmp_path: Path, image_folder: Path) -> None:
    run = train(data=str(image_folder), model=str(tiny_clip), head="knn", knn_k=3, **_kwargs(tmp_path))
    expected, test = _reference(str(tiny_clip), image_folder, KNeighborsClassifier(n_neighbors=3, metric="cosine"))
    got = _probabilities(run.package_dir, test)
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)
    config = json.loads((run.package_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"] == "imgcls_knn" and config["model_args"]["backbone"] == "imgcls_clip"
    # The training embeddings travel in the package: moving it elsewhere keeps it working.
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(run.package_dir, moved)
    assert torch.allclose(_probabilities(moved, test), got)
    result = export_onnx(moved)
    assert result.check["top1_agreement"] == 1.0 and result.check["max_abs_logit_diff"] < 1e-3


def test_linear_probe_on_a_package_backbone_with_two_classes(tmp_path: Path, image_folder: Path) -> None:
    from imgcls.models import create_model, data_config
    from imgcls.package import save_package

    two = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("cat", "向日葵"):
            shutil.copytree(image_folder / split / name, two / split / name)
    # Any model package is a backbone: its own head is replaced by the probe.
    torch.manual_seed(0)
    lenet = create_model("lenet5", 10)
    backbone = save_package(lenet.eval(), tmp_path / "lenet", labels=list("0123456789"), data_config=data_config(lenet))
    run = train(data=str(two), model=str(backbone), head="linear-probe", **_kwargs(tmp_path))
    expected, test = _reference(
        str(backbone), two, make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    )
    got = _probabilities(run.package_dir, test)
    assert got.shape == (8, 2)
    assert torch.allclose(got, expected, atol=1e-4)
    assert json.loads((run.package_dir / "config.json").read_text(encoding="utf-8"))["architecture"] == "lenet5"


def test_head_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="head"):
        train(data="x", head="svm", **_kwargs(tmp_path))
    with pytest.raises(ConfigError, match="multiclass"):
        train(data="x", head="knn", task="multilabel", **_kwargs(tmp_path))
    with pytest.raises(ConfigError, match="knn_k"):
        train(data="x", head="knn", knn_k=0, **_kwargs(tmp_path))
