"""Inference backends behind `Classifier`: PyTorch (with the fast CPU modes where they are safe) and ONNX Runtime.

Both take a preprocessed float32 batch (N, C, H, W), a numpy array or a tensor, and return float32 logits
(N, num_classes): a tensor from PyTorch, and from ONNX Runtime the kind it was given. torch is imported only by
the PyTorch backend, so an ONNX prediction starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgcls.errors import BackendError

if TYPE_CHECKING:
    import torch

    from imgcls.package import ModelPackage

Batch = Any  # np.ndarray or torch.Tensor, (N, C, H, W) float32
ONNX_NAME = "model.onnx"
BACKENDS = ("auto", "torch", "onnx")


def native_bf16() -> bool:
    """True where the CPU runs bf16 matrix maths natively (AVX-512-BF16 or AMX); elsewhere it is emulated and slow."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _has_conv(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


class TorchBackend:
    """The PyTorch model, in channels_last for CNNs and bf16 autocast where native and top-1 agrees."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, input_size: tuple[int, int, int], *, fast: bool = True) -> None:
        import torch

        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.channels_last = fast and _has_conv(model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.bf16 = False
        if fast and (self.device.type == "cuda" or native_bf16()):
            self.bf16 = self._bf16_agrees(input_size)

    def _run(self, batch: Batch, bf16: bool) -> torch.Tensor:
        import torch

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        with torch.inference_mode():
            batch = batch.to(self.device)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                return self.model(batch).float().cpu()

    def _bf16_agrees(self, input_size: tuple[int, int, int]) -> bool:
        import torch

        # bf16 changes logits a little; use it only if the ranking of a probe batch is unchanged.
        probe = torch.randn(8, *input_size, generator=torch.Generator().manual_seed(0))
        return bool(torch.equal(self._run(probe, False).argmax(-1), self._run(probe, True).argmax(-1)))

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self._run(batch, self.bf16)


class OnnxBackend:
    """ONNX Runtime on the package's `model.onnx` (telemetry off)."""

    name = "onnx"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("the onnx backend needs onnxruntime: pip install 'imgcls[export]'") from None
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: no ONNX model; run `imgcls export {path.parent}` first")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        # Idle ORT threads spin by default, taking the cores that decode the next batch (predict_iter overlaps
        # the two): 50 -> 65 img/s for mobilenetv3 end to end on 2 cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, batch: Batch) -> Batch:
        if isinstance(batch, np.ndarray):
            return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        import torch

        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def _seconds_per_batch(backend: Callable[[Batch], Batch], batch: Batch, repeats: int = 3) -> float:
    backend(batch)  # warm-up: first runs allocate and pick kernels
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend(batch)
        times.append(time.perf_counter() - started)
    return min(times)  # the least disturbed run: on a shared machine the mean follows the neighbours' load


def select_backend(name: str, package: ModelPackage, *, device: str = "cpu") -> TorchBackend | OnnxBackend:
    """`torch`, `onnx`, or `auto`: time both on a small batch when the package has an ONNX model, keep the faster.

    Only the PyTorch backend touches `package.model`, so an ONNX choice never builds the network.
    """
    if name not in BACKENDS:
        raise BackendError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    input_size = tuple(package.data_config["input_size"])
    if name == "torch":
        return TorchBackend(package.model, input_size)
    onnx_path = Path(package.path) / ONNX_NAME
    if name == "onnx":
        return OnnxBackend(onnx_path)
    if not onnx_path.is_file() or not str(device).startswith("cpu"):
        return TorchBackend(package.model, input_size)
    key = _choice_key(onnx_path, input_size)
    cached = _read_choices().get(key)
    if cached == "onnx":
        try:
            return OnnxBackend(onnx_path)
        except BackendError:
            return TorchBackend(package.model, input_size)
    torch_backend = TorchBackend(package.model, input_size)
    if cached == "torch":
        return torch_backend
    try:
        onnx_backend = OnnxBackend(onnx_path)
    except BackendError:
        return torch_backend
    probe = np.random.default_rng(0).standard_normal((8, *input_size), dtype=np.float32)
    best = (
        onnx_backend
        if _seconds_per_batch(onnx_backend, probe) < _seconds_per_batch(torch_backend, probe)
        else torch_backend
    )
    _write_choice(key, best.name)
    return best


# `auto` times both backends, which costs seconds (ONNX Runtime's session, warm-up runs): more than predicting one
# image. The choice depends only on the model file and the machine, so it is remembered per (file, CPU, threads).
def _choices_path() -> Path:
    root = (
        os.environ.get("IMGCLS_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgcls"
    )
    return Path(root) / "backend-choices.json"


def _choice_key(onnx_path: Path, input_size: tuple[int, int, int]) -> str:
    stat = onnx_path.stat()
    cpu = platform.processor() or platform.machine()
    threads = os.environ.get("OMP_NUM_THREADS", "")  # both backends size their thread pools by it
    return (
        f"{onnx_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{tuple(input_size)}|{cpu}|{os.cpu_count()}|{threads}"
    )


def _read_choices() -> dict[str, str]:
    try:
        choices = json.loads(_choices_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def _write_choice(key: str, name: str) -> None:
    path = _choices_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        choices = {**_read_choices(), key: name}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(choices, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the next run the timing again
