"""Sharded datasets: WebDataset-style tar shards with a manifest, written once and streamed from anywhere.

`write_shards` turns any dataset `discover` understands into `OUT/{split}-NNNNNN.tar` plus `OUT/manifest.json`.
Each sample is two tar members sharing a key, as WebDataset expects: `KEY.png` (or .jpg, ...: the original
encoded bytes, never re-encoded) and `KEY.cls` (the class index as text); `KEY.json` keeps the original path.
The manifest lists the classes, and per split each shard's name, image count and size, so readers can split
the work exactly without opening a shard.

`ShardStream` reads the shards of a split through fsspec (local paths, `file://`, `http(s)://`, `s3://`, `gs://`
where the matching fsspec backend is installed), streaming each tar from front to back. Every epoch the shards
are put in a new seeded order; the concatenated stream is cut into one contiguous range per (rank, DataLoader
worker), so each image is read exactly once per epoch across all of them, and a shuffle buffer mixes what each
worker reads.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import posixpath
import random
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from imgcls.data.images import IMAGE_EXTENSIONS, ImageLoadError, decode_image
from imgcls.data.seeding import mix_seed, seed_cpu
from imgcls.data.sources import DataError, Sample

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "imgcls-shards"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """`1GB`, `500MB`, `64KiB`, `2e9` → bytes (decimal units, as disks and object stores count)."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS:
        raise ValueError(f"shard size {text!r}: expected a number with an optional unit, e.g. 1GB, 500MB, 64KiB")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"shard size {text!r} must be at least 1 byte")
    return size


@dataclass(frozen=True)
class ShardInfo:
    """One tar shard: where it is and how many samples it holds."""

    url: str
    count: int


