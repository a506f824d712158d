"""Peak memory of `imgcls evaluate` as the number of images grows (it should stay flat).

Writes N small PNG images in 10 class folders, saves an untrained LeNet-5 package, and evaluates it in a
fresh process for each N, reading the child's peak RSS. Run: `.venv/bin/python benchmarks/eval_memory.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import json, resource, sys, time
from imgcls import evaluate
t = time.perf_counter()
m = evaluate(sys.argv[1], sys.argv[2], out=sys.argv[3], progress=False, report=True)
print(json.dumps({"seconds": time.perf_counter() - t, "images": m["num_samples"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_images(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    from imgcls.models import create_model, data_config
    from imgcls.package import save_package

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = create_model("lenet5", 10)
        package = save_package(
            model.eval(), tmp / "model", labels=[str(i) for i in range(10)], data_config=data_config(model)
        )
        rows = []
        for count in args.counts:
            data = tmp / f"data{count}"
            make_images(data, count)
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(package), str(data), str(tmp / f"eval{count}")],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{row['images']:>7,} images: peak RSS {row['peak_rss_mb']:.0f} MB, {row['seconds']:.1f} s "
                f"({row['images'] / row['seconds']:.0f} img/s)",
                flush=True,
            )
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
        platform.processor(),
    )
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
