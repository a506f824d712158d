"""`imgcls train MANIFEST`: training streams tar shards (local or over HTTP), each image once per epoch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

import test_shards
from imgcls import train
from imgcls.cli import main
from imgcls.config import ConfigError
from imgcls.data.shards import load_manifest
from imgcls.faults import TrainingInterrupted
from test_faults_training import SignalAt, assert_same_run
from test_training import read_epochs

# test_shards.py's fixtures: 24 train / 6 val / 9 test images (and one broken file left out) in ~4-image shards,
# and that folder served by a real HTTP server.
shards = test_shards.shards
http_root = test_shards.http_root


class CountLabels(Callback):
    """The labels of every image that reached a training step, per epoch, and the epoch length Lightning planned."""

    def __init__(self) -> None:
        self.seen: dict[int, Counter] = {}
        self.planned: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.planned.append(trainer.num_training_batches)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, Counter()).update(batch[1].tolist())


def test_train_from_a_local_manifest_sees_every_image_once_per_epoch(shards: Path, tiny_train_kwargs: dict) -> None:
    manifest = load_manifest(shards)
    counter = CountLabels()
    # 2 workers over 6 train shards: each worker streams its own range of the epoch's order.
    opts = {**tiny_train_kwargs, "num_workers": 2}
    result = train(data=str(shards / "manifest.json"), name="run", callbacks=[counter], **opts)
    run = result.run_dir
    for name in ("config.yaml", "metrics.csv", "data_check.json", "checkpoints/last.ckpt", "model/model.safetensors"):
        assert (run / name).is_file(), name
    # Every epoch's images, class by class, are exactly the manifest's train split; the epoch is 24 / 8 steps.
    expected = Counter(dict(enumerate(manifest.class_counts("train"))))
    assert sum(expected.values()) == manifest.count("train") == 24
    assert counter.seen == {0: expected, 1: expected}
    assert counter.planned == [3, 3]
    assert sorted(read_epochs(run)) == [0, 1]
    # The data check is the one `imgcls shard` ran: the run records its counts and says so.
    check = json.loads((run / "data_check.json").read_text(encoding="utf-8"))
    assert check["source"] == "shards" and "imgcls shard" in check["checked"]
    assert check["counts"] == {"train": 24, "val": 6, "test": 9}
    assert [Path(p).name for p in check["skipped_files"]] == ["broken.png"]
    # Evaluated on the manifest's test split, streamed; the package carries the manifest's classes.
    assert result.eval_split == "test"
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_samples"] == 9 and metrics["split"] == "test"
    package = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    assert package["label_names"] == manifest.classes
    assert package["imgcls"]["training"]["train_images"] == 24


def test_train_from_a_manifest_over_http_with_the_cli(
    http_root: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    url = f"{http_root}/manifest.json"
    code = main(
        ["train", url, "--model", "lenet5", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--lr", "3e-3"]
        + ["--num-workers", "0", "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--name", "web"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "checked when `imgcls shard` wrote them" in err and "24 train" in err
    run = tmp_path / "runs" / "web"
    assert sorted(read_epochs(run)) == [0]
    rows = (run / "eval" / "predictions.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == 9 and all(row.startswith(f"{http_root}/test-") for row in rows)
    assert (run / "model" / "model.safetensors").is_file()


def test_resume_mid_epoch_from_shards_repeats_and_loses_nothing(shards: Path, tiny_train_kwargs: dict) -> None:
    opts = {**tiny_train_kwargs, "epochs": 2, "batch_size": 4, "drop_rate": 0.2, "num_workers": 2}
    data = str(shards / "manifest.json")
    full = train(data=data, name="full", **opts)
    # 24 images in batches of 4: 6 steps per epoch; the signal comes in step 9, the 3rd of epoch 1.
    with pytest.raises(TrainingInterrupted):
        train(data=data, name="cut", callbacks=[SignalAt(9)], **opts)
    counter = CountLabels()
    resumed = train(resume=Path(opts["runs_dir"]) / "cut", callbacks=[counter])
    # The resumed epoch reads only the rest of its images: with the same worker count, the very batches the
    # uninterrupted run read, so metrics.csv and the weights match it exactly.
    assert sum(counter.seen[1].values()) == 24 - 3 * 4
    assert_same_run(full.run_dir, resumed.run_dir)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sampler", "balanced"], "sampler balanced: not available when training from shards"),
        (["--unlabeled", "."], "unlabeled: not available when training from shards"),
        (["--head", "knn"], "head knn: not available when training from shards"),
        (["--task", "multilabel"], "task multilabel: not available when training from shards"),
    ],
)
def test_options_that_need_every_image_up_front_are_refused(
    shards: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    flags: list[str],
    message: str,
) -> None:
    code = main(["train", str(shards / "manifest.json"), "--runs-dir", str(tmp_path / "runs"), *flags])
    assert code == 2
    assert f"imgcls train: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_bare_tar_shard_is_refused_with_the_fix(shards: Path, tiny_train_kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="single tar shard; training takes the manifest.json"):
        train(data=str(shards / "train-000000.tar"), **tiny_train_kwargs)
