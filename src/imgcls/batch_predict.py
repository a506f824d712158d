"""Batch inference at scale: predictions into a Parquet folder that survives crashes and splits across processes.

`imgcls predict MODEL INPUTS --out predictions.parquet` writes `predictions.parquet/part-SSSSS-NNNNNN.parquet`,
one file per `part_size` images. Each part is written under a hidden temporary name and renamed into place, so a
process killed at any moment leaves only complete parts; a restart reads the `path` column of the parts there and
predicts only what is missing. Every image gets exactly one row: its top-k, or the reason it could not be read.

Work splits by `shard_index` of `num_shards` (or torchrun's / SLURM's rank and world size): files by their position
in the sorted input list, tar shards whole. Any number of processes, on one machine or many sharing the output
folder, can run at once; each writes parts under its own index. `pyarrow.parquet.read_table(out)` or
`pandas.read_parquet(out)` reads the whole folder as one table.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.predict import Classifier, ImageInput, Prediction

PART_RE = re.compile(r"^part-(\d{5})-(\d{6})\.parquet$")


@dataclass
class BatchResult:
    """What one `predict_to_parquet` call did."""

    out: Path
    done_before: int
    predicted: int
    failed: int
    parts_written: int
    shard_index: int
    num_shards: int
    seconds: float


def rank_and_world(num_shards: int | None = None, shard_index: int | None = None) -> tuple[int, int]:
    """This process's share of the work: the arguments when given, else torchrun's or SLURM's rank, else 0 of 1."""
    if num_shards is None:
        for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            if rank_var in os.environ and world_var in os.environ:
                return int(os.environ[rank_var]), int(os.environ[world_var])
        return 0, 1
    index = 0 if shard_index is None else shard_index
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"--shard-index {index} must be in 0..{num_shards - 1} (--num-shards {num_shards})")
    return index, num_shards


def parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("score", pa.float32()),
            ("top_labels", pa.list_(pa.string())),
            ("top_scores", pa.list_(pa.float32())),
            ("error", pa.string()),
        ]
    )


def done_sources(out: Path) -> set[str]:
    """The `path` of every row in the complete parts under `out` (what a restart must not predict again)."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    if not out.is_dir():
        return done
    for part in sorted(out.iterdir()):
        if not PART_RE.match(part.name):
            continue
        try:
            column = pq.read_table(part, columns=["path"]).column("path").to_pylist()
        except Exception as err:  # parts are renamed into place whole, so this is damage from outside
            raise ValueError(
                f"{part}: not a readable Parquet part ({err}); delete it to predict its images again"
            ) from None
        done.update(column)
    return done


class _PartWriter:
    """Buffers rows and writes them as numbered Parquet parts: temporary name, fsync, rename."""

    def __init__(self, out: Path, shard_index: int, part_size: int) -> None:
        self.out = out
        self.prefix = f"part-{shard_index:05d}-"
        self.part_size = max(1, part_size)
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        out.mkdir(parents=True, exist_ok=True)
        # Temporaries of an earlier run of this same index died with it; other indices' may be in flight.
        for stale in out.glob(f".{self.prefix}*.tmp"):
            stale.unlink(missing_ok=True)
        numbers = [
            int(m.group(2)) for p in out.iterdir() if (m := PART_RE.match(p.name)) and p.name.startswith(self.prefix)
        ]
        self.next_number = max(numbers, default=-1) + 1

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"{self.prefix}{self.next_number:06d}.parquet"
        tmp = self.out / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(self.rows, schema=parquet_schema()), tmp)
        with open(tmp, "rb") as f:  # on disk before the name says it is complete
            os.fsync(f.fileno())
        os.replace(tmp, self.out / name)
        self.next_number += 1
        self.written += 1
        self.rows = []


def _row(source: str, pred: Prediction) -> dict[str, Any]:
    top = pred.top or []
    return {
        "path": source,
        "label": top[0]["label"] if top else None,
        "score": top[0]["score"] if top else None,
        "top_labels": [t["label"] for t in top] if pred.top is not None else None,
        "top_scores": [t["score"] for t in top] if pred.top is not None else None,
        "error": pred.error,
    }


def _predict_pairs(
    clf: Classifier, pairs: Iterable[tuple[str, ImageInput]], *, top_k: int, batch_size: int, workers: int | None
) -> Iterator[tuple[str, Prediction]]:
    """`Classifier.predict_iter` over (source, input) pairs, keeping each prediction with its source name."""
    # predict_iter yields in input order, so the names wait in a queue only as long as their batch is in flight.
    sources: deque[str] = deque()

    def inputs() -> Iterator[ImageInput]:
        for source, item in pairs:
            sources.append(source)
            yield item

    for pred in clf.predict_iter(inputs(), top_k=top_k, batch_size=batch_size, workers=workers):
        yield sources.popleft(), pred


def _predict_shards(
    clf: Classifier, shards: list[Any], done: set[str], *, top_k: int, batch_size: int, workers: int | None
) -> Iterator[tuple[str, Prediction]]:
    """Stream tar shards through DataLoader workers (each decodes whole shards) and the model, in batches."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from imgcls.data.shards import WholeShards

    if not shards:
        return
    fast = clf.preprocess is not None
    load = clf.preprocess.pixels if fast else clf.transform
    workers = min(os.cpu_count() or 1, len(shards)) if workers is None else min(workers, len(shards))
    loader = DataLoader(
        WholeShards(shards, load, skip=done), batch_size=batch_size, num_workers=workers, collate_fn=list
    )
    with torch.inference_mode():
        for batch in loader:
            good = [item for item in batch if item.error is None]
            tops = []
            if good:
                pixels = [item.image for item in good]
                tensor = clf.preprocess.normalize(np.stack(pixels)) if fast else torch.stack(pixels)
                tops = clf._top(clf.scores(clf.forward(tensor)), top_k)
            by_source = {item.source: top for item, top in zip(good, tops, strict=True)}
            for item in batch:
                if item.error is None:
                    yield item.source, Prediction(item.source, top=by_source[item.source])
                else:
                    yield item.source, Prediction(item.source, error=item.error)


