"""DDP on CPU (gloo), launched for real: 2 processes train what 1 process trains at the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from imgcls import train
from imgcls.config import ConfigError, TrainConfig
from imgcls.data.datamodule import EpochSampler
from imgfactory import write_class_images

# Same global batch, same seeded order, same per-sample augmentation: only float summation order differs.
LOSS_TOL = 1e-5
WEIGHT_TOL = 1e-4


def options(runs: Path) -> dict:
    return dict(
        model="lenet5", img_size=32, epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0.0, num_workers=0,
        val_fraction=0.25, hflip=0.0, crop_scale=0.6, precision="32-true", accelerator="cpu", progress=False,
        runs_dir=str(runs),
    )  # fmt: skip


def cli_flags(opts: dict) -> list[str]:
    flags = []
    for key, value in opts.items():
        flags += ["--no-progress"] if key == "progress" else [f"--{key.replace('_', '-')}", str(value)]
    return flags


def val_losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open(encoding="utf-8") as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def test_the_sampler_gives_each_rank_a_disjoint_slice_of_the_same_global_batches() -> None:
    one = [i for i, _ in EpochSampler(20, seed=3)]
    ranks = [[i for i, _ in EpochSampler(20, seed=3, rank=r, num_replicas=2)] for r in range(2)]
    for step in range(5):  # per-rank batches of 2 make up the 1-process batch of 4
        assert sorted(ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]) == sorted(
            one[4 * step : 4 * step + 4]
        )
    odd = [[i for i, _ in EpochSampler(7, seed=3, rank=r, num_replicas=2)] for r in range(2)]
    assert [len(o) for o in odd] == [4, 4] and set(odd[0] + odd[1]) == set(range(7))


def test_batch_must_split_evenly_and_strategy_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy"):
        TrainConfig(strategy="horovod")
    assert TrainConfig(devices="2").devices == 2


def test_two_processes_train_the_same_model_as_one_and_resume_on_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_class_images(data / "train", per_class=16, seed=1)
    write_class_images(data / "test", per_class=4, seed=2)
    runs = tmp_path / "runs"
    opts = options(runs)
    one = train(data=str(data), name="one", **opts)

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("IMGCLS_RUN_DIR", None)  # train() above set it in this process
    cmd = [sys.executable, "-m", "imgcls", "train", str(data), "--name", "two", "--devices", "2", "--strategy", "ddp"]
    out = subprocess.run([*cmd, *cli_flags(opts)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    said = " ".join(out.stderr.split())  # rich wraps long lines
    assert "2 processes × 4 images" in said
    assert said.count("done run folder") == 1 and said.count("All 60 files decode") == 1, "only rank 0 reports"
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"], "one run folder per run"
    two = runs / "two"
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    assert val_losses(two) == pytest.approx(val_losses(one.run_dir), abs=LOSS_TOL)
    assert max_weight_diff(one.run_dir, two) < WEIGHT_TOL
    metrics_two = json.loads((two / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics_two["top1"] == one.metrics["top1"]
    assert metrics_two["num_samples"] == one.metrics["num_samples"] == 12

    # Resume both for a third epoch on one process: the run trained on 2 devices carries on as the 1-device one.
    one3 = train(resume=one.run_dir, epochs=3)
    two3 = train(resume=two, epochs=3, devices=1)
    assert len(val_losses(two3.run_dir)) == 3
    assert val_losses(two3.run_dir) == pytest.approx(val_losses(one3.run_dir), abs=LOSS_TOL)
    assert max_weight_diff(one3.run_dir, two3.run_dir) < WEIGHT_TOL
