"""Soak (issue #11): many concurrent clients for a bounded time against a real `imgcls serve`, good and bad traffic.

Each client thread loops until the time is up, picking one kind of request at random:

- `good_jpeg`, `good_png`: a photo (multipart or raw body); the top-1 must be what `Classifier` gives offline.
- `corrupt`: half a JPEG or random bytes; `text`: a text file uploaded as an image. Expect a 4xx with a JSON error.
- `oversized`: a body over the server's `--max-bytes`, with Content-Length or chunked. Expect 413.
- `slow`: a good image trickled over a raw socket in small pieces with pauses shorter than the server's
  `--body-timeout`; it must finish with the right answer.
- `stalled`: part of a body, then silence longer than `--body-timeout`; the server must answer 408 and hang up.
- `dropped`: half a multipart body, then the client closes the socket.

The server's RSS is sampled every second from /proc. Pass/fail: no 5xx (seen by clients or in the server's log), no
wrong answer, no unexpected status or client-side timeout, RSS at the end within `--rss-margin-mb` of its level after
`--warmup` seconds, and `/healthz` ok afterwards. The script exits 1 when a criterion fails. The clients run on the
same machine as the server and take CPU from it.

Run: `python benchmarks/soak.py [--model test_resnet] [--seconds 60] [--clients 32]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import _common  # noqa: E402

# Relative weights of the request kinds: mostly good traffic, every kind of bad traffic present.
MIX = {
    "good_jpeg": 40,
    "good_png": 10,
    "corrupt": 10,
    "text": 5,
    "oversized": 10,
    "slow": 8,
    "stalled": 4,
    "dropped": 8,
}
BOUNDARY = "imgcls-soak-boundary"
# Two answers are the same when the top-1 label matches, or the offline scores of the two labels differ by less than
# this (a near tie of random weights: batching a photo with others may reorder labels whose scores differ by 1e-7).
TIE = 1e-5


@dataclass
class Good:
    """A good image: its bytes, media type and the offline top-5 it must get."""

    name: str
    data: bytes
    media_type: str
    offline: list[dict[str, Any]]


@dataclass
class Tally:
    """What the clients saw; one lock guards it (the threads add to it a few hundred times a second at most)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wrong: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, kind: str, status: int | str, problem: str | None = None, latency: float | None = None) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses[str(status)] += 1
            if problem is not None:
                self.wrong += problem.startswith("wrong answer")
                if len(self.failures) < 50:
                    self.failures.append(f"{kind}: {problem}")
                else:
                    self.failures[-1] = f"... and more; last: {kind}: {problem}"
            if latency is not None:
                self.latencies.append(latency)


