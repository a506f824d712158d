"""`Classifier`: the two-line Python API over a model package."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from imgcls.backends import select_backend
from imgcls.data.images import IMAGE_EXTENSIONS, ImageLoadError, array_to_image, load_image, to_rgb
from imgcls.data.transforms import eval_transform
from imgcls.package import ModelPackage, load_package

ImageInput = str | Path | Image.Image | np.ndarray


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


class Classifier:
    """A trained image classifier.

    ```python
    clf = Classifier.load("runs/digits/model")
    clf("seven.png")  # [{"label": "7", "score": 0.98}, ...]
    ```
    """

    def __init__(self, package: ModelPackage, *, device: str | torch.device = "cpu", backend: str = "auto") -> None:
        self.package = package
        self.model = package.model
        self.labels = package.labels
        self.data_config = package.data_config
        self.device = torch.device(device)
        self.transform = eval_transform(self.data_config)
        self.backend = select_backend(backend, self.model, Path(package.path), tuple(self.data_config["input_size"]))
        # Fitted by `imgcls evaluate --calibrate`; dividing the logits by it calibrates every score.
        self.temperature = package.temperature

    @classmethod
    def load(cls, ref: str | Path, *, device: str | torch.device = "cpu", backend: str = "auto") -> Classifier:
        """Load a model package folder (e.g. `runs/NAME/model`).

        Args:
            ref: the package folder.
            device: where the torch backend runs (`cpu`, `cuda`).
            backend: `torch`, `onnx` (needs `imgcls export` first) or `auto` (the faster of the two here).
        """
        return cls(load_package(ref, device=device), device=device, backend=backend)

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
        if isinstance(item, torch.Tensor):
            return array_to_image(item.detach().cpu().numpy())
        raise TypeError(f"cannot classify a {type(item).__name__}; pass a path, a PIL image or a numpy array")

    # -- inference ------------------------------------------------------------------------------
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, float32, on the CPU) for a preprocessed batch, through the chosen backend."""
        return self.backend(batch)

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Raw logits for already-decoded RGB images, shape (N, num_classes)."""
        return self.forward(torch.stack([self.transform(img) for img in images]))

    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class probabilities: softmax over the logits, divided by the calibration temperature if any."""
        return (self.logits(images) / self.temperature).softmax(dim=-1)

    def _top(self, probs: torch.Tensor, top_k: int) -> list[list[dict[str, Any]]]:
        k = min(top_k, probs.shape[-1])
        scores, indices = probs.topk(k, dim=-1)
        return [
            [{"label": self.labels[i], "score": float(s)} for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True)]
            for row_s, row_i in zip(scores, indices, strict=True)
        ]

    def predict_images(self, images: Sequence[Image.Image], *, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k for already-decoded RGB images, one forward pass (the building block of serve and demo)."""
        if not images:
            return []
        return self._top(self.probabilities(images), top_k)

    def predict_iter(
        self, inputs: Iterable[ImageInput], *, top_k: int = 5, batch_size: int = 32, workers: int = 2
    ) -> Iterator[Prediction]:
        """Predict a stream of inputs in batches, yielding one `Prediction` per input in order.

        An input that cannot be read gets a `Prediction` with `error` set; the rest go on.
        """

        def decode(item: ImageInput) -> Image.Image | ImageLoadError | TypeError | ValueError:
            try:
                return self._to_image(item)
            except (ImageLoadError, TypeError, ValueError) as err:
                return err

        def name(item: ImageInput) -> str:
            return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__}>"

        pending: list[ImageInput] = []

        def flush() -> Iterator[Prediction]:
            decoded = list(pool.map(decode, pending))
            good = [(i, img) for i, img in enumerate(decoded) if isinstance(img, Image.Image)]
            tops = self._top(self.probabilities([img for _, img in good]), top_k) if good else []
            by_index = {i: top for (i, _), top in zip(good, tops, strict=True)}
            for i, item in enumerate(pending):
                if i in by_index:
                    yield Prediction(name(item), top=by_index[i])
                else:
                    err = decoded[i]
                    yield Prediction(
                        name(item), error=str(err) if isinstance(err, ImageLoadError) else f"{name(item)}: {err}"
                    )
            pending.clear()

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for item in inputs:
                pending.append(item)
                if len(pending) >= batch_size:
                    yield from flush()
            if pending:
                yield from flush()

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
