"""Train: images/s of `imgcls.train` vs a plain timm-API training loop, same data, batch size and precision.

imgcls's steady speed is taken as the difference of two runs (2 epochs minus 1 epoch), which cancels its fixed
costs (data check, final evaluation, packaging); its epoch includes a validation pass over 10% of the images.
The plain loop is what a timm user writes: `create_model` + `create_transform(is_training=True)` +
`timm.data.ImageDataset` + `DataLoader(shuffle=True, num_workers=2)` + AdamW + label smoothing, timing its
second epoch. Precision: fp32 (`32-true`), and bf16 autocast as well where the CPU runs bf16 natively.

Run: `python benchmarks/train.py [--models resnet18 vit_tiny_patch16_224] [--images 256]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _common  # noqa: E402


def class_folder(files: list[Path], root: Path, classes: int = 4) -> Path:
    """The photos as an image folder of `classes` classes (links, no copies)."""
    for i, f in enumerate(files):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f.name).symlink_to(f)
    return root


def imgcls_epoch_s(data: Path, model: str, size: int, batch: int, precision: str, runs: Path) -> float:
    """Seconds of imgcls's second training epoch, first batch start to last batch end (no validation)."""
    import lightning as L

    from imgcls import train

    class EpochClock(L.Callback):
        def __init__(self) -> None:
            self.first: dict[int, float] = {}
            self.last: dict[int, float] = {}

        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            self.first.setdefault(trainer.current_epoch, time.perf_counter())

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            self.last[trainer.current_epoch] = time.perf_counter()

    clock = EpochClock()
    train(
        data=str(data), model=model, img_size=size, batch_size=batch, epochs=2, precision=precision,
        warmup_epochs=0, runs_dir=str(runs), name=f"{model}-{precision}", progress=False, callbacks=[clock],
    )  # fmt: skip
    return clock.last[1] - clock.first[1]


def timm_epoch_s(data: Path, model_name: str, size: int, batch: int, bf16: bool) -> tuple[float, int]:
    import timm
    import torch
    from timm.data import ImageDataset, create_transform, resolve_data_config

    model = timm.create_model(model_name, num_classes=4)
    config = resolve_data_config({"input_size": (3, size, size)}, model=model)
    transform = create_transform(**config, is_training=True)
    dataset = ImageDataset(str(data), transform=transform)
    # The same 90% that imgcls trains on (it keeps 10% for validation).
    subset = torch.utils.data.Subset(dataset, range(int(len(dataset) * 0.9)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch, shuffle=True, num_workers=2, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    seconds = 0.0
    for _epoch in range(2):
        started = time.perf_counter()
        for images, targets in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started  # the second epoch: workers and kernels warm
    return seconds, len(subset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "vit_tiny_patch16_224"])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()

    from imgcls.backends import native_bf16

    files = sorted(_common.make_photos(args.images).glob("*.jpg"))
    precisions = [("32-true", False)] + ([("bf16-mixed", True)] if native_bf16() else [])
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="imgcls-train-bench-"))
    try:
        data = class_folder(files, tmp / "data")
        for model in args.models:
            for precision, bf16 in precisions:
                timm_s, trained = timm_epoch_s(data, model, args.size, args.batch_size, bf16)
                ours_s = imgcls_epoch_s(data, model, args.size, args.batch_size, precision, tmp / "runs")
                row = {
                    "model": model,
                    "precision": precision,
                    "train_images": trained,
                    "timm_loop_img_s": trained / timm_s,
                    "imgcls_img_s": trained / ours_s,
                }
                row["x_timm_fp32"] = row["imgcls_img_s"] / next(
                    (r["timm_loop_img_s"] for r in rows if r["model"] == model and r["precision"] == "32-true"),
                    row["timm_loop_img_s"],
                )
                rows.append(row)
                print(
                    f"{model:24s} {precision:10s} timm loop {row['timm_loop_img_s']:6.1f} img/s  "
                    f"imgcls {row['imgcls_img_s']:6.1f} img/s  ({row['x_timm_fp32']:.2f}x the timm fp32 loop)"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _common.write_json(args.out, {"machine": _common.machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
