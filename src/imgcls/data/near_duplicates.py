"""Near-duplicate images: pairs whose embeddings are almost the same direction (cosine similarity).

Exact hashing finds byte-identical copies only; a re-encoded, resized, cropped or lightly edited copy of a training
image in val/test leaks just the same. This embeds every image with a model (a small timm model by default, any
model package or CLIP tower) and reports the pairs at or above a similarity threshold, across splits (leakage) and
within a split, leaving out pairs the exact check already reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from imgcls.data.check import CheckReport, _display
from imgcls.data.sources import DataSplits

__all__ = ["DEFAULT_EMBED_MODEL", "DEFAULT_SIMILARITY", "find_near_duplicates"]

# Small, fast on a CPU, and its ImageNet features see content rather than pixels; needs its pretrained weights
# (hub or cache) unless another model is given.
DEFAULT_EMBED_MODEL = "mobilenetv3_small_100.lamb_in1k"
DEFAULT_SIMILARITY = 0.95
_BLOCK = 1024  # rows of the similarity matrix computed at once: memory stays at BLOCK x N floats


def find_near_duplicates(
    splits: DataSplits,
    report: CheckReport,
    *,
    model: str | Path = DEFAULT_EMBED_MODEL,
    similarity: float = DEFAULT_SIMILARITY,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Add near-duplicate pairs to `report` (from `check_splits` on the same, cleaned, splits).

    Args:
        splits: the dataset without its unreadable files.
        report: the exact check's report; its byte-identical groups are not reported again.
        model: embedding model: a timm name (pretrained weights), a model package, or a CLIP model.
        similarity: the least cosine similarity of a reported pair, in (0, 1].

    Returns:
        The same report, with `near_duplicates`, `cross_split_near_duplicates` and `near_duplicate_check` set.
    """
    from imgcls.embeddings import embed_samples, load_backbone

    if not 0.0 < similarity <= 1.0:
        raise ValueError(f"similarity: {similarity} must be in (0, 1]")
    tagged = [(split, sample) for split, samples in splits.splits().items() for sample in samples]
    backbone = load_backbone(model)
    embeddings, kept = embed_samples(
        backbone,
        [sample for _, sample in tagged],
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        description="near-duplicates",
    )
    embeddings = F.normalize(embeddings, dim=-1)
    names = [_display(tagged[i][1].path, splits.root) for i in kept]
    split_of = [tagged[i][0] for i in kept]
    exact_group = {path: n for n, group in enumerate(report.duplicates) for path in group}

    pairs: list[tuple[float, int, int]] = []
    for start in range(0, len(kept), _BLOCK):
        sims = embeddings[start : start + _BLOCK] @ embeddings.T
        rows, cols = torch.nonzero(sims >= similarity - 1e-6, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c <= i:
                continue  # each pair once, and never an image with itself
            a, b = names[i], names[c]
            if a in exact_group and exact_group.get(b) == exact_group[a]:
                continue  # byte-identical: already in `duplicates`
            pairs.append((min(1.0, float(sims[r, c])), i, c))
    pairs.sort(key=lambda p: (-p[0], names[p[1]], names[p[2]]))

    report.near_duplicates = [_pair(names, split_of, s, i, j) for s, i, j in pairs]
    report.cross_split_near_duplicates = [p for p in report.near_duplicates if p["splits"][0] != p["splits"][1]]
    report.near_duplicate_check = {
        "model": str(model),
        "architecture": backbone.architecture,
        "similarity": similarity,
        "images": len(kept),
    }
    return report


def _pair(names: list[str], splits: list[str], sim: float, i: int, j: int) -> dict[str, Any]:
    return {"paths": [names[i], names[j]], "splits": [splits[i], splits[j]], "similarity": round(sim, 4)}
