"""Training end to end on a tiny model: the run folder, resume equivalence, freezing, imbalance options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file, save_file

from imgcls import Classifier, TrainConfig, train
from imgcls.data.sources import DataError
from imgcls.models import create_model, head_parameter_names


class StopAfterEpochs(Callback):
    """Ends the fit after N epochs, the way an interrupted run ends after its last saved epoch."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def read_epochs(run_dir: Path) -> dict[int, dict[str, str]]:
    """Epoch → its epoch-level values in metrics.csv (Lightning writes them over several rows)."""
    epochs: dict[int, dict[str, str]] = {}
    with (run_dir / "metrics.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("val_top1") or row.get("train_loss_epoch"):
                epochs.setdefault(int(row["epoch"]), {}).update({k: v for k, v in row.items() if v})
    return epochs


def test_train_writes_the_run_folder(image_folder: Path, tiny_train_kwargs: dict) -> None:
    result = train(data=str(image_folder), name="run", **tiny_train_kwargs)
    run = result.run_dir
    assert run == Path(tiny_train_kwargs["runs_dir"]) / "run"
    for name in (
        "config.yaml",
        "metrics.csv",
        "data_check.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model/config.json",
        "model/model.safetensors",
        "model/README.md",
        "eval/metrics.json",
    ):
        assert (run / name).is_file(), name
    # config.yaml reproduces the run: it loads back into the same options.
    assert TrainConfig.load(run / "config.yaml") == TrainConfig(data=str(image_folder), name="run", **tiny_train_kwargs)
    assert sorted(read_epochs(run)) == [0, 1]
    # The held-out test/ split is what the run evaluates on, and the colours are easy: the model learns them.
    assert result.eval_split == "test"
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_samples"] == 12
    assert metrics["top1"] >= 0.9
    config = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["label_names"] == ["bird (small)", "cat", "向日葵"]
    assert config["imgcls"]["evaluation"]["top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    assert "向日葵" in (run / "model" / "README.md").read_text(encoding="utf-8")
    # A second run with the same name does not overwrite the first.
    again = train(data=str(image_folder), name="run", **{**tiny_train_kwargs, "epochs": 1})
    assert again.run_dir.name == "run-2"


def test_resume_matches_an_uninterrupted_run(image_folder: Path, tiny_train_kwargs: dict) -> None:
    options = {**tiny_train_kwargs, "epochs": 3, "drop_rate": 0.2}
    full = train(data=str(image_folder), name="full", **options)
    cut = train(data=str(image_folder), name="cut", callbacks=[StopAfterEpochs(1)], **options)
    assert sorted(read_epochs(cut.run_dir)) == [0]
    resumed = train(resume=cut.run_dir)
    assert resumed.run_dir == cut.run_dir
    full_rows, resumed_rows = read_epochs(full.run_dir), read_epochs(resumed.run_dir)
    assert sorted(resumed_rows) == [0, 1, 2]
    for epoch in range(3):
        for key in ("val_top1", "val_loss", "train_loss_epoch"):
            assert float(resumed_rows[epoch][key]) == pytest.approx(float(full_rows[epoch][key]), abs=1e-6), (
                epoch,
                key,
            )
    a = load_file(full.package_dir / "model.safetensors")
    b = load_file(resumed.package_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed.metrics["top1"] == full.metrics["top1"]


def test_freeze_epochs_keeps_the_backbone_of_the_weights_file(
    image_folder: Path, tiny_train_kwargs: dict, tmp_path: Path
) -> None:
    torch.manual_seed(123)
    source = create_model("lenet5", 7)
    weights = tmp_path / "start.safetensors"
    save_file(source.state_dict(), str(weights))
    result = train(data=str(image_folder), weights=str(weights), freeze_epochs=1, **{**tiny_train_kwargs, "epochs": 1})
    trained = load_file(result.package_dir / "model.safetensors")
    start = load_file(str(weights))
    head = head_parameter_names(create_model("lenet5", 3))
    for key, value in trained.items():
        if key in head:
            assert value.shape[0] == 3  # the head was replaced for the 3 new classes
        else:
            torch.testing.assert_close(value, start[key], rtol=0, atol=0)
    assert any(not torch.equal(trained[k], torch.zeros_like(trained[k])) for k in head)


def test_class_weights_and_balanced_sampler_train(image_folder: Path, tiny_train_kwargs: dict) -> None:
    # Make the data imbalanced: drop most of one class.
    for path in sorted((image_folder / "train" / "cat").glob("*.png"))[3:]:
        path.unlink()
    result = train(
        data=str(image_folder), class_weights="auto", sampler="balanced", **{**tiny_train_kwargs, "epochs": 1}
    )
    check = json.loads((result.run_dir / "data_check.json").read_text(encoding="utf-8"))
    assert check["imbalance_ratio"] >= 3
    assert result.metrics["num_samples"] == 12
    assert float(read_epochs(result.run_dir)[0]["train_loss_epoch"]) < 5


def test_early_stopping_ends_the_run(image_folder: Path, tiny_train_kwargs: dict) -> None:
    # The colours are learnt at once; validation top-1 then stops improving and patience runs out.
    result = train(data=str(image_folder), patience=1, **{**tiny_train_kwargs, "epochs": 8, "lr": 1e-2})
    epochs = read_epochs(result.run_dir)
    assert len(epochs) < 8
    tops = [float(epochs[e]["val_top1"]) for e in sorted(epochs)]
    assert max(tops[-1:]) <= max(tops[:-1])


def test_bad_data_stops_before_training(tmp_path: Path, tiny_train_kwargs: dict) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        train(data=str(empty), **tiny_train_kwargs)
    one = tmp_path / "one" / "cat"
    one.mkdir(parents=True)
    (one / "a.png").write_bytes(b"")
    with pytest.raises(DataError):
        train(data=str(tmp_path / "one"), **tiny_train_kwargs)
    assert not Path(tiny_train_kwargs["runs_dir"]).exists() or not any(
        (p / "checkpoints").exists() for p in Path(tiny_train_kwargs["runs_dir"]).iterdir()
    )


def test_package_predicts_the_same_as_the_trained_model(image_folder: Path, tiny_train_kwargs: dict) -> None:
    result = train(data=str(image_folder), **{**tiny_train_kwargs, "epochs": 1})
    clf = Classifier.load(result.package_dir)
    image = next((image_folder / "test" / "cat").glob("*.png"))
    top = clf(image)
    assert len(top) == 3 and abs(sum(t["score"] for t in top) - 1) < 1e-5
    assert {t["label"] for t in top} == {"bird (small)", "cat", "向日葵"}


def test_auto_augment_and_random_erase_are_seeded_per_sample(image_folder: Path) -> None:
    from imgcls.config import ConfigError
    from imgcls.data.datamodule import ImageDataModule
    from imgcls.data.sources import discover

    cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
    dm = ImageDataModule(
        discover(image_folder), cfg, num_workers=0, auto_augment="rand-m9-mstd0.5-inc1", random_erase=1.0
    )
    dataset = dm.train_dataloader().dataset
    names = repr(dataset.transform)
    assert "RandAugment" in names and "RandomErasing" in names
    # The same (index, epoch) gives the same pixels whatever ran before: exact resume keeps holding.
    first = dataset[(0, 3)][0]
    dataset[(1, 3)]
    assert torch.equal(dataset[(0, 3)][0], first)
    assert not torch.equal(dataset[(0, 4)][0], first)
    # Off by default.
    plain = ImageDataModule(discover(image_folder), cfg, num_workers=0).train_dataloader().dataset
    assert "RandAugment" not in repr(plain.transform) and "RandomErasing" not in repr(plain.transform)
    with pytest.raises(ConfigError, match="auto_augment: 'randaugment'"):
        TrainConfig(data=str(image_folder), auto_augment="randaugment")
    with pytest.raises(ConfigError, match="random_erase"):
        TrainConfig(data=str(image_folder), random_erase=1.5)


def test_adamw_is_fused_on_cpu_and_updates_as_the_default_one() -> None:
    from imgcls.tasks.multiclass import fused_adamw

    torch.manual_seed(0)
    fused_model, plain_model = create_model("lenet5", 3, img_size=32), create_model("lenet5", 3, img_size=32)
    plain_model.load_state_dict(fused_model.state_dict())
    fused, plain = (
        fused_adamw([{"params": fused_model.parameters()}], lr=1e-2),
        torch.optim.AdamW(plain_model.parameters(), lr=1e-2),
    )
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(3):
        for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
