"""`imgcls export`: ONNX (and INT8) copies of a model package, checked against PyTorch before they are kept.

Never ship a silently broken model: the ONNX model is compared with PyTorch on real images (max logit
difference, top-1 agreement) and the numbers are stored in the package; INT8 is refused when its top-1
drops more than `max_drop` points on labelled data.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls.backends import ONNX_NAME, OnnxBackend
from imgcls.data.images import IMAGE_EXTENSIONS, ImageLoadError, load_image
from imgcls.data.transforms import eval_transform
from imgcls.package import load_package, read_config, set_package_info

INT8_NAME = "model.int8.onnx"


class ExportError(RuntimeError):
    """An export that failed its check; nothing broken was kept."""


@dataclass
class ExportResult:
    onnx_path: Path
    check: dict[str, Any]
    int8_path: Path | None = None
    int8_check: dict[str, Any] = field(default_factory=dict)


def _images_in(folder: Path, limit: int, seed: int = 0) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    random.Random(seed).shuffle(files)  # a spread over classes, not the first folder only
    return files[:limit]


def sample_batch(package_dir: Path, data_cfg: dict[str, Any], folder: Path | None, limit: int = 32) -> torch.Tensor:
    """Preprocessed real images to check an export on: from `folder`, else the package's training data.

    Falls back to random noise only when no image can be found, and says so in the stored check.
    """
    candidates = [folder] if folder else []
    info = read_config(package_dir).get("imgcls", {})
    if info.get("training", {}).get("data"):
        candidates.append(Path(info["training"]["data"]))
    transform = eval_transform(data_cfg)
    for candidate in candidates:
        if candidate is None or not candidate.is_dir():
            continue
        tensors = []
        for path in _images_in(candidate, limit * 2):
            try:
                tensors.append(transform(load_image(path)))
            except ImageLoadError:
                continue
            if len(tensors) == limit:
                break
        if tensors:
            return torch.stack(tensors)
    return torch.randn(8, *data_cfg["input_size"], generator=torch.Generator().manual_seed(0))


def _atomic_move(src: Path, dst: Path) -> None:
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)


def export_onnx(
    model_dir: str | Path,
    *,
    opset: int = 17,
    int8: bool = False,
    calibration: str | Path | None = None,
    data: str | Path | None = None,
    max_drop: float = 1.0,
    progress: bool = True,
) -> ExportResult:
    """Write `model.onnx` (dynamic batch) into the package, checked against PyTorch; optionally `model.int8.onnx`.

    Args:
        model_dir: the model package folder.
        opset: ONNX opset.
        int8: also write a statically quantised INT8 model (onnxruntime's quantisation, QDQ, per channel).
        calibration: folder of images to calibrate INT8 activations on (default: `data`, else the training data).
        data: labelled images (a dataset root or class folders); with `int8`, top-1 of both models is measured
            on it and the INT8 model is refused when it drops more than `max_drop` points.
        max_drop: the largest top-1 drop (in points) INT8 may cost.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    model_dir = Path(model_dir)
    package = load_package(model_dir)
    model = package.model.eval()
    data_cfg = package.data_config
    data_folder = _resolve_folder(data)
    batch = sample_batch(model_dir, data_cfg, data_folder)
    used_noise = not (data_folder or Path(package.info.get("training", {}).get("data", "/nonexistent")).is_dir())

    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".export-") as tmp:
        tmp_onnx = Path(tmp) / ONNX_NAME
        # The fused attention fast path of nn.MultiheadAttention (CLIP towers use it) has no ONNX symbolic; the
        # plain path computes the same thing in exportable operators.
        fastpath = torch.backends.mha.get_fastpath_enabled()
        with torch.inference_mode(False), torch.no_grad():
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                torch.onnx.export(
                    model,
                    batch[:1],
                    str(tmp_onnx),
                    dynamo=False,  # one self-contained file; the dynamo exporter splits weights into .onnx.data
                    opset_version=opset,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                )
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)
            reference = model(batch).float()
        onnx_logits = OnnxBackend(tmp_onnx)(batch)
        check = {
            "opset": opset,
            "images": int(batch.shape[0]),
            "images_are_noise": used_noise,
            "max_abs_logit_diff": float((onnx_logits - reference).abs().max()),
            "top1_agreement": float((onnx_logits.argmax(-1) == reference.argmax(-1)).float().mean()),
        }
        if check["top1_agreement"] < 1.0 or check["max_abs_logit_diff"] > 1e-3:
            raise ExportError(
                f"{model_dir}: the ONNX model disagrees with PyTorch (max logit difference "
                f"{check['max_abs_logit_diff']:.2e}, top-1 agreement {check['top1_agreement']:.1%}); nothing was written"
            )
        _atomic_move(tmp_onnx, model_dir / ONNX_NAME)
        result = ExportResult(onnx_path=model_dir / ONNX_NAME, check=check)
        exports: dict[str, Any] = {"onnx": check}

        if int8:
            calib_folder = _resolve_folder(calibration) or data_folder
            calib = sample_batch(model_dir, data_cfg, calib_folder, limit=64)
            tmp_int8 = Path(tmp) / INT8_NAME
            quantize_int8(model_dir / ONNX_NAME, tmp_int8, calib)
            int8_logits = OnnxBackend(tmp_int8)(batch)
            int8_check: dict[str, Any] = {
                "calibration_images": int(calib.shape[0]),
                "top1_agreement_with_fp32": float((int8_logits.argmax(-1) == reference.argmax(-1)).float().mean()),
            }
            if data is not None:
                fp32_top1, int8_top1, n = _top1_on_data(model_dir, data, tmp_int8)
                int8_check.update({"data_images": n, "top1_fp32": fp32_top1, "top1_int8": int8_top1})
                drop = 100 * (fp32_top1 - int8_top1)
                int8_check["top1_drop_points"] = drop
                if drop > max_drop:
                    set_package_info(model_dir, exports=exports)
                    raise ExportError(
                        f"INT8 top-1 is {drop:.2f} points below fp32 ({int8_top1:.2%} vs {fp32_top1:.2%} on {n} images), "
                        f"more than --max-drop {max_drop}; {INT8_NAME} was not written (model.onnx was)"
                    )
            _atomic_move(tmp_int8, model_dir / INT8_NAME)
            exports["int8"] = int8_check
            result.int8_path, result.int8_check = model_dir / INT8_NAME, int8_check
    set_package_info(model_dir, exports=exports)
    return result


