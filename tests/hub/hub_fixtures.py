"""Helpers for the hub tests: tiny packages made without training, git remotes on disk, a Hub cache on disk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

EVALUATION = {"split": "test", "images": 10, "top1": 0.9, "top5": 1.0, "macro_f1": 0.88}
TRAINING = {
    "data": "/home/someone/data/shapes",
    "init": "random initialisation",
    "train_images": 36,
    "val_images": 12,
    "epochs": 3,
    "best_epoch": 2,
    "precision": "32-true",
}


def make_package(
    out: Path, labels: list[str], *, seed: int = 0, evaluation: dict[str, Any] | None = None, **info: Any
) -> Path:
    """A LeNet-5 package with its own random weights (seeded) and labels, no training."""
    from imgcls.models import create_model, data_config
    from imgcls.package import save_package

    torch.manual_seed(seed)
    model = create_model("lenet5", len(labels))
    info = {"evaluation": dict(evaluation or EVALUATION), "training": dict(TRAINING), **info}
    return save_package(model.eval(), out, labels=labels, data_config=data_config(model), info=info)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def git(*args: str | Path, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def remote_state(remote: Path) -> str:
    """Every ref and the commit it names: equal before and after means nothing was pushed."""
    return git("for-each-ref", "--format=%(refname) %(objectname)", cwd=remote)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(cache: Path, repo_id: str, revision: str, package: Path, *, commit: str | None = None) -> Path:
    """Lay out `package` in huggingface_hub's cache exactly as `snapshot_download` leaves a finished download.

    `models--ORG--NAME/blobs/<etag>` holds the bytes (etag: SHA-256 for LFS files, the git blob SHA-1 otherwise),
    `snapshots/<commit>/<file>` are relative symlinks to the blobs, `refs/<revision>` holds the commit id and
    `trees/<commit>.json` the tree listing that `snapshot_download` checks a cached snapshot against.
    """
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (storage / "blobs").mkdir(exist_ok=True)
    tree: dict[str, dict[str, Any]] = {}
    for file in sorted(p for p in package.iterdir() if p.is_file()):
        data = file.read_bytes()
        lfs = file.suffix in (".safetensors", ".onnx")
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
        (storage / "blobs" / etag).write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", etag))
        entry: dict[str, Any] = {"size": len(data), "blob_id": _git_blob_sha1(data)}
        if lfs:
            entry.update(lfs_sha256=etag, lfs_size=len(data))
        tree[file.name] = entry
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)  # no newline: huggingface_hub writes none
    (storage / "trees").mkdir(exist_ok=True)
    (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))
    return snapshot
