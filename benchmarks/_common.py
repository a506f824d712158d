"""Shared pieces of the benchmark scripts: the photo folder, the model packages and the machine description.

Not a benchmark itself. Every script puts the machine, the versions and its options into its JSON so a
number can always be traced to where and how it was measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Photos and model packages are made once and kept outside the checkout (IMGCLS_BENCH_CACHE moves them).
CACHE = Path(os.environ.get("IMGCLS_BENCH_CACHE", Path(tempfile.gettempdir()) / "imgcls-bench"))
# skimage.data colour photos that ship with the wheel (no download); grey ones are converted to RGB.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "coins")
NUM_LABELS = 1000  # an ImageNet-sized head, as the people who run these models on photos have


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 + bf16"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "no AVX2"


def machine() -> dict[str, Any]:
    """CPU, cores and the versions of everything that can change a number."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "isa": cpu_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for name in ("torch", "timm", "onnxruntime", "transformers", "PIL", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["native_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # torch absent or too old: the number is still useful without these
        pass
    return info


def make_photos(count: int, folder: Path | None = None) -> Path:
    """`count` JPEG photos of 400-800 px, crops and resizes of the scikit-image sample photos, made once."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    folder = folder or CACHE / f"photos{count}"
    done = folder / ".done"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in PHOTOS:
        arr = getattr(skdata, name)()
        img = Image.fromarray(arr)
        sources.append(img.convert("RGB"))
    rng = np.random.default_rng(0)
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = src.size
        # A random crop of 50-100% of each side, resized so the long side is 400-800 px: varied content and sizes.
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = src.crop((x, y, x + cw, y + ch))
        long_side = int(rng.integers(400, 801))
        scale = long_side / max(cw, ch)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        crop.resize(size, Image.Resampling.BICUBIC).save(folder / f"{i:05d}.jpg", quality=int(rng.integers(80, 96)))
    done.write_text(str(count))
    return folder


def make_package(model_name: str, folder: Path | None = None) -> Path:
    """A randomly initialised timm model saved once as an imgcls package (= a timm HF folder) for every competitor."""
    folder = folder or CACHE / "models" / model_name
    if (folder / "model.safetensors").is_file():
        return folder
    import timm
    import torch
    from timm.data import resolve_data_config

    from imgcls.package import save_package

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=NUM_LABELS).eval()
    save_package(
        model,
        folder,
        labels=[f"class_{i:03d}" for i in range(NUM_LABELS)],
        data_config=resolve_data_config(model=model),
    )
    return folder


def transformers_copy(package: Path) -> Path:
    """The same folder for transformers' TimmWrapper, without `num_classes` in `model_args`.

    timm 1.0.31 writes `num_classes` there and the wrapper passes it again ("got multiple values for keyword
    argument 'num_classes'"); the weights file is linked, not copied.
    """
    folder = package.with_name(package.name + "-hf")
    folder.mkdir(exist_ok=True)
    config = json.loads((package / "config.json").read_text())
    config.get("model_args", {}).pop("num_classes", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = folder / "model.safetensors"
    if not weights.exists():
        weights.symlink_to((package / "model.safetensors").resolve())
    return folder


def export_onnx(package: Path) -> Path:
    """`imgcls export PACKAGE` once, so the onnx (and auto) backends have a model.onnx to run."""
    onnx = package / "model.onnx"
    if not onnx.is_file():
        subprocess.run([sys.executable, "-m", "imgcls", "export", str(package)], check=True, capture_output=True)
    return onnx


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of `repeats` calls (and all of them), after nothing: warm-up is the caller's choice."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def start_serve(args: list[str], log: Path, timeout: float = 180) -> subprocess.Popen[bytes]:
    """`imgcls serve ARGS` (ARGS must hold `--port`), output to `log`, returned once /healthz answers 200.

    The output goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server's access log.
    """
    import httpx

    port = args[args.index("--port") + 1]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "imgcls", "serve", *args], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise SystemExit(f"imgcls serve exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"imgcls serve did not come up in {timeout:.0f} s")
        time.sleep(0.2)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"written to {path}")