def _resolve_folder(ref: str | Path | None) -> Path | None:
    if ref is None:
        return None
    path = Path(ref)
    if not path.is_dir():
        raise ExportError(f"{path}: not a folder of images")
    return path


class _CalibrationReader:
    """Feeds calibration batches to onnxruntime's static quantiser."""

    def __init__(self, input_name: str, batch: torch.Tensor, batch_size: int = 8) -> None:
        self.batches: Iterator[np.ndarray] = iter(
            [batch[i : i + batch_size].numpy().astype(np.float32) for i in range(0, len(batch), batch_size)]
        )
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        nxt = next(self.batches, None)
        return None if nxt is None else {self.input_name: nxt}


def quantize_int8(onnx_path: Path, out_path: Path, calibration: torch.Tensor) -> None:
    """Static INT8 quantisation (QDQ, per-channel weights) calibrated on real preprocessed images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_suffix(".prep.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.inner = _CalibrationReader("input", calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.inner.get_next()

    quantize_static(
        str(prepared),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink(missing_ok=True)


def _top1_on_data(model_dir: Path, data: str | Path, int8_path: Path) -> tuple[float, float, int]:
    """Top-1 of the fp32 (PyTorch) and INT8 (ONNX Runtime) models on labelled images."""
    from imgcls.data.sources import load_labeled
    from imgcls.evaluation import collect_predictions
    from imgcls.predict import Classifier

    clf = Classifier.load(model_dir, backend="torch")
    samples = load_labeled(data, clf.labels)
    fp32 = collect_predictions(clf, samples, progress=False, num_workers=0)
    clf.backend = OnnxBackend(int8_path)
    q = collect_predictions(clf, samples, progress=False, num_workers=0)
    top1 = lambda p: float((p.logits.argmax(-1) == p.targets).float().mean())  # noqa: E731
    return top1(fp32), top1(q), len(fp32.paths)


def summarise(result: ExportResult) -> Sequence[str]:
    c = result.check
    lines = [
        f"wrote {result.onnx_path}: max |logit difference| vs PyTorch {c['max_abs_logit_diff']:.2e}, "
        f"top-1 agreement {c['top1_agreement']:.1%} on {c['images']} {'noise inputs' if c['images_are_noise'] else 'images'}"
    ]
    if result.int8_path:
        q = result.int8_check
        line = f"wrote {result.int8_path}: top-1 agreement with fp32 {q['top1_agreement_with_fp32']:.1%}"
        if "top1_int8" in q:
            line += f"; top-1 {q['top1_fp32']:.2%} (fp32) → {q['top1_int8']:.2%} (int8) on {q['data_images']} images"
        lines.append(line)
    return lines
