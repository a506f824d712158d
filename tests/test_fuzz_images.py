"""Fuzz the image loading path (training, predict, serve and the demo all decode through it) with mutated files.

Every input must end as a decoded RGB image or an `ImageLoadError` with a known `kind`: no other exception, no
image over the pixel limit, no decode slower than the per-image deadline, no runaway memory.

The seeds are small valid images of each format in tests/fuzz_corpus/. CI runs a short fuzz (about 20 s); a longer
run: `IMGCLS_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_images.py -q` (failures are kept in .hypothesis/ and
replayed first on the next run).
"""

from __future__ import annotations

import os
import resource
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgcls.data.images import ERROR_KINDS, MAX_PIXELS, ImageLoadError, decode_image, load_image

CORPUS = sorted((Path(__file__).parent / "fuzz_corpus").iterdir())
SEEDS = {p.name: p.read_bytes() for p in CORPUS}
EXAMPLES = int(os.environ.get("IMGCLS_FUZZ_EXAMPLES", "3000"))
DEADLINE_MS = 2000  # per image; the largest legal image decodes in well under this


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """Apply a few of the damages real files suffer: flipped bytes, cuts, splices, huge header fields."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup", "big_int"]))
        if not out:
            out = bytearray(b"\x00")
        pos = draw(st.integers(0, len(out) - 1))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 64))]
        elif op == "dup":  # repeat a chunk: duplicated markers and chunks confuse parsers
            end = min(len(out), pos + draw(st.integers(1, 128)))
            out[end:end] = out[pos:end]
        else:  # a width, height, length or offset field turned into a huge number
            value = draw(st.sampled_from([0xFFFF, 0x7FFF, 0xFFFFFFFF, 0x7FFFFFFF, 65500, 0]))
            out[pos : pos + 4] = struct.pack(draw(st.sampled_from([">I", "<I"])), value & 0xFFFFFFFF)
    return bytes(out)


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    seed = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    if draw(st.booleans()) and len(SEEDS) > 1:  # a header of one format on the body of another
        other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
        cut = draw(st.integers(0, min(len(seed), len(other))))
        seed = seed[:cut] + other[cut:]
    return _mutate(seed, draw)


def _check_one(data: bytes) -> None:
    try:
        img = decode_image(data, "fuzz.bin")
    except ImageLoadError as err:
        assert err.kind in ERROR_KINDS
        assert str(err).startswith("fuzz.bin: ") and err.reason
        return
    assert img.mode == "RGB"
    assert img.width * img.height <= MAX_PIXELS
    img.tobytes()  # the pixels really are there


def test_the_seed_corpus_decodes() -> None:
    assert {p.suffix for p in CORPUS} >= {".jpg", ".png", ".gif", ".webp", ".tiff"}
    for path in CORPUS:
        img = load_image(path)
        assert img.mode == "RGB" and img.size == (16, 12), path.name


@settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize="IMGCLS_FUZZ_EXAMPLES" not in os.environ,  # CI: the same inputs every run; long runs explore
)
@given(damaged_images())
def test_damaged_images_are_clear_errors_never_crashes(data: bytes) -> None:
    _check_one(data)


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (0xFFFF, 0xFFFF), (MAX_PIXELS // 1000 + 1, 1000)],
)
def test_headers_claiming_huge_sizes_are_refused_before_decoding(width: int, height: int) -> None:
    # A real PNG with its IHDR size rewritten: without the limit this would try to allocate gigabytes.
    data = bytearray(SEEDS["seed.png"])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid chunk checksum: only the size lies
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageLoadError) as info:
        decode_image(bytes(data), "bomb.png")
    assert info.value.kind == "too_large"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: under 100 MB more


def test_the_fuzz_does_not_grow_memory() -> None:
    # Peak memory after many damaged decodes stays within a bounded margin of the start.
    import random

    rng = random.Random(5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(300):
        seed = bytearray(SEEDS[rng.choice(sorted(SEEDS))])
        for _ in range(3):
            seed[rng.randrange(len(seed))] = rng.randrange(256)
        _check_one(bytes(seed))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 * 1024
