"""Start-up: wall time of `imgcls --help` and of `imgcls predict PKG one.jpg` as whole processes.

Targets (issue #6): `--help` under 0.5 s, one-image predict under 3 s. Each command runs `--repeats` times in
a fresh process and the median is reported, next to `python -c "import torch"` and `import timm` for scale.

Run: `python benchmarks/startup.py [--model resnet18] [--repeats 5]`; writes `benchmarks/results/startup.json`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import _common  # noqa: E402

TARGETS = {
    "imgcls --help": 0.5,
    "imgcls predict (1 image, auto)": 3.0,
    "imgcls predict (1 image, onnx)": 3.0,
    "imgcls predict (1 image, torch)": 3.0,
}


def wall(cmd: list[str], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "startup.json")
    args = parser.parse_args()

    package = _common.make_package(args.model)
    _common.export_onnx(package)
    image = sorted(_common.make_photos(8).glob("*.jpg"))[0]
    exe = shutil.which("imgcls", path=str(Path(sys.executable).parent)) or "imgcls"
    commands = {
        "imgcls --help": [exe, "--help"],
        "imgcls predict (1 image, auto)": [exe, "predict", str(package), str(image), "--format", "jsonl"],
        # `auto` times both backends once per model and machine (cached): the median shows the cached runs
        "imgcls predict (1 image, onnx)": [
            *[exe, "predict", str(package), str(image), "--format", "jsonl", "--backend", "onnx"]
        ],
        "imgcls predict (1 image, torch)": [
            *[exe, "predict", str(package), str(image), "--format", "jsonl", "--backend", "torch"]
        ],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import timm'": [sys.executable, "-c", "import timm"],
    }
    rows = []
    for name, cmd in commands.items():
        median, times = wall(cmd, args.repeats)
        target = TARGETS.get(name)
        rows.append({"command": name, "median_s": median, "times_s": times, "target_s": target})
        verdict = "" if target is None else ("  met" if median <= target else f"  MISSED (target {target} s)")
        print(f"{name:34s} {median:6.2f} s{verdict}")
    _common.write_json(args.out, {"machine": _common.machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
