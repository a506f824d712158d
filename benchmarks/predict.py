"""Predict end to end: a folder of real-size JPEG photos → top-5 for every file, imgcls vs timm vs transformers.

Every competitor loads the same randomly initialised weights (one imgcls package = one timm HF folder) and reads
the same files, back to back in this process:
- imgcls: `Classifier.load(PKG, backend=B).predict_iter(files)` for each backend (the path `imgcls predict` runs);
- timm's documented inference path: `create_model("local-dir:PKG", pretrained=True)` + `resolve_data_config` +
  `create_transform` + `timm.data.ImageDataset` + a torch `DataLoader` (2 workers), fp32, `torch.no_grad()`;
- transformers: `pipeline("image-classification", model=FOLDER)` (its TimmWrapper), a list of paths, batch 32;
- the ceiling: the model alone on pre-decoded tensors, in its fastest mode here (fp32, channels_last, bf16 where
  native, ONNX Runtime).
Times exclude loading the model (`load_s` is reported apart); top-1 agreement is against timm's fp32 path.
Competitors run round-robin, `--repeats` rounds, and the median of each is reported.

Run: `python benchmarks/predict.py [--models resnet18 ...] [--images 512]`; writes `benchmarks/results/predict.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import _common  # noqa: E402

MODELS = ("mobilenetv3_large_100", "resnet18", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224")
BATCH = 32


def round_robin(competitors: dict[str, tuple[Any, dict[str, Any]]], repeats: int) -> dict[str, dict[str, Any]]:
    """Run every competitor once per round, `repeats` rounds; median seconds and the last top-1 of each.

    Interleaving, not one competitor's repeats after another's, makes a neighbour's load on a shared machine
    fall on all of them alike, so the ratios hold even when the absolute numbers move.
    """
    times: dict[str, list[float]] = {name: [] for name in competitors}
    out: dict[str, dict[str, Any]] = {name: dict(info) for name, (_, info) in competitors.items()}
    for _ in range(repeats):
        for name, (go, _) in competitors.items():
            started = time.perf_counter()
            result = go()
            times[name].append(time.perf_counter() - started)
            if result is not None:
                out[name]["top1"] = result
    for name in competitors:
        out[name]["seconds"] = statistics.median(times[name])
        out[name]["all_seconds"] = times[name]
    return out


def prepare_imgcls(package: Path, files: list[Path], backend: str):
    from imgcls.predict import Classifier

    started = time.perf_counter()
    clf = Classifier.load(package, backend=backend)
    load_s = time.perf_counter() - started
    index = {label: i for i, label in enumerate(clf.labels)}

    def go() -> list[int]:
        return [index[p.top[0]["label"]] for p in clf.predict_iter(files, top_k=5, batch_size=BATCH)]

    mode = clf.backend.name + ("+bf16" if getattr(clf.backend, "bf16", False) else "")
    return go, {"load_s": load_s, "mode": mode}


def prepare_timm(package: Path, files: list[Path]):
    import timm
    import torch
    from timm.data import ImageDataset, create_transform, resolve_data_config

    started = time.perf_counter()
    model = timm.create_model(f"local-dir:{package}", pretrained=True).eval()
    config = resolve_data_config({}, model=model)
    transform = create_transform(**config)
    load_s = time.perf_counter() - started
    dataset = ImageDataset(str(files[0].parent), transform=transform)
    assert len(dataset) == len(files), "timm's ImageDataset must see exactly the benchmark's files"

    def go() -> list[int]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=2)
        top1 = []
        with torch.no_grad():
            for images, _ in loader:
                probs = model(images).softmax(dim=-1)
                _, top5 = torch.topk(probs, k=5)
                top1 += top5[:, 0].tolist()
        return top1

    return go, {"load_s": load_s, "mode": "fp32"}


def prepare_transformers(package: Path, files: list[Path]):
    from transformers import pipeline

    folder = _common.transformers_copy(package)
    started = time.perf_counter()
    pipe = pipeline("image-classification", model=str(folder), device=-1)
    load_s = time.perf_counter() - started
    index = {label: i for i, label in pipe.model.config.id2label.items()}
    paths = [str(f) for f in files]

    def go() -> list[int]:
        return [index[out[0]["label"]] for out in pipe(paths, batch_size=BATCH, top_k=5)]

    return go, {"load_s": load_s, "mode": "fp32"}


def prepare_ceiling(package: Path, files: list[Path]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The model alone on the already preprocessed tensors, one competitor per mode this machine offers."""
    import torch

    from imgcls.backends import OnnxBackend, TorchBackend, native_bf16
    from imgcls.package import load_package
    from imgcls.predict import Classifier

    clf = Classifier(load_package(package), backend="torch")
    # a channels_last view, as the decode workers hand batches to the model
    batches = list(torch.from_numpy(clf.preprocess([clf._to_image(f) for f in files])).split(BATCH))
    pkg = load_package(package)
    modes: dict[str, Any] = {"fp32": TorchBackend(pkg.model, clf.data_config["input_size"], fast=False)}
    fast = TorchBackend(load_package(package).model, clf.data_config["input_size"])
    if fast.channels_last:
        modes["channels_last"] = fast
    if native_bf16():
        bf16 = TorchBackend(load_package(package).model, clf.data_config["input_size"])
        bf16.bf16 = True
        modes["bf16" + ("+cl" if bf16.channels_last else "")] = bf16
    if (package / "model.onnx").is_file():
        modes["onnxruntime"] = OnnxBackend(package / "model.onnx")
    out = {}
    for name, backend in modes.items():
        backend(batches[0])  # warm-up

        def go(backend=backend) -> None:
            for batch in batches:
                backend(batch)

        out[f"ceiling:{name}"] = (go, {"mode": name})
    return out