def multipart(data: bytes, filename: str, media_type: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {media_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(port: int, length: int) -> bytes:
    return (
        f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any] | None]:
    """Status and JSON body of the one response on a `Connection: close` socket (read until the server closes)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not match:
        raise ConnectionError(f"no HTTP response ({len(raw)} bytes)")
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    return int(match.group(1)), payload


def check_top(got: dict[str, Any] | None, want: list[dict[str, Any]]) -> str | None:
    """None when `got` (a classify response for one image) gives the offline top-1, else what is wrong."""
    try:
        top = got["predictions"][0]["top"]  # type: ignore[index]
        label, score = top[0]["label"], float(top[0]["score"])
    except (KeyError, IndexError, TypeError, ValueError):
        return f"wrong answer: malformed response {str(got)[:200]}"
    offline = {row["label"]: row["score"] for row in want}
    if label == want[0]["label"] or want[0]["score"] - offline.get(label, -1.0) < TIE:
        if abs(score - offline[label]) < 1e-3:
            return None
    return f"wrong answer: got {label} {score:.6f}, offline {want[0]['label']} {want[0]['score']:.6f}"


class Clients:
    """The client threads and the requests they send."""

    def __init__(self, port: int, goods: list[Good], max_bytes: int, body_timeout: float, tally: Tally) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1/classify"
        self.goods = goods
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.tally = tally

    def run(self, seed: int, deadline: float) -> None:
        import httpx

        rng = random.Random(seed)
        kinds, weights = list(MIX), list(MIX.values())
        # One connection pool per thread: keep-alive, like a real client; the server must not mind reuse after errors.
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                try:
                    getattr(self, kind)(http, rng)
                except Exception as err:  # a client-side timeout or reset where none was expected: a failure
                    self.tally.add(kind, "client-error", f"{type(err).__name__}: {err}")

    def _expect(self, kind: str, r: Any, statuses: tuple[int, ...]) -> None:
        problem = None
        if r.status_code not in statuses:
            problem = f"status {r.status_code}, expected {statuses}: {r.text[:200]}"
        elif "error" not in r.json():
            problem = f"status {r.status_code} without a JSON error: {r.text[:200]}"
        self.tally.add(kind, r.status_code, problem)

    def _good(self, http: Any, rng: random.Random, kind: str, media_type: str) -> None:
        good = rng.choice([g for g in self.goods if g.media_type == media_type])
        started = time.perf_counter()
        if rng.random() < 0.5:
            r = http.post(self.url, files={"file": (good.name, good.data, good.media_type)})
        else:
            r = http.post(self.url, content=good.data, headers={"content-type": good.media_type})
        latency = time.perf_counter() - started
        if r.status_code != 200:
            self.tally.add(kind, r.status_code, f"status {r.status_code}: {r.text[:200]}", latency)
            return
        self.tally.add(kind, 200, check_top(r.json(), good.offline), latency)

    def good_jpeg(self, http: Any, rng: random.Random) -> None:
        self._good(http, rng, "good_jpeg", "image/jpeg")

    def good_png(self, http: Any, rng: random.Random) -> None:
        self._good(http, rng, "good_png", "image/png")

    def corrupt(self, http: Any, rng: random.Random) -> None:
        good = rng.choice(self.goods)
        data = good.data[: len(good.data) // 2] if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 50_000))
        r = http.post(self.url, files={"file": ("broken.jpg", data, "image/jpeg")})
        self._expect("corrupt", r, (415,))

    def text(self, http: Any, rng: random.Random) -> None:
        data = ("not an image, a shopping list\n" * rng.randint(1, 200)).encode()
        r = http.post(self.url, files={"file": ("notes.txt", data, "text/plain")})
        self._expect("text", r, (415,))

    def oversized(self, http: Any, rng: random.Random) -> None:
        size = self.max_bytes + rng.randint(1, self.max_bytes)
        if rng.random() < 0.5:
            r = http.post(self.url, content=bytes(size), headers={"content-type": "image/jpeg"})
        else:  # no Content-Length: the server must count the bytes as they come
            pieces = (bytes(65536) for _ in range(size // 65536 + 1))
            r = http.post(self.url, content=pieces, headers={"content-type": "image/jpeg"})
        self._expect("oversized", r, (413,))

    def _connect(self) -> socket.socket:
        # The socket timeout is the hang detector for raw clients: well past anything the server may take.
        return socket.create_connection(("127.0.0.1", self.port), timeout=self.body_timeout + 30)

    def slow(self, http: Any, rng: random.Random) -> None:
        good = rng.choice(self.goods)
        body = multipart(good.data, good.name, good.media_type)
        with self._connect() as sock:
            sock.sendall(request_head(self.port, len(body)))
            # 8 pieces, each pause well under the server's timeout: a slow but live client must be served.
            step = len(body) // 8 + 1
            for start in range(0, len(body), step):
                sock.sendall(body[start : start + step])
                time.sleep(self.body_timeout * rng.uniform(0.1, 0.4))
            status, payload = read_response(sock)
        problem = f"status {status}: {payload}" if status != 200 else check_top(payload, good.offline)
        self.tally.add("slow", status, problem)

    def stalled(self, http: Any, rng: random.Random) -> None:
        good = rng.choice(self.goods)
        body = multipart(good.data, good.name, good.media_type)
        with self._connect() as sock:
            sock.sendall(request_head(self.port, len(body)) + body[: len(body) // 3])
            started = time.monotonic()
            status, payload = read_response(sock)  # the server must speak first, and within its timeout
            waited = time.monotonic() - started
        problem = None
        if status != 408 or not payload or "error" not in payload:
            problem = f"status {status}, expected 408 with a JSON error: {payload}"
        elif waited > self.body_timeout + 10:
            problem = f"the 408 came after {waited:.1f} s; the timeout is {self.body_timeout} s"
        self.tally.add("stalled", status, problem)

    def dropped(self, http: Any, rng: random.Random) -> None:
        good = rng.choice(self.goods)
        body = multipart(good.data, good.name, good.media_type)
        with self._connect() as sock:
            sock.sendall(request_head(self.port, len(body)) + body[: len(body) // 2])
            time.sleep(rng.uniform(0, 0.2))
        # Nothing to read back; the server's log is checked for 5xx and tracebacks afterwards.
        self.tally.add("dropped", "closed")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while not stop.wait(1.0):
        try:
            samples.append((time.monotonic() - started, rss_mb(pid)))
        except (OSError, RuntimeError):
            return  # the server died; the health check afterwards says so


def make_goods(package: Path, backend: str, count: int) -> list[Good]:
    """JPEG photos and PNG copies of some, with the top-5 `Classifier` gives for each offline, one image at a time."""
    from PIL import Image

    from imgcls.data.images import decode_image
    from imgcls.predict import Classifier

    clf = Classifier.load(package, backend=backend)
    goods = []
    for i, path in enumerate(sorted(_common.make_photos(count).glob("*.jpg"))):
        goods.append(Good(path.name, path.read_bytes(), "image/jpeg", []))
        if i % 2 == 0:
            buf = io.BytesIO()
            Image.open(path).convert("RGB").save(buf, "PNG")
            goods.append(Good(path.stem + ".png", buf.getvalue(), "image/png", []))
    for good in goods:
        good.offline = clf.predict_images([decode_image(good.data, good.name)], top_k=5)[0]
    return goods


def start_server(args: argparse.Namespace, package: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    serve_args = [
        str(package), "--port", str(port), "--backend", args.backend,
        "--max-bytes", str(args.max_bytes), "--body-timeout", str(args.body_timeout),
    ]  # fmt: skip
    return _common.start_serve(serve_args, log, timeout=180)


def server_log_problems(text: str) -> dict[str, Any]:
    """5xx in uvicorn's access log, and tracebacks or errors the server logged."""
    statuses = Counter(re.findall(r'HTTP/1\.[01]" (\d{3})', text))
    return {
        "access_log_statuses": dict(sorted(statuses.items())),
        "access_log_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "error_lines": [line for line in text.splitlines() if line.startswith(("ERROR", "CRITICAL"))][:20],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="test_resnet", help="a timm model, saved once with random weights")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10, help="seconds (inside --seconds) before the RSS baseline")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--images", type=int, default=16, help="distinct photos (half also sent as PNG)")
    parser.add_argument("--max-bytes", type=int, default=512 * 1024, help="the server's body limit")
    parser.add_argument("--body-timeout", type=float, default=2.0, help="the server's body timeout, seconds")
    parser.add_argument("--rss-margin-mb", type=float, default=50, help="allowed RSS growth after warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak.json")
    args = parser.parse_args()
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")

    import httpx

    package = _common.make_package(args.model)
    goods = make_goods(package, args.backend, args.images)
    biggest = max(len(multipart(g.data, g.name, g.media_type)) for g in goods)
    if biggest >= args.max_bytes:
        parser.error(f"--max-bytes {args.max_bytes} is below the largest good request ({biggest} bytes)")

    port = _free_port()
    log = args.out.with_suffix(".server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(args, package, port, log)
    tally, samples, stop = Tally(), [], threading.Event()
    try:
        rss_idle = rss_mb(server.pid)
        sampler = threading.Thread(target=sample_rss, args=(server.pid, stop, samples), daemon=True)
        sampler.start()
        clients = Clients(port, goods, args.max_bytes, args.body_timeout, tally)
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [
            threading.Thread(target=clients.run, args=(args.seed * 1000 + i, deadline), daemon=True)
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            # A stalled request may start just before the deadline and take the body timeout to finish.
            t.join(timeout=max(0.0, deadline - time.monotonic()) + args.body_timeout + 90)
        elapsed = time.monotonic() - started
        hung = sum(t.is_alive() for t in threads)
        time.sleep(2)  # let the server finish what the last clients left behind before the end sample
        stop.set()
        sampler.join(timeout=5)
        rss_end = rss_mb(server.pid) if server.poll() is None else float("nan")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            health_status, health_body = health.status_code, health.json()
        except httpx.HTTPError as err:
            health_status, health_body = 0, {"error": repr(err)}
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    logged = server_log_problems(log.read_text(errors="replace"))
    after_warmup = [rss for t, rss in samples if t >= args.warmup]
    rss_warm = after_warmup[0] if after_warmup else float("nan")
    rss_peak = max([rss for _, rss in samples] + [rss_idle])
    lat = sorted(tally.latencies)
    client_5xx = sum(n for code, n in tally.statuses.items() if code.startswith("5"))
    result = {
        "requests": sum(tally.requests.values()),
        "requests_by_kind": dict(tally.requests),
        "statuses": dict(sorted(tally.statuses.items())),
        "req_s": sum(tally.requests.values()) / elapsed,
        "client_5xx": client_5xx,
        "wrong_answers": tally.wrong,
        "failures": len(tally.failures),
        "failure_examples": tally.failures[:20],
        "hung_clients": hung,
        "good_requests": len(lat),
        "good_p50_ms": 1000 * statistics.median(lat) if lat else None,
        "good_p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "good_max_ms": 1000 * lat[-1] if lat else None,
        "rss_mb": {"idle": rss_idle, "after_warmup": rss_warm, "peak": rss_peak, "end": rss_end},
        "rss_samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "healthz_after": {"status": health_status, "body": health_body, "process_alive": alive},
        **logged,
    }
    checks = {
        "zero 5xx": client_5xx == 0 and logged["access_log_5xx"] == 0,
        "no server tracebacks or errors": logged["tracebacks"] == 0 and not logged["error_lines"],
        "every good request answered correctly": tally.wrong == 0 and not tally.failures,
        "no hung client": hung == 0,
        "memory flat": rss_end - rss_warm <= args.rss_margin_mb,
        "healthy afterwards": alive and health_status == 200 and health_body.get("status") == "ok",
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    _common.write_json(args.out, {"machine": _common.machine(), "args": vars(args), "result": result})
    print(
        f"{result['requests']} requests in {elapsed:.0f} s ({result['req_s']:.1f}/s) from {args.clients} clients: "
        f"{dict(tally.requests)}\nstatuses {result['statuses']}; 5xx {client_5xx} (log: {logged['access_log_5xx']}); "
        f"wrong {tally.wrong}; failures {len(tally.failures)}; good p50 {result['good_p50_ms'] or 0:.0f} ms, "
        f"p99 {result['good_p99_ms'] or 0:.0f} ms\nRSS MB idle {rss_idle:.0f}, after warm-up {rss_warm:.0f}, "
        f"peak {rss_peak:.0f}, end {rss_end:.0f}; healthz {health_status} {health_body.get('status')}"
    )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    for line in tally.failures[:10]:
        print(f"    {line}")
    return 0 if result["passed"] else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
