"""`Classifier`: the two-line Python API over a model package."""

from __future__ import annotations

import functools
import glob
import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from imgcls.backends import select_backend
from imgcls.data.images import IMAGE_EXTENSIONS, ImageLoadError, array_to_image, load_image, to_rgb
from imgcls.data.preprocess import EvalPreprocess
from imgcls.package import ModelPackage, load_package

if TYPE_CHECKING:
    import torch

# torch is imported only where a tensor is really needed (the PyTorch backend, tensor inputs, `logits`): with an
# ONNX model, `imgcls predict` never pays the seconds torch and timm take to import.

ImageInput = str | Path | Image.Image | np.ndarray
# A decoded batch: uint8 pixels of the good inputs (or their tensors, off the fast path) + {index: error}.
_Decoded = tuple[np.ndarray | list[Any] | None, list[int], dict[int, str]]


@dataclass
class Prediction:
    """Top-k of one input, or the reason it could not be read."""

    source: str
    top: list[dict[str, Any]] | None = None
    error: str | None = None


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files, folders (recursively, image extensions only) and glob patterns → a sorted list of files.

    A name that matches nothing is kept, so the caller reports it as a per-file error instead of
    silently predicting on fewer images than asked.
    """
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif not path.exists() and any(ch in str(item) for ch in "*?["):
            matches = sorted(glob.glob(str(item), recursive=True))
            out.extend(Path(m) for m in matches if Path(m).is_file()) if matches else out.append(path)
        else:
            out.append(path)
    return out


def _name(item: ImageInput) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__}>"


def _decode_files(paths: list[str], pre: EvalPreprocess) -> _Decoded:
    """Decode, resize and crop image files to uint8 pixels; runs in a worker process (Pillow and NumPy only)."""
    pixels, good, errors = [], [], {}
    for i, path in enumerate(paths):
        try:
            pixels.append(pre.pixels(load_image(path, draft=pre.draft_size)))
            good.append(i)
        except ImageLoadError as err:
            errors[i] = str(err)
        except Exception as err:  # an odd file must cost only its own prediction
            errors[i] = f"{path}: {err}"
    return (np.stack(pixels) if pixels else None), good, errors


def _decode_pool(workers: int) -> Executor:
    # fork: the workers start in milliseconds and need nothing but Pillow; they never touch torch's threads.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _chunks(items: Iterable[ImageInput], size: int) -> Iterator[list[ImageInput]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, max(1, size))):
        yield chunk


class Classifier:
    """A trained image classifier.

    ```python
    clf = Classifier.load("runs/digits/model")
    clf("seven.png")  # [{"label": "7", "score": 0.98}, ...]
    ```
    """

    def __init__(self, package: ModelPackage, *, device: str | torch.device = "cpu", backend: str = "auto") -> None:
        self.package = package
        self.labels = package.labels
        self.data_config = package.data_config
        self.device = device
        # The same pixels as `transform`, split so decoding can run in worker processes (None: unusual config).
        self.preprocess = EvalPreprocess.from_config(self.data_config)
        self.backend = select_backend(backend, package, device=str(device))
        # Fitted by `imgcls evaluate --calibrate`; dividing the logits by it calibrates every score.
        self.temperature = package.temperature
        # Multi-label packages carry one decision threshold per class, tuned on validation images.
        thresholds = package.info.get("thresholds") if package.task == "multilabel" else None
        self.thresholds = (
            np.asarray(thresholds or [0.5] * len(self.labels), dtype=np.float32)
            if package.task == "multilabel"
            else None
        )

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch network (built on first use when the ONNX backend runs the predictions)."""
        return self.package.model

    @functools.cached_property
    def transform(self) -> Any:
        """timm's eval transform (PIL image → normalised tensor) from the package's preprocessing."""
        from imgcls.data.transforms import eval_transform

        return eval_transform(self.data_config)

    @classmethod
    def load(
        cls, ref: str | Path, *, device: str | torch.device = "cpu", backend: str = "auto", token: str | None = None
    ) -> Classifier:
        """Load a model package: a folder, `hf://ORG/NAME[@VERSION]` or `git+URL[@VERSION]` (fetched once, cached).

        Args:
            ref: the package folder or hub reference.
            device: where the torch backend runs (`cpu`, `cuda`).
            backend: `torch`, `onnx` (needs `imgcls export` first) or `auto` (the faster of the two here).
            token: access token for a private repository (default: HF_TOKEN / MODELSCOPE_API_TOKEN / login).
        """
        # lazy: with the ONNX backend the PyTorch network is never built (nor torch and timm imported)
        return cls(load_package(ref, device=device, token=token, lazy=True), device=device, backend=backend)

    @classmethod
    def zero_shot(
        cls,
        clip: str | Path,
        labels: str | Path | Sequence[str],
        *,
        templates: Sequence[str] | None = None,
        pretrained: str | None = None,
        out: str | Path | None = None,
        device: str | torch.device = "cpu",
        backend: str = "auto",
    ) -> Classifier:
        """A zero-shot classifier: CLIP matches each image with the labels' text, no training images needed.

        ```python
        clf = Classifier.zero_shot("models/clip-vit-b-32", ["cat", "dog", "zebra: a horse with black and white stripes"])
        ```

        Args:
            clip: a folder with `open_clip_config.json` and weights, `hf-hub:ORG/NAME` (online), or an open_clip
                model name with `pretrained` (a tag or a local checkpoint file).
            labels: names, `name: description` entries, a comma-separated string, a text file (one per line) or a
                folder of class folders (its class names).
            templates: prompt templates, each with one `{}` for the label (default: an ensemble of eight).
            pretrained: open_clip pretrained tag or checkpoint file, when `clip` is a model name.
            out: also save the model package here (then predict/evaluate/serve/demo/push take the folder).
            device: where the torch backend runs.
            backend: `torch`, `onnx` (after `imgcls export OUT`) or `auto`.
        """
        from imgcls.zeroshot import zero_shot_package

        package = zero_shot_package(clip, labels, templates=templates, pretrained=pretrained, out=out)
        package.model.to(device)
        return cls(package, device=device, backend=backend)

    @property
    def task(self) -> str:
        return self.package.task

    # -- inputs ---------------------------------------------------------------------------------
    def _to_image(self, item: ImageInput) -> Image.Image:
        if isinstance(item, (str, Path)):
            return load_image(item)
        if isinstance(item, Image.Image):
            return to_rgb(item)
        if isinstance(item, np.ndarray):
            return array_to_image(item)
        if type(item).__module__.startswith("torch") and hasattr(item, "detach"):  # a tensor, without importing torch
            return array_to_image(item.detach().cpu().numpy())
        raise TypeError(f"cannot classify a {type(item).__name__}; pass a path, a PIL image or a numpy array")

    # -- inference ------------------------------------------------------------------------------
    def forward(self, batch: Any) -> Any:
        """Logits (N, num_classes, float32, on the CPU) for a preprocessed batch, through the chosen backend.

        A tensor in gives a tensor out; a numpy batch gives numpy from ONNX Runtime and a tensor from PyTorch.
        """
        return self.backend(batch)

    def _batch(self, images: Sequence[Image.Image]) -> Any:
        if self.preprocess is not None:
            return self.preprocess(list(images))
        import torch

        return torch.stack([self.transform(img) for img in images])

    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Raw logits for already-decoded RGB images, a tensor of shape (N, num_classes)."""
        import torch

        out = self.forward(self._batch(images))
        return torch.from_numpy(out) if isinstance(out, np.ndarray) else out

    def scores(self, logits: Any) -> Any:
        """Scores from logits (tensor or numpy, the same kind back): a sigmoid per class (multi-label), else
        softmax at the calibration temperature."""
        if isinstance(logits, np.ndarray):
            logits = logits.astype(np.float32, copy=False)
            if self.thresholds is not None:
                return 1.0 / (1.0 + np.exp(-logits))
            z = logits / np.float32(self.temperature)
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            return z / z.sum(axis=-1, keepdims=True)
        if self.thresholds is not None:
            return logits.sigmoid()
        return (logits / self.temperature).softmax(dim=-1)

    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class scores for decoded images, a tensor (softmax, or one sigmoid per class for multi-label models)."""
        return self.scores(self.logits(images))

    def _top(self, probs: Any, top_k: int) -> list[list[dict[str, Any]]]:
        probs = probs if isinstance(probs, np.ndarray) else probs.detach().cpu().numpy()
        if self.thresholds is not None:
            return self._multilabel(probs, top_k)
        k = min(top_k, probs.shape[-1])
        # a stable sort of the negated scores: equal scores keep the label order
        indices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        return [
            [{"label": self.labels[i], "score": float(row[i])} for i in row_i.tolist()]
            for row, row_i in zip(probs, indices, strict=True)
        ]

    def _multilabel(self, probs: np.ndarray, top_k: int) -> list[list[dict[str, Any]]]:
        """Every label at or above its threshold (`positive: true`), then the next best up to top_k to inspect."""
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable").tolist()
            positive = [i for i in order if row[i] >= self.thresholds[i]]
            shown = positive + [i for i in order if i not in positive][: max(0, top_k - len(positive))]
            out.append([{"label": self.labels[i], "score": float(row[i]), "positive": i in positive} for i in shown])
        return out

    def positive_labels(self, images: Sequence[Image.Image]) -> list[list[str]]:
        """Multi-label: the labels each image has (scores at or above their thresholds)."""
        return [[t["label"] for t in top if t.get("positive")] for top in self.predict_images(images, top_k=0)]

    def predict_images(self, images: Sequence[Image.Image], *, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k for already-decoded RGB images, one forward pass (the building block of serve and demo)."""
        if not images:
            return []
        return self._top(self.scores(self.forward(self._batch(images))), top_k)

    def predict_iter(
        self, inputs: Iterable[ImageInput], *, top_k: int = 5, batch_size: int = 32, workers: int | None = None
    ) -> Iterator[Prediction]:
        """Predict a stream of inputs in batches, yielding one `Prediction` per input in order.

        Files are decoded, resized and cropped in `workers` processes (default: one per core) while the model
        runs on the batch before, with JPEG draft decoding; a single batch, and in-memory images, are decoded
        here. An input that cannot be read gets a `Prediction` with `error` set; the rest go on.
        """
        workers = max(1, os.cpu_count() or 1) if workers is None else max(0, workers)
        batches = _chunks(inputs, batch_size)
        first = next(batches, None)
        if first is None:
            return
        second = next(batches, None)
        use_pool = second is not None and workers > 0 and self.preprocess is not None
        batches = itertools.chain([first], [] if second is None else [second], batches)
        pool: Executor = _decode_pool(workers) if use_pool else ThreadPoolExecutor(max_workers=1)
        in_flight: deque[tuple[list[ImageInput], Future[_Decoded]]] = deque()
        try:
            with pool:
                for batch in batches:
                    in_flight.append((batch, self._submit(pool, batch, use_pool)))
                    # Keep the workers a batch or two ahead of the model, and no more (flat memory).
                    if len(in_flight) > (workers if use_pool else 0):
                        yield from self._finish(*in_flight.popleft(), top_k)
                while in_flight:
                    yield from self._finish(*in_flight.popleft(), top_k)
        finally:
            for _, future in in_flight:
                future.cancel()

    def _submit(self, pool: Executor, batch: list[ImageInput], use_pool: bool) -> Future[_Decoded]:
        if use_pool and all(isinstance(item, (str, Path)) for item in batch):
            return pool.submit(_decode_files, [str(item) for item in batch], self.preprocess)
        future: Future[_Decoded] = Future()
        future.set_result(self._decode_here(batch))
        return future

    def _decode_here(self, batch: list[ImageInput]) -> _Decoded:
        pixels, good, errors = [], [], {}
        for i, item in enumerate(batch):
            try:
                if self.preprocess is None:
                    pixels.append(self.transform(self._to_image(item)))
                elif isinstance(item, (str, Path)):
                    pixels.append(self.preprocess.pixels(load_image(item, draft=self.preprocess.draft_size)))
                else:
                    pixels.append(self.preprocess.pixels(self._to_image(item)))
                good.append(i)
            except ImageLoadError as err:
                errors[i] = str(err)
            except (TypeError, ValueError) as err:
                errors[i] = f"{_name(item)}: {err}"
        if self.preprocess is None or not pixels:
            return (pixels or None), good, errors
        return np.stack(pixels), good, errors

    def _finish(self, batch: list[ImageInput], future: Future[_Decoded], top_k: int) -> Iterator[Prediction]:
        pixels, good, errors = future.result()
        tops: dict[int, list[dict[str, Any]]] = {}
        if pixels is not None:
            if isinstance(pixels, np.ndarray):
                inputs = self.preprocess.normalize(pixels)
            else:  # timm's transform made tensors: torch is loaded already
                import torch

                inputs = torch.stack(pixels)
            probs = self.scores(self.forward(inputs))
            tops = dict(zip(good, self._top(probs, top_k), strict=True))
        for i, item in enumerate(batch):
            if i in tops:
                yield Prediction(_name(item), top=tops[i])
            else:
                yield Prediction(_name(item), error=errors[i])

    def __call__(
        self, inputs: ImageInput | Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 32
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Top-k labels and scores.

        Args:
            inputs: one image (path, PIL image or HxWxC array) or a list of them (batched internally).
            top_k: how many labels to return per image.
            batch_size: images per forward pass.

        Returns:
            For one image, `[{"label": ..., "score": ...}, ...]`; for a list, one such list per image.

        Raises:
            ImageLoadError: an input file is not a readable image (the message names it).
        """
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        results = []
        for pred in self.predict_iter(items, top_k=top_k, batch_size=batch_size):
            if pred.error is not None:
                raise ImageLoadError(pred.source, pred.error.removeprefix(f"{pred.source}: "))
            results.append(pred.top)
        return results[0] if single else results