def cost_breakdown(package: Path, files: list[Path], ceiling_img_s: float | None) -> dict[str, float]:
    """Core-milliseconds per image of each stage, one thread, and the end-to-end rate 2 cores allow at best.

    Decoding and resizing run in worker processes and the model in the main one, but they share the same cores:
    the best any pipeline can do is cores / (decode + resize + the model's core-time per image). That bound, not
    the model-only ceiling, is what end-to-end imgcls is measured against when decoding dominates.
    """
    import numpy as np

    from imgcls.data.images import load_image
    from imgcls.data.preprocess import EvalPreprocess
    from imgcls.package import load_package

    pre = EvalPreprocess.from_config(load_package(package, lazy=True).data_config)
    assert pre is not None, "the benchmark's models all take the centre-crop fast path"
    sample = files[:128]
    started = time.perf_counter()
    images = [load_image(f, draft=pre.draft_size) for f in sample]  # as the decode workers do
    decode_ms = (time.perf_counter() - started) / len(sample) * 1000
    started = time.perf_counter()
    crops = [pre.pixels(img) for img in images]
    resize_ms = (time.perf_counter() - started) / len(sample) * 1000
    started = time.perf_counter()
    for i in range(0, len(crops), BATCH):
        pre.normalize(np.stack(crops[i : i + BATCH]))
    normalize_ms = (time.perf_counter() - started) / len(sample) * 1000
    cores = os.cpu_count() or 1
    out = {"decode_ms": decode_ms, "resize_crop_ms": resize_ms, "normalize_ms": normalize_ms, "cores": cores}
    if ceiling_img_s:
        # The model-only ceiling ran on all cores: its core-time per image is cores / rate.
        model_core_ms = cores / ceiling_img_s * 1000
        out["model_core_ms"] = model_core_ms
        out["bound_img_s"] = cores * 1000 / (decode_ms + resize_ms + normalize_ms + model_core_ms)
    return out


