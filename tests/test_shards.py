"""Sharded datasets: `imgcls shard` writes tar shards + manifest; streams read each image once per epoch."""

from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from imgcls.data.shards import ShardStream, iter_tar, load_manifest, parse_size, write_shards
from imgcls.data.sources import DataError
from imgfactory import write_class_images


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """30 train (with 6 held out for val) + 9 test images in shards of ~4 images each."""
    data = tmp_path / "data"
    write_class_images(data / "train", per_class=10, seed=1)
    write_class_images(data / "test", per_class=3, seed=2)
    (data / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_shards(data, tmp_path / "shards", shard_size=parse_size("24KB"), val_fraction=0.2, progress=False)
    return tmp_path / "shards"


def keys_of(loader: DataLoader) -> list[str]:
    return [item.source.rsplit("#", 1)[1] for batch in loader for item in batch if item is not None]


def test_shards_keep_the_encoded_images_and_a_manifest_with_counts(shards: Path, tmp_path: Path) -> None:
    manifest = json.loads((shards / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["classes"] == ["bird (small)", "cat", "向日葵"]
    assert {n: s["count"] for n, s in manifest["splits"].items()} == {"train": 24, "val": 6, "test": 9}
    assert manifest["splits"]["test"]["class_counts"] == {"bird (small)": 3, "cat": 3, "向日葵": 3}
    assert [Path(p).name for p in manifest["skipped_files"]] == ["broken.png"]
    train = manifest["splits"]["train"]["shards"]
    assert len(train) > 3 and sum(s["count"] for s in train) == 24
    assert all(s["bytes"] <= 24000 for s in train)
    # Images are stored byte for byte, with their label and original path: WebDataset's layout.
    with tarfile.open(shards / train[0]["url"]) as tar:
        names = tar.getnames()
        assert names[:3] == ["train_000000000.png", "train_000000000.cls", "train_000000000.json"]
        meta = json.loads(tar.extractfile(names[2]).read())
        label = int(tar.extractfile(names[1]).read())
        original = tmp_path / "data" / meta["path"]
        assert tar.extractfile(names[0]).read() == original.read_bytes()
        assert manifest["classes"][label] == meta["label"] == original.parent.name
    # The same data and seed give byte-identical shards.
    again = write_shards(tmp_path / "data", tmp_path / "again", shard_size=24000, val_fraction=0.2, progress=False)
    assert [s["count"] for s in again["splits"]["train"]["shards"]] == [s["count"] for s in train]
    assert (tmp_path / "again" / train[0]["url"]).read_bytes() == (shards / train[0]["url"]).read_bytes()
    with pytest.raises(DataError, match="already holds a sharded dataset"):
        write_shards(tmp_path / "data", shards, progress=False)


def test_every_image_once_per_epoch_across_2_ranks_and_2_workers(shards: Path) -> None:
    manifest = load_manifest(shards)
    train = manifest.splits["train"]
    expected = sorted(key for s in train for key, _ in iter_tar(s.url))
    assert len(expected) == 24
    seen_by_epoch = []
    for epoch in range(2):
        seen: list[str] = []
        per_rank = []
        for rank in range(2):
            stream = ShardStream(train, None, seed=7, shuffle=True, buffer=4, rank=rank, world=2, raw=True)
            stream.set_epoch(epoch)
            loader = DataLoader(stream, batch_size=3, num_workers=2, collate_fn=list)
            keys = keys_of(loader)
            per_rank.append(keys)
            seen += keys
        assert sorted(seen) == expected, "each image exactly once per epoch across ranks and workers"
        assert [len(k) for k in per_rank] == [12, 12]
        seen_by_epoch.append(per_rank[0])
    assert seen_by_epoch[0] != seen_by_epoch[1], "a new order every epoch"


def test_padding_gives_every_rank_equal_steps_and_no_padding_reads_exactly_once(shards: Path) -> None:
    test = load_manifest(shards).splits["test"]  # 9 images over 3 ranks x 2 workers, then over 2 ranks
    exact = []
    for rank in range(2):
        stream = ShardStream(test, None, rank=rank, world=2, raw=True)
        exact += keys_of(DataLoader(stream, batch_size=2, num_workers=2, collate_fn=list))
    assert sorted(exact) == sorted(key for s in test for key, _ in iter_tar(s.url))
    padded = [
        keys_of(DataLoader(ShardStream(test, None, rank=r, world=2, pad=True, raw=True), batch_size=2, collate_fn=list))
        for r in range(2)
    ]
    assert [len(k) for k in padded] == [5, 5]
    assert Counter(padded[0] + padded[1]).most_common(1)[0][1] == 2  # one image twice, the 10th of 9
    assert set(padded[0] + padded[1]) == set(exact)


@pytest.fixture
def http_root(shards: Path) -> Iterator[str]:
    """The shards folder served by a real HTTP server on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_streams_over_http_and_file_urls_read_the_same_samples(shards: Path, http_root: str) -> None:
    local = load_manifest(shards)
    remote = load_manifest(f"{http_root}/manifest.json")
    via_file = load_manifest((shards / "manifest.json").as_uri())
    assert remote.splits["val"][0].url.startswith(http_root)
    assert remote.classes == local.classes
    for manifest in (remote, via_file):
        stream = ShardStream(manifest.splits["val"], lambda img: torch.tensor(img.size), raw=True)
        items = [item for batch in DataLoader(stream, batch_size=4, num_workers=2, collate_fn=list) for item in batch]
        assert len(items) == 6 and all(item.error is None and item.image.tolist() == [24, 24] for item in items)
        assert sorted(i.label for i in items) == [0, 0, 1, 1, 2, 2]


def test_missing_or_foreign_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such shard manifest"):
        load_manifest(tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="not an imgcls shard manifest"):
        load_manifest(tmp_path / "other.json")
    with pytest.raises(ValueError, match="expected a number"):
        parse_size("lots")
    assert parse_size("1GB") == 10**9 and parse_size("64KiB") == 65536


def test_predict_from_shards_over_http_resumes(shards: Path, http_root: str, tmp_path: Path) -> None:
    from imgcls import Classifier
    from imgcls.batch_predict import predict_to_parquet
    from imgcls.models import create_model, data_config
    from imgcls.package import save_package

    model = create_model("lenet5", 3, img_size=32)
    package = save_package(
        model.eval(), tmp_path / "m", labels=load_manifest(shards).classes, data_config=data_config(model)
    )
    clf = Classifier.load(package, backend="torch")
    out = tmp_path / "p.parquet"
    ref = f"{http_root}/manifest.json"
    first = predict_to_parquet(clf, [ref], out, num_shards=2, shard_index=0, workers=2, part_size=5)
    second = predict_to_parquet(clf, [ref], out, num_shards=2, shard_index=1, workers=2, part_size=5)
    assert first.predicted + second.predicted == 39
    rows = pq.read_table(out).to_pylist()
    assert len({r["path"] for r in rows}) == 39 and all(r["error"] is None for r in rows)
    assert rows[0]["path"].startswith(http_root) and "#" in rows[0]["path"]
    # One part lost (as if its process died before writing it): only its images are predicted again.
    lost = sorted(out.glob("part-00001-*.parquet"))[-1]
    n_lost = pq.read_metadata(lost).num_rows
    lost.unlink()
    again = predict_to_parquet(clf, [ref], out, workers=1)
    assert again.predicted == n_lost and again.done_before == 39 - n_lost
    assert sorted(r["path"] for r in pq.read_table(out).to_pylist()) == sorted(r["path"] for r in rows)


def test_evaluate_on_shards_over_http_equals_evaluate_on_the_folder(
    shards: Path, http_root: str, tmp_path: Path
) -> None:
    from imgcls import Classifier
    from imgcls.evaluation import evaluate
    from imgcls.models import create_model, data_config
    from imgcls.package import save_package

    model = create_model("lenet5", 3, img_size=32)
    labels = ["向日葵", "cat", "bird (small)"]  # another order than the shards': labels are matched by name
    package = save_package(model.eval(), tmp_path / "m", labels=labels, data_config=data_config(model))
    clf = Classifier.load(package, backend="torch")
    on_folder = evaluate(clf, tmp_path / "data", split="test", progress=False, report=False, num_workers=0)
    on_shards = evaluate(clf, f"{http_root}/manifest.json", progress=False, report=False, out=tmp_path / "ev")
    assert on_shards["num_samples"] == on_folder["num_samples"] == 9
    assert on_shards["top1"] == on_folder["top1"]
    assert on_shards["macro"] == pytest.approx(on_folder["macro"])
    assert (tmp_path / "ev" / "predictions.csv").read_text(encoding="utf-8").count(f"{http_root}/test-") == 9
