"""Train: images/s of `imgcls.train` vs a plain timm-API training loop, same data, batch size and precision.

Both are timed over their second epoch, the same way: from the start of the epoch (before its first batch is
loaded) to the end of its last optimiser step, validation excluded, divided by the images trained in it. The plain
loop is what a timm user writes: `create_model` + `create_transform(is_training=True)` + `timm.data.ImageDataset` +
`DataLoader(shuffle=True, num_workers=2)` + AdamW + label smoothing, with the augmentation imgcls trains with
(random-resized crop and flip, no colour jitter), so both do the same work per image. imgcls runs with its defaults
(worker count included). Precision: fp32 (`32-true`), and bf16 autocast as well where the CPU runs bf16 natively.

On a shared machine the load drifts: `--repeats` runs each pair (timm loop, then imgcls) that many times back to
back; the JSON has every run, the load average around it and the main process's CPU seconds per image (less
sensitive to other jobs than wall time), and the table shows medians.

Run: `python benchmarks/train.py [--models resnet18 vit_tiny_patch16_224] [--images 256] [--repeats 2] [--digits]`;
`--digits` adds the quick start (resnet18 on the built-in digits at 32 px, its recipe on both sides).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def imgcls_epoch(
    data: Path, model: str, size: int, batch: int, precision: str, runs: Path, **options: Any
) -> dict[str, float]:
    """imgcls's second training epoch: seconds from its start to its last step's end, images, main-process CPU s."""
    import lightning as L

    from imgcls import train

    class EpochClock(L.Callback):
        # Starts before the epoch's first batch is fetched, as the plain loop's clock does.
        def __init__(self) -> None:
            self.epochs: dict[int, dict[str, float]] = {}

        def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
            self.epochs[trainer.current_epoch] = {"start": time.perf_counter(), "cpu": time.process_time()}
            self.epochs[trainer.current_epoch]["images"] = 0

        def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *args: Any) -> None:
            epoch = self.epochs[trainer.current_epoch]
            epoch["end"], epoch["cpu_end"] = time.perf_counter(), time.process_time()
            epoch["images"] += 0 if batch is None else len(batch[0])

    clock = EpochClock()
    train(
        data=str(data), model=model, img_size=size, batch_size=batch, epochs=2, precision=precision,
        warmup_epochs=0, runs_dir=str(runs), name=f"{model}-{precision}", progress=False, callbacks=[clock],
        **options,
    )  # fmt: skip
    second = clock.epochs[1]
    return {
        "seconds": second["end"] - second["start"],
        "images": second["images"],
        "cpu": second["cpu_end"] - second["cpu"],
    }


def timm_epoch(
    data: Path,
    model_name: str,
    size: int,
    batch: int,
    bf16: bool,
    *,
    classes: int = 4,
    hflip: float = 0.5,
    crop_scale: float = 0.08,
    crop_pct: float | None = None,
) -> dict[str, float]:
    """The plain loop's second epoch: seconds from its start to its last step's end, images, main-process CPU s."""
    import timm
    import torch
    from timm.data import ImageDataset, create_transform, resolve_data_config

    model = timm.create_model(model_name, num_classes=classes)
    overrides = {"input_size": (3, size, size)} | ({"crop_pct": crop_pct} if crop_pct else {})
    config = resolve_data_config(overrides, model=model)
    # imgcls's augmentation (no colour jitter, which timm's factory adds unless told): the same work per image.
    transform = create_transform(**config, is_training=True, color_jitter=None, hflip=hflip, scale=(crop_scale, 1.0))
    dataset = ImageDataset(str(data), transform=transform)
    # The same 90% that imgcls trains on (it keeps 10% for validation).
    subset = torch.utils.data.Subset(dataset, range(int(len(dataset) * 0.9)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch, shuffle=True, num_workers=2, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    result: dict[str, float] = {}
    for _epoch in range(2):  # the second epoch is kept: workers and kernels warm
        started, cpu, images = time.perf_counter(), time.process_time(), 0
        for images_batch, targets in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(images_batch), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(images_batch)
            result = {"seconds": time.perf_counter() - started, "images": images, "cpu": time.process_time() - cpu}
    return result


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["resnet18", "vit_tiny_patch16_224"])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timm loop + imgcls pairs per model and precision")
    parser.add_argument(
        "--digits", action="store_true", help="also the quick start: resnet18 on the built-in digits at 32 px"
    )
    parser.add_argument("--digits-model", default="resnet18", help="the quick start's model (smoke tests: a tiny one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()

    from imgcls.backends import native_bf16

    files = sorted(_common.make_photos(args.images).glob("*.jpg"))
    precisions = [("32-true", False)] + ([("bf16-mixed", True)] if native_bf16() else [])
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="imgcls-train-bench-"))
    try:
        photos = class_folder(files, tmp / "data")
        # (row name, data, model, size, imgcls options, timm loop options)
        jobs: list[tuple[str, Path, str, int, dict[str, Any], dict[str, Any]]] = [
            (model, photos, model, args.size, {}, {}) for model in args.models
        ]
        if args.digits:
            from imgcls.data.builtin import materialize

            digits = materialize("digits", tmp / "digits")
            # The quick-start recipe (scripts/quickstart.sh): no flips, no centre crop, crops of at least half.
            recipe = {"hflip": 0.0, "crop_scale": 0.5, "crop_pct": 1.0}
            jobs.append(
                (
                    f"digits quick start ({args.digits_model}, 32 px)",
                    digits,
                    args.digits_model,
                    32,
                    recipe,
                    recipe | {"classes": 10},
                )
            )
        for name, data, model, size, ours_options, timm_options in jobs:
            for precision, bf16 in precisions:
                runs = []
                for repeat in range(args.repeats):
                    load_before = load_average()
                    timm = timm_epoch(data / "train" if (data / "train").is_dir() else data, model, size,
                                      args.batch_size, bf16, **timm_options)  # fmt: skip
                    ours = imgcls_epoch(
                        data, model, size, args.batch_size, precision, tmp / f"runs{repeat}", **ours_options
                    )
                    runs.append(
                        {
                            "load_average_1min": [load_before, load_average()],
                            "timm_loop_img_s": timm["images"] / timm["seconds"],
                            "imgcls_img_s": ours["images"] / ours["seconds"],
                            "timm_loop_cpu_ms_per_img": 1000 * timm["cpu"] / timm["images"],
                            "imgcls_cpu_ms_per_img": 1000 * ours["cpu"] / ours["images"],
                            "train_images": [timm["images"], ours["images"]],
                        }
                    )
                    runs[-1]["ratio"] = runs[-1]["imgcls_img_s"] / runs[-1]["timm_loop_img_s"]
                row: dict[str, Any] = {"model": name, "precision": precision, "runs": runs}
                for key in (
                    "timm_loop_img_s",
                    "imgcls_img_s",
                    "ratio",
                    "timm_loop_cpu_ms_per_img",
                    "imgcls_cpu_ms_per_img",
                ):
                    row[key] = statistics.median(r[key] for r in runs)
                row["x_timm_fp32"] = row["imgcls_img_s"] / next(
                    (r["timm_loop_img_s"] for r in rows if r["model"] == name and r["precision"] == "32-true"),
                    row["timm_loop_img_s"],
                )
                rows.append(row)
                print(
                    f"{name:24s} {precision:10s} timm loop {row['timm_loop_img_s']:6.1f} img/s  "
                    f"imgcls {row['imgcls_img_s']:6.1f} img/s  (pairs: "
                    + ", ".join(f"{r['ratio']:.2f}x" for r in runs)
                    + f"; {row['x_timm_fp32']:.2f}x the timm fp32 loop by medians)"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _common.write_json(args.out, {"machine": _common.machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