def run_cli(package: Path, folder: Path) -> float:
    """`imgcls predict PKG FOLDER` as a whole process (start-up, load, predict, write), wall seconds."""
    import subprocess

    out = _common.CACHE / "predict.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", str(package), str(folder), "--format", "jsonl", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all competitors (median per competitor)")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "auto"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["timm", "transformers", "ceiling", "cli"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "predict.json")
    args = parser.parse_args()

    folder = _common.make_photos(args.images)
    files = sorted(folder.glob("*.jpg"))
    rows = []
    for name in args.models:
        package = _common.make_package(name)
        if "onnx" in args.backends or "auto" in args.backends:
            _common.export_onnx(package)
        competitors: dict[str, tuple[Any, dict[str, Any]]] = {}
        if "timm" not in args.skip:
            competitors["timm"] = prepare_timm(package, files)
        if "transformers" not in args.skip:
            competitors["transformers"] = prepare_transformers(package, files)
        for backend in args.backends:
            competitors[f"imgcls:{backend}"] = prepare_imgcls(package, files, backend)
        if "ceiling" not in args.skip:
            competitors.update(prepare_ceiling(package, files))
        runs = round_robin(competitors, args.repeats)
        ceilings = {k: v for k, v in runs.items() if k.startswith("ceiling:")}
        if ceilings:
            best = min(ceilings, key=lambda k: ceilings[k]["seconds"])
            runs["ceiling"] = {
                "seconds": ceilings[best]["seconds"],
                "mode": ceilings[best]["mode"],
                "modes": {v["mode"]: len(files) / v["seconds"] for v in ceilings.values()},
            }
            for k in ceilings:
                del runs[k]
        reference = runs.get("timm", {}).get("top1")
        row: dict[str, Any] = {"model": name, "images": len(files)}
        for key, run in runs.items():
            entry = {"img_s": len(files) / run["seconds"], "mode": run["mode"]}
            if "load_s" in run:
                entry["load_s"] = run["load_s"]
            entry["all_img_s"] = [len(files) / t for t in run.get("all_seconds", [])]
            if "modes" in run:
                entry["modes_img_s"] = run["modes"]
            if reference is not None and "top1" in run:
                entry["top1_agree"] = sum(a == b for a, b in zip(run["top1"], reference, strict=True)) / len(files)
            row[key] = entry
        for key in [k for k in runs if k.startswith("imgcls:")]:
            for other in ("timm", "transformers", "ceiling"):
                if other in row:
                    row[key][f"x_{other}"] = row[key]["img_s"] / row[other]["img_s"]
        row["per_image"] = cost_breakdown(package, files, row.get("ceiling", {}).get("img_s"))
        if "bound_img_s" in row["per_image"]:
            for key in [k for k in runs if k.startswith("imgcls:")]:
                row[key]["of_bound"] = row[key]["img_s"] / row["per_image"]["bound_img_s"]
        if "cli" not in args.skip:
            row["cli_auto_whole_s"] = run_cli(package, folder)
        rows.append(row)
        print_row(row)
    _common.write_json(args.out, {"machine": _common.machine(), "args": vars(args), "rows": rows})


def print_row(row: dict[str, Any]) -> None:
    print(f"\n{row['model']} ({row['images']} JPEGs)")
    print(f"{'path':18s} {'mode':16s} {'img/s':>7s} {'x timm':>7s} {'x hf':>7s} {'of ceil':>8s} {'top-1 agree':>11s}")
    for key, entry in row.items():
        if not isinstance(entry, dict) or "img_s" not in entry:
            continue
        agree = entry.get("top1_agree")
        print(
            f"{key:18s} {entry['mode']:16s} {entry['img_s']:7.1f} "
            f"{entry.get('x_timm', float('nan')):7.2f} {entry.get('x_transformers', float('nan')):7.2f} "
            f"{entry.get('x_ceiling', float('nan')):8.0%} {'' if agree is None else f'{agree:.1%}':>11s}"
        )
    cost = row.get("per_image", {})
    if cost:
        print(
            "per image, one thread: "
            + ", ".join(f"{k[:-3]} {v:.1f} ms" for k, v in cost.items() if k.endswith("_ms"))
            + (
                f"; best end-to-end rate on {cost['cores']} cores: {cost['bound_img_s']:.1f} img/s"
                if "bound_img_s" in cost
                else ""
            )
        )
    if "cli_auto_whole_s" in row:
        print(f"`imgcls predict` (auto) as a whole process: {row['cli_auto_whole_s']:.1f} s")


if __name__ == "__main__":
    main()
