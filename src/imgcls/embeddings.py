"""Image embeddings: the pre-logits features of a model package, a timm model or a CLIP image tower.

One backbone abstraction serves `imgcls embed` (streamed to Parquet), the few-shot heads (`train --head`) and the
near-duplicate check: every model here keeps timm's contract, so the embedding is always
`forward_head(forward_features(x), pre_logits=True)`, preprocessed by the model's own data config.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from imgcls.data.datamodule import IndexedDataset, collate_skip_bad, default_num_workers
from imgcls.data.sources import DataError, Sample
from imgcls.data.transforms import eval_transform

__all__ = ["Backbone", "EmbedResult", "embed_files", "embed_samples", "iter_embeddings", "load_backbone"]


@dataclass
class Backbone:
    """A model whose pre-logits features are the embedding, and the preprocessing it expects."""

    ref: str
    model: torch.nn.Module
    data_config: dict[str, Any]
    kind: str  # "package", "clip" or "timm"

    @property
    def architecture(self) -> str:
        return str((getattr(self.model, "pretrained_cfg", None) or {}).get("architecture", type(self.model).__name__))


def _is_package(ref: str) -> bool:
    return ref.startswith(("hf://", "git+")) or (Path(ref) / "config.json").is_file()


def load_backbone(
    ref: str | Path,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
) -> Backbone:
    """A model package (folder, `hf://`, `git+`), a CLIP model (see `imgcls.zeroshot.is_clip_ref`) or a timm name.

    Args:
        ref: the model.
        pretrained: timm names only: load the published weights (an embedding of random weights means little).
        weights: timm names only: a local weights file or folder instead.
        img_size: timm names only: input size.
        device: where to run it.
    """
    from imgcls.models import create_model, data_config
    from imgcls.zeroshot import image_tower, is_clip_ref, load_clip

    ref = str(ref)
    if _is_package(ref):
        from imgcls.package import load_package

        package = load_package(ref)
        backbone = Backbone(ref, package.model, package.data_config, "package")
    elif is_clip_ref(ref):
        model = image_tower(load_clip(ref))
        backbone = Backbone(ref, model, data_config(model), "clip")
    else:
        model = create_model(ref, 0, pretrained=pretrained and weights is None, weights=weights, img_size=img_size)
        backbone = Backbone(ref, model, data_config(model, input_size=img_size), "timm")
    backbone.model.eval().to(device)
    return backbone


def features(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """(N, D) float32 pre-logits features: what the classifier head sees."""
    return model.forward_head(model.forward_features(batch), pre_logits=True).flatten(1).float()


@torch.inference_mode()
def iter_embeddings(
    backbone: Backbone,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    description: str = "embedding",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices into `samples`, (n, D) embeddings) batch by batch; files that cannot be read are left out."""
    loader = DataLoader(
        IndexedDataset(samples, eval_transform(backbone.data_config)),
        batch_size=batch_size,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        collate_fn=collate_skip_bad,
    )
    device = next(backbone.model.parameters()).device
    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=len(samples))
        for batch in loader:
            if batch is None:
                continue
            images, _, index = batch
            indices = index.tolist()
            yield indices, features(backbone.model, images.to(device)).cpu()
            bar.update(task, completed=max(indices) + 1)


def embed_samples(
    backbone: Backbone,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    description: str = "embedding",
) -> tuple[torch.Tensor, list[int]]:
    """All embeddings in memory, (N, D), and the indices of the samples they belong to (unreadable ones left out)."""
    chunks, kept = [], []
    for indices, emb in iter_embeddings(
        backbone, samples, batch_size=batch_size, num_workers=num_workers, progress=progress, description=description
    ):
        chunks.append(emb)
        kept.extend(indices)
    if not chunks:
        raise DataError("no readable images to embed")
    return torch.cat(chunks), kept


@dataclass
class EmbedResult:
    out: Path
    count: int
    dim: int
    skipped: list[str] = field(default_factory=list)


def embed_files(
    backbone: Backbone,
    files: Sequence[str | Path],
    out: str | Path,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Stream embeddings of image files into a Parquet file: columns `path` and `embedding` (float32 list).

    Batches are written as they come (memory stays flat for any number of images) into a temporary file that
    replaces `out` only when complete. The file's metadata names the model and the embedding size.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("writing Parquet needs pyarrow: pip install 'imgcls[clip]' (or pyarrow)") from None
    out = Path(out)
    samples = [Sample(Path(f), 0) for f in files]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = None
    count, dim, kept = 0, 0, set()
    try:
        for indices, emb in iter_embeddings(
            backbone, samples, batch_size=batch_size, num_workers=num_workers, progress=progress
        ):
            dim = emb.shape[1]
            if writer is None:
                schema = pa.schema(
                    [("path", pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
                    metadata={
                        "imgcls.model": backbone.ref,
                        "imgcls.architecture": backbone.architecture,
                        "imgcls.dim": str(dim),
                    },
                )
                writer = pq.ParquetWriter(str(tmp), schema)
            flat = pa.array(emb.numpy().reshape(-1), type=pa.float32())
            table = pa.Table.from_arrays(
                [pa.array([str(samples[i].path) for i in indices]), pa.FixedSizeListArray.from_arrays(flat, dim)],
                schema=writer.schema,
            )
            writer.write_table(table)
            count += len(indices)
            kept.update(indices)
        if writer is None:
            raise DataError("no readable images to embed" + (f" (first: {files[0]})" if files else ""))
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    skipped = [str(s.path) for i, s in enumerate(samples) if i not in kept]
    return EmbedResult(out=out, count=count, dim=dim, skipped=skipped)