@dataclass
class ShardManifest:
    """The classes and, per split, the shards of a sharded dataset."""

    url: str
    classes: list[str]
    splits: dict[str, list[ShardInfo]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    """The manifest as written (class counts per split, skipped files, what the check found)."""

    def count(self, split: str) -> int:
        return sum(s.count for s in self.splits.get(split, []))

    def class_counts(self, split: str) -> list[int]:
        """Images per class (in `classes` order) of a split, from the manifest: nothing is read."""
        counts = self.raw.get("splits", {}).get(split, {}).get("class_counts", {})
        return [int(counts.get(name, 0)) for name in self.classes]

    def check_report(self) -> dict[str, Any]:
        """What training records in `data_check.json` for shards: the counts, and that the check ran at writing.

        Streaming cannot read every image up front the way the folder check does; `write_shards` ran that check
        and left unreadable files out, and the stream skips (and logs) any image that fails to decode later.
        """
        return {
            "source": "shards",
            "manifest": self.url,
            "checked": "when `imgcls shard` wrote the shards (unreadable files left out); not re-read for training",
            "classes": self.classes,
            "counts": {name: self.count(name) for name in self.splits},
            "class_counts": {
                name: dict(zip(self.classes, self.class_counts(name), strict=True)) for name in self.splits
            },
            "skipped_files": self.raw.get("skipped_files", []),
            "check": self.raw.get("check"),
        }


# -- writing ---------------------------------------------------------------------------------------


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0  # the same data gives byte-identical shards
    tar.addfile(info, io.BytesIO(data))


def _sample_members(key: str, sample: Sample, classes: list[str], root: Path) -> list[tuple[str, bytes]]:
    suffix = sample.path.suffix.lower()
    try:
        original = str(sample.path.relative_to(root if root.is_dir() else root.parent))
    except ValueError:
        original = str(sample.path)
    meta = json.dumps({"path": original, "label": classes[sample.label]}, ensure_ascii=False).encode()
    return [
        (f"{key}{suffix}", sample.path.read_bytes()),
        (f"{key}.cls", str(sample.label).encode()),
        (f"{key}.json", meta),
    ]


def _member_bytes(members: list[tuple[str, bytes]]) -> int:
    # A tar member is a 512-byte header plus its data rounded up to 512 bytes.
    return sum(512 + math.ceil(len(data) / 512) * 512 for _, data in members)


def _write_tar(out: Path, name: str, samples: list[list[tuple[str, bytes]]]) -> dict[str, Any]:
    """One shard, under a temporary name until complete; its manifest entry."""
    tmp = out / f".{name}.tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for members in samples:
            for member_name, payload in members:
                _add_member(tar, member_name, payload)
    os.replace(tmp, out / name)
    return {"url": name, "count": len(samples), "bytes": (out / name).stat().st_size}


def write_shards(
    data: str | Path,
    out: str | Path,
    *,
    shard_size: int = 10**9,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Check a dataset and write it as tar shards of at most `shard_size` bytes with a `manifest.json`.

    Samples are shuffled (seeded) before sharding so every shard holds a mix of classes: a reader that streams
    a few shards at a time still sees all of them. Unreadable images are left out, as `imgcls check` reports.

    Returns:
        The manifest that was written.
    """
    from imgcls.data.check import check_splits
    from imgcls.data.sources import discover

    out = Path(out)
    if (out / MANIFEST).exists():
        raise DataError(f"{out}: already holds a sharded dataset ({MANIFEST}); choose another folder or delete it")
    splits, report = check_splits(discover(data, val_fraction=val_fraction, seed=seed), progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "source": str(data),
        "classes": splits.classes,
        "shard_size": shard_size,
        "seed": seed,
        "skipped_files": [bad["path"] for bad in report.bad_files],
        # Kept so that training from the shards can say what the check found without reading them again.
        "check": {
            "duplicate_groups": len(report.duplicates),
            "cross_split_duplicates": len(report.cross_split_duplicates),
            "imbalance_ratio": round(report.imbalance_ratio, 3),
        },
        "splits": {},
    }
    for split_name, samples in splits.splits().items():
        order = list(samples)
        random.Random(f"{seed}-{split_name}").shuffle(order)
        shards: list[dict[str, Any]] = []
        batch: list[list[tuple[str, bytes]]] = []
        size = 1024  # the two zero blocks that end a tar

        for i, sample in enumerate(order):
            members = _sample_members(f"{split_name}_{i:09d}", sample, splits.classes, splits.root)
            need = _member_bytes(members)
            # tarfile pads the archive to whole 10 KiB records; count that, so no shard passes the limit.
            if batch and math.ceil((size + need) / tarfile.RECORDSIZE) * tarfile.RECORDSIZE > shard_size:
                shards.append(_write_tar(out, f"{split_name}-{len(shards):06d}.tar", batch))
                batch, size = [], 1024
            batch.append(members)
            size += need
        if batch:
            shards.append(_write_tar(out, f"{split_name}-{len(shards):06d}.tar", batch))
        counts = dict.fromkeys(splits.classes, 0)
        for sample in samples:
            counts[splits.classes[sample.label]] += 1
        manifest["splits"][split_name] = {"count": len(samples), "class_counts": counts, "shards": shards}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest


# -- reading ---------------------------------------------------------------------------------------


def _is_url(ref: str) -> bool:
    return "://" in ref


def _join(base: str, name: str) -> str:
    """A shard name relative to the manifest's folder (URL or path); absolute names and URLs stay as they are."""
    if _is_url(name) or os.path.isabs(name):
        return name
    return posixpath.join(posixpath.dirname(base), name) if _is_url(base) else str(Path(base).parent / name)


def is_shard_ref(ref: str | Path) -> bool:
    """A shard manifest (`*.json`, or a folder holding `manifest.json`) or a tar shard, as a path or a URL."""
    text = str(ref)
    if text.endswith((".tar", ".json")):
        return True
    return not _is_url(text) and (Path(text) / MANIFEST).is_file()


def load_manifest(ref: str | Path) -> ShardManifest:
    """Read a `manifest.json` (path, folder or fsspec URL); shard URLs are resolved against its location."""
    import fsspec

    url = str(ref)
    if not _is_url(url) and Path(url).is_dir():
        url = str(Path(url) / MANIFEST)
    try:
        with fsspec.open(url, "rt", encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{url}: no such shard manifest; `imgcls shard DATA OUT` writes OUT/{MANIFEST}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{url}: not a JSON shard manifest ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f'{url}: not an imgcls shard manifest (no "format": "{FORMAT}"); write one with imgcls shard')
    splits = {
        name: [ShardInfo(_join(url, s["url"]), int(s["count"])) for s in split["shards"]]
        for name, split in raw["splits"].items()
    }
    return ShardManifest(url=url, classes=list(raw["classes"]), splits=splits, raw=raw)


def iter_tar(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the samples of one tar shard: (key, {extension: bytes}), members grouped by key in file order."""
    import fsspec

    key: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = posixpath.basename(member.name)
                if "." not in base or base.startswith("."):
                    continue
                # WebDataset's rule: the key is everything before the first dot of the file name.
                dirname = posixpath.dirname(member.name)
                stem, ext = base.split(".", 1)
                member_key = posixpath.join(dirname, stem) if dirname else stem
                if member_key != key and key is not None:
                    yield key, parts
                    parts = {}
                key = member_key
                extracted = tar.extractfile(member)
                parts[ext.lower()] = extracted.read() if extracted else b""
    except FileNotFoundError:
        raise DataError(f"{url}: shard not found") from None
    except tarfile.TarError as err:
        raise DataError(f"{url}: not a readable tar shard ({err})") from None
    if key is not None:
        yield key, parts


def _image_bytes(parts: dict[str, bytes]) -> bytes | None:
    for ext, data in parts.items():
        if f".{ext}" in IMAGE_EXTENSIONS:
            return data
    return None


def dist_rank_world() -> tuple[int, int]:
    """The process group's rank and size when one is running, else the launcher's environment, else 0 of 1."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass
class StreamItem:
    """One decoded sample of a stream: its tensor (None when unreadable), label, and `shard#key` name."""

    source: str
    image: Any
    label: int
    error: str | None = None


def _even_range(total: int, parts: int, index: int) -> tuple[int, int]:
    return index * total // parts, (index + 1) * total // parts


def _delivered(batches: list[int], done: int) -> tuple[list[int], int]:
    """How many of the first `done` batches each DataLoader worker made, and whose turn comes next.

    An in-order DataLoader takes batches from its workers in turn, passing over the ones that have run out.
    """
    made, worker = [0] * len(batches), 0
    for _ in range(min(done, sum(batches))):
        while made[worker] >= batches[worker]:
            worker = (worker + 1) % len(batches)
        made[worker] += 1
        worker = (worker + 1) % len(batches)
    for _ in range(len(batches)):  # the next worker that still has batches
        if made[worker] < batches[worker]:
            break
        worker = (worker + 1) % len(batches)
    return made, worker


class ShardStream(IterableDataset):
    """The samples of a list of shards, split across ranks and DataLoader workers, read once per epoch.

    Args:
        shards: the shards (from a manifest); their counts say where each rank's range starts.
        transform: PIL image → tensor.
        seed: seeds the per-epoch shard order, the shuffle buffer and the augmentations.
        shuffle: new shard order every epoch and a shuffle buffer; off for evaluation and prediction.
        buffer: shuffle buffer size in samples (per worker).
        pad: give every rank the same number of samples (ceil(N / world)), the last ones wrapping round to the
            start, as DDP needs equal steps on every rank; off, every sample is read exactly once.
        rank, world: this process's share (default: the process group's, else the environment's).
        skip: sample names (`shard#key`) to leave out (what an earlier prediction run already did).
        raw: yield `StreamItem`s with names and errors (prediction) instead of (tensor, label) (training).
        batch_size: the DataLoader's batch size. Workers split the rank's range in whole batches, so only the
            rank's last batch can be short and the loader yields exactly ceil(len / batch_size) batches, the
            epoch length Lightning plans with.
    """

    def __init__(
        self,
        shards: list[ShardInfo],
        transform: Callable | None,
        *,
        seed: int = 0,
        shuffle: bool = False,
        buffer: int = 1000,
        pad: bool = False,
        rank: int | None = None,
        world: int | None = None,
        skip: Iterable[str] = (),
        raw: bool = False,
        batch_size: int = 1,
    ) -> None:
        self.shards = list(shards)
        self.transform = transform
        self.seed = seed
        self.shuffle = shuffle
        self.buffer = max(1, buffer)
        self.pad = pad
        self.rank = rank
        self.world = world
        self.skip = frozenset(skip)
        self.raw = raw
        self.batch_size = max(1, batch_size)
        self.epoch = 0
        self.start_batch = 0
        self.total = sum(s.count for s in self.shards)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Read `epoch`'s order; `start_batch` > 0 (a resume mid-epoch) leaves out the rank's batches already made.

        Every worker's stream is a function of (seed, epoch, rank, worker), so each one replays its share of the
        epoch and drops, undecoded, the samples of the batches it made before: with the same number of workers
        the rest of the epoch is what the interrupted run would have read.
        """
        self.epoch = epoch
        self.start_batch = max(0, start_batch)

    def _rank_world(self) -> tuple[int, int]:
        rank, world = dist_rank_world()
        return (rank if self.rank is None else self.rank), (world if self.world is None else self.world)

    def rank_range(self) -> tuple[int, int]:
        """Positions [start, stop) of this rank in the epoch's concatenated stream (stop may pass the end: wrap)."""
        rank, world = self._rank_world()
        if self.pad:
            per = math.ceil(self.total / world)
            return rank * per, (rank + 1) * per
        return _even_range(self.total, world, rank)

    def __len__(self) -> int:
        start, stop = self.rank_range()
        return stop - start

    def _order(self) -> list[ShardInfo]:
        if not self.shuffle:
            return self.shards
        order = list(self.shards)
        random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order

    def _positions(self) -> Iterator[tuple[int, str, str, dict[str, bytes]]]:
        """(position, shard url, sample parts) for this worker's contiguous slice of this rank's range."""
        start, stop = self.rank_range()
        worker, workers, _ = self._worker()
        first, last = _even_range(math.ceil((stop - start) / self.batch_size), workers, worker)
        lo, hi = start + first * self.batch_size, start + min(last * self.batch_size, stop - start)
        if hi <= lo or self.total == 0:
            return
        order = self._order()
        # Past the end (padding) wraps round to the start of the same epoch's order.
        for lap in range(lo // self.total, (hi - 1) // self.total + 1):
            a, b = max(lo, lap * self.total), min(hi, (lap + 1) * self.total)
            offset = lap * self.total
            for shard in order:
                s_lo, s_hi = offset, offset + shard.count
                offset = s_hi
                if s_hi <= a or s_lo >= b:
                    continue
                for i, (key, parts) in enumerate(iter_tar(shard.url)):
                    position = s_lo + i
                    if position >= b:
                        break
                    if position >= a:
                        yield position, shard.url, key, parts

    def _worker(self) -> tuple[int, int, int]:
        """(share, number of DataLoader workers, samples of the share already trained on).

        A resumed epoch's DataLoader asks its workers for batches from worker 0 on again, so the share that was
        next in turn when the run stopped goes to worker 0, the one after it to worker 1, and so on: the batches
        then come in the interrupted run's order.
        """
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.start_batch:
            return worker, workers, 0
        start, stop = self.rank_range()
        batches = math.ceil((stop - start) / self.batch_size)
        shares = [_even_range(batches, workers, w) for w in range(workers)]
        made, next_share = _delivered([b - a for a, b in shares], self.start_batch)
        share = (worker + next_share) % workers
        return share, workers, made[share] * self.batch_size

    def __iter__(self) -> Iterator[Any]:
        rank, _ = self._rank_world()
        share, _, skip = self._worker()
        rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{share}")
        for item in self._ordered(rng):
            if skip:
                skip -= 1
                continue
            yield self._load(*item)

    def _ordered(self, rng: random.Random) -> Iterator[tuple[int, str, str, dict[str, bytes]]]:
        """This worker's samples, undecoded, in the order it yields them (through the shuffle buffer)."""
        buffer: list[Any] = []
        for item in self._positions():
            if not self.shuffle:
                yield item
                continue
            buffer.append(item)
            if len(buffer) >= self.buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _load(self, position: int, url: str, key: str, parts: dict[str, bytes]) -> Any:
        source = f"{url}#{key}"
        label = int(parts.get("cls", b"-1").decode() or -1)
        if source in self.skip:
            return None
        data = _image_bytes(parts)
        try:
            if data is None:
                raise ImageLoadError(source, "no image member in the shard")
            image = decode_image(data, source)
            if self.shuffle:  # augmentation seeded per (epoch, sample), whatever rank or worker reads it
                seed_cpu(mix_seed(self.seed, self.epoch, position % max(1, self.total)))
            tensor = self.transform(image) if self.transform is not None else image
        except ImageLoadError as err:
            if self.raw:
                return StreamItem(source, None, label, str(err))
            log.warning("%s — skipped", err)
            return None
        return StreamItem(source, tensor, label) if self.raw else (tensor, label)


def shard_list(refs: Iterable[str], split: str | None = None) -> list[ShardInfo]:
    """The shards that manifests (all their splits, or `split`) and tar URLs name, in the order given."""
    out: list[ShardInfo] = []
    for ref in refs:
        if str(ref).endswith(".tar"):
            out.append(ShardInfo(str(ref), -1))  # count unknown: read whole
            continue
        manifest = load_manifest(ref)
        for name, shards in manifest.splits.items():
            if split is None or name == split:
                out.extend(shards)
    return out


class WholeShards(IterableDataset):
    """Whole shards per DataLoader worker, in order, each sample decoded once: the reader of batch prediction.

    Yields `StreamItem`s whose `image` is what `load` makes of the decoded picture; samples named in `skip` are
    passed over (already predicted). Needs no counts, so bare `.tar` URLs work as well as manifests.
    """

    def __init__(self, shards: list[ShardInfo], load: Callable, skip: Iterable[str] = ()) -> None:
        self.shards = list(shards)
        self.load = load
        self.skip = frozenset(skip)
        done = Counter(name.rsplit("#", 1)[0] for name in self.skip)
        # A shard whose every sample is done is not even opened (a resumed run over thousands of shards).
        self.finished = {s.url for s in self.shards if s.count >= 0 and done.get(s.url, 0) >= s.count}

    def __iter__(self) -> Iterator[StreamItem]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for shard in self.shards[worker::workers]:
            if shard.url in self.finished:
                continue
            for key, parts in iter_tar(shard.url):
                source = f"{shard.url}#{key}"
                if source in self.skip:
                    continue
                label = int(parts.get("cls", b"-1").decode() or -1)
                data = _image_bytes(parts)
                try:
                    if data is None:
                        raise ImageLoadError(source, "no image member in the shard")
                    yield StreamItem(source, self.load(decode_image(data, source)), label)
                except ImageLoadError as err:
                    yield StreamItem(source, None, label, str(err))
