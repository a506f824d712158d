"""Serve: requests/s and p50/p99 latency with 1, 8 and 32 concurrent clients against a real `imgcls serve`.

Each request posts one JPEG photo (raw body) to `/v1/classify`. Baselines, measured in this process before the
server starts: offline batched throughput (`Classifier.predict_iter` over the same files, batch 32) and calling
the model once per request (`Classifier.predict_images([image])`, one image at a time, decode included).
Target (issue #6): at 32 clients >= 70% of offline batched throughput, no errors. The clients run on the same
machine as the server and take CPU from it; the JSON says how many cores there were.

Run: `python benchmarks/serve.py [--model mobilenetv3_large_100] [--clients 1 8 32] [--requests 256]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import _common  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baselines(package: Path, files: list[Path], backend: str) -> dict[str, float]:
    from imgcls.data.images import load_image
    from imgcls.predict import Classifier

    clf = Classifier.load(package, backend=backend)
    list(clf.predict_iter(files[:32]))  # warm-up
    started = time.perf_counter()
    list(clf.predict_iter(files, batch_size=32))
    batched = len(files) / (time.perf_counter() - started)
    count = min(len(files), 64)
    started = time.perf_counter()
    for f in files[:count]:
        clf.predict_images([load_image(f)])
    single = count / (time.perf_counter() - started)
    return {"offline_batched_img_s": batched, "once_per_request_img_s": single}


async def load(url: str, bodies: list[bytes], clients: int, requests: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            try:
                r = await http.post(url, content=bodies[i % len(bodies)], headers={"content-type": "image/jpeg"})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "req_s": requests / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenetv3_large_100")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=256, help="requests per client count")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = parser.parse_args()

    package = _common.make_package(args.model)
    if args.backend in ("auto", "onnx"):
        _common.export_onnx(package)
    files = sorted(_common.make_photos(args.images).glob("*.jpg"))
    base = baselines(package, files, args.backend)
    print(f"offline batched: {base['offline_batched_img_s']:.1f} img/s; ", end="")
    print(f"once per request: {base['once_per_request_img_s']:.1f} img/s")

    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="imgcls-serve-bench-")) / "serve.log"
    server = _common.start_serve([str(package), "--port", str(port), "--backend", args.backend], log, timeout=120)
    rows = []
    try:
        url = f"http://127.0.0.1:{port}/v1/classify"
        bodies = [f.read_bytes() for f in files]
        asyncio.run(load(url, bodies, 4, 16))  # warm-up
        for clients in args.clients:
            row = asyncio.run(load(url, bodies, clients, max(args.requests, clients)))
            row["of_offline_batched"] = row["req_s"] / base["offline_batched_img_s"]
            row["x_once_per_request"] = row["req_s"] / base["once_per_request_img_s"]
            rows.append(row)
            print(
                f"{clients:3d} clients: {row['req_s']:6.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  "
                f"{row['of_offline_batched']:.0%} of offline batched, {row['x_once_per_request']:.2f}x once-per-request"
            )
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    _common.write_json(args.out, {"machine": _common.machine(), "args": vars(args), "baselines": base, "rows": rows})


if __name__ == "__main__":
    main()