def predict_to_parquet(
    clf: Classifier,
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    top_k: int = 5,
    batch_size: int = 32,
    workers: int | None = None,
    part_size: int = 4096,
    num_shards: int | None = None,
    shard_index: int | None = None,
) -> BatchResult:
    """Predict files, folders, globs, tar shards or shard manifests into a Parquet folder, resuming what is there.

    Args:
        clf: the classifier.
        inputs: image files, folders, glob patterns; or shard manifests (`manifest.json`), `.tar` shards and
            fsspec URLs of either (`s3://`, `https://`, `file://`).
        out: the output folder (conventionally named `*.parquet`).
        part_size: rows per part file: the most work a crash can cost.
        num_shards: split the work into this many shares (default: the launcher's world size, else 1).
        shard_index: which share this process does (default: the launcher's rank, else 0).
    """
    from imgcls.predict import expand_inputs

    started = time.perf_counter()
    index, world = rank_and_world(num_shards, shard_index)
    out = Path(out)
    done = done_sources(out)
    writer = _PartWriter(out, index, part_size)
    texts = [str(i) for i in inputs]
    from imgcls.data.shards import is_shard_ref, shard_list

    if texts and all(is_shard_ref(t) for t in texts):
        shards = shard_list(texts)[index::world]  # whole shards per process: each is read by one reader
        results = _predict_shards(clf, shards, done, top_k=top_k, batch_size=batch_size, workers=workers)
    else:
        files = [str(p) for p in expand_inputs(texts)]
        pairs = ((f, f) for f in files[index::world] if f not in done)
        results = _predict_pairs(clf, pairs, top_k=top_k, batch_size=batch_size, workers=workers)
    predicted = failed = 0
    for source, pred in results:
        writer.add(_row(source, pred))
        predicted += 1
        failed += pred.error is not None
    writer.flush()
    return BatchResult(
        out=out,
        done_before=len(done),
        predicted=predicted,
        failed=failed,
        parts_written=writer.written,
        shard_index=index,
        num_shards=world,
        seconds=time.perf_counter() - started,
    )
