"""Decode any image file a user may have into an upright 8-bit RGB picture.

Everything that reads pixels (training, evaluation, prediction, the dataset check) goes through
:func:`load_image` or :func:`to_rgb`, so a photo is oriented and converted the same way everywhere.
A file that cannot be used raises :class:`ImageLoadError` with a short reason a person can act on.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ERROR_KINDS", "IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageLoadError", "array_to_image", "load_image", "to_rgb"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".bmp",
        ".dib",
        ".gif",
        ".webp",
        ".avif",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
    }
)
"""Suffixes (lower case, with the dot) that dataset discovery treats as images."""

_WHITE = (255, 255, 255)
_ORIENTATION_TAG = 0x0112
# File signatures, to say "corrupt PNG" rather than "not an image" when a real image file is damaged.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# catch_warnings() swaps the process-wide filter list; two threads doing it at once can leave the
# wrong filters behind, so the (short, header-only) Image.open call runs under this lock.
_WARNINGS_LOCK = threading.Lock()


ERROR_KINDS = ("unreadable", "empty", "not_image", "unsupported", "truncated", "corrupt", "too_large")
"""Values of :attr:`ImageLoadError.kind`: the file cannot be read (missing, a folder, no permission), has no bytes,
is not an image, is an image format we cannot decode, ends early, is damaged, or has too many pixels."""

MAX_PIXELS = 89_478_485
"""Most pixels (width x height) of an image we decode: Pillow's own warning limit (~ 9459 x 9459), about 270 MB
as RGB. The header is checked before any pixel is decoded, so a decompression bomb costs nothing."""


class ImageLoadError(ValueError):
    """An image file that cannot be decoded.

    Attributes:
        path: The file that failed.
        reason: A short human reason, e.g. ``"truncated image"`` or ``"not an image (HTML page, 312 bytes)"``.
        kind: What went wrong, for programs: one of :data:`ERROR_KINDS` (``"too_large"``, ``"truncated"`` ...).
    """

    def __init__(self, path: str | Path, reason: str, kind: str = "corrupt") -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ImageLoadError kind {kind!r}; expected one of {', '.join(ERROR_KINDS)}")
        self.path = Path(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{path}: {reason}")


def load_image(path: str | Path, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Read and fully decode an image file into an upright RGB image.

    The whole file is decoded (not just the header), so truncated and corrupt files fail here rather
    than in the middle of a training epoch. EXIF orientation is applied and every Pillow mode is
    converted as described in :func:`to_rgb`.

    Args:
        path: The image file.
        draft: For inference only: a size the caller will shrink the image to anyway. A JPEG at least twice
            as large on both sides is then decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, several
            times faster), never below this size. Other formats and smaller JPEGs decode as without it.

    Returns:
        A loaded image in mode ``"RGB"``, detached from the file.

    Raises:
        ImageLoadError: The file is missing, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found", "unreadable") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "not a file (a folder)", "unreadable") from None
    except OSError as err:
        raise ImageLoadError(path, f"cannot read file ({err.strerror or err})", "unreadable") from None
    return decode_image(data, path, draft=draft)


def decode_image(data: bytes, path: str | Path = "<bytes>", *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode the bytes of an image file; :func:`load_image` without the file read.

    Args:
        data: The whole content of an image file.
        path: Where the bytes came from, only used in error messages.
        draft: As for :func:`load_image`.

    Returns:
        A loaded image in mode ``"RGB"``.

    Raises:
        ImageLoadError: The bytes are empty, not an image, truncated, corrupt or too large.
    """
    if not data:
        raise ImageLoadError(path, "empty file (0 bytes)", "empty")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; a dataset should not hold such files.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > MAX_PIXELS:  # from the header alone: nothing decoded, nothing allocated yet
            raise ImageLoadError(
                path,
                f"image too large ({width:,} x {height:,} pixels; the limit is {MAX_PIXELS:,}: decompression bomb limit)",
                "too_large",
            )
        if draft is not None and img.format == "JPEG":
            # Pillow picks the largest 1/2^k scale that keeps both sides >= draft: a no-op below 2x.
            img.draft(img.mode, draft)
        img.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(path, "image too large (decompression bomb limit)", "too_large") from None
    except UnidentifiedImageError:
        reason = _unidentified_reason(data)
        kind = next((k for k in ("unsupported", "corrupt") if reason.startswith(k)), "not_image")
        raise ImageLoadError(path, reason, kind) from None
    except Exception as err:  # Pillow's plugins raise OSError, SyntaxError, ValueError, EOFError, struct.error...
        reason = _decode_failure_reason(err, data)
        raise ImageLoadError(path, reason, "truncated" if reason == "truncated image" else "corrupt") from None
    try:
        return to_rgb(img)
    except Exception as err:  # an odd mode or EXIF block must still come back as one bad file
        raise ImageLoadError(path, str(err) or type(err).__name__, "unsupported") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Turn an open Pillow image into an upright 8-bit RGB image.

    - EXIF orientation is applied (a phone photo stored sideways comes back upright).
    - Transparency (RGBA, LA, palette with transparency) is composited on white, not black, since
      a transparent background usually means "paper" and black would turn dark line art invisible.
    - 16-bit (``I;16*``) images are scaled so that 65535 becomes 255 instead of being clipped.
      ``I`` (32-bit integer) images are taken to hold 16-bit values, as Pillow opens 16-bit PGM files;
      values outside 0..65535 are stretched from their minimum to their maximum.
    - ``F`` (float) images in 0..1 are scaled by 255, in 0..255 kept, anything else stretched.

    Args:
        img: An image in any Pillow mode.

    Returns:
        An image in mode ``"RGB"``; ``img`` itself when it is already upright RGB.

    Raises:
        ValueError: The mode cannot be converted to RGB.
    """
    img = _apply_orientation(img)
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16"):
        return _array_to_rgb(_scale_uint16(np.asarray(img)))
    if mode == "I":
        return _array_to_rgb(_scale_int32(np.asarray(img)))
    if mode == "F":
        return _array_to_rgb(_scale_float(np.asarray(img)))
    if mode == "La":
        img = img.convert("LA")  # Pillow has no direct La -> RGBA conversion
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        return _composite_on_white(img.convert("RGBA"))
    try:
        # CMYK: Pillow already undoes the inverted Adobe CMYK that Photoshop writes into JPEGs.
        return img.convert("RGB")
    except ValueError as err:
        raise ValueError(f"unsupported image mode {mode!r} ({err})") from None


def array_to_image(arr: np.ndarray) -> Image.Image:
    """Make an RGB image from a NumPy array, as a user might pass to the predictor.

    Args:
        arr: Pixels as ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA), of dtype
            uint8, uint16 (scaled to 8 bits), bool, another integer type holding 0..255, or float in 0..1.

    Returns:
        An image in mode ``"RGB"``; an alpha channel is composited on white.

    Raises:
        ValueError: The shape or value range is not one of the above; the message says how to fix it.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = "; it looks channel-first (C, H, W): pass arr.transpose(1, 2, 0)"
        raise ValueError(
            f"expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}{hint}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the image array is empty: shape {arr.shape}")
    arr8 = _to_uint8(arr)
    if arr8.ndim == 3 and arr8.shape[-1] == 4:
        return _composite_on_white(Image.fromarray(arr8, mode="RGBA"))
    return _array_to_rgb(arr8)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Bring an array of any supported dtype to uint8 (see :func:`array_to_image`)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return _scale_uint16(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("the float image array holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float image arrays must hold values in 0..1; got {lo:g}..{hi:g}"
                " (for 0..255 data pass arr.astype('uint8'), or divide by 255)"
            )
        return np.rint(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{arr.dtype} image arrays must hold values in 0..255; got {lo}..{hi}"
                " (for 16-bit data pass arr.astype('uint16'))"
            )
        return arr.astype(np.uint8)
    raise ValueError(f"unsupported image array dtype {arr.dtype}; use uint8, uint16 or float in 0..1")


def _apply_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says; a damaged EXIF block leaves the image as stored."""
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF must not cost a usable picture
        return img
    if orientation not in range(2, 9):  # 1 is upright; anything else is not a valid tag value
        return img
    return ImageOps.exif_transpose(img)


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _array_to_rgb(arr8: np.ndarray) -> Image.Image:
    mode = "L" if arr8.ndim == 2 else "RGB"
    return Image.fromarray(np.ascontiguousarray(arr8), mode=mode).convert("RGB")


def _scale_uint16(arr: np.ndarray) -> np.ndarray:
    # 65535 / 257 == 255 exactly, so the full 16-bit range maps onto the full 8-bit range.
    return np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)


def _scale_int32(arr: np.ndarray) -> np.ndarray:
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 65535:
        return _scale_uint16(arr)
    return _stretch(arr.astype(np.float64), lo, hi)


def _scale_float(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(arr * 255).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(arr).astype(np.uint8)
    return _stretch(arr, lo, hi)


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _unidentified_reason(data: bytes) -> str:
    """Say what a file Pillow does not recognise is, from its first bytes."""
    size = f"{len(data):,} bytes"
    for signature, fmt in _SIGNATURES:
        if data.startswith(signature):
            return f"corrupt {fmt}: unreadable header"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return "unsupported format (HEIC; convert it to JPEG, or install pillow-heif)"
    if data.startswith(b"%PDF"):
        return f"not an image (PDF document, {size})"
    if data.startswith(b"PK\x03\x04"):
        return f"not an image (ZIP archive, {size})"
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        # Typically a login or error page that a download script saved under the image's name.
        return f"not an image (HTML page, {size})"
    if b"<svg" in head:
        return f"not an image (SVG vector image, {size}; convert it to PNG)"
    if _looks_like_text(data[:2048]):
        return "not an image (text)"
    return f"not an image (unrecognised format, {size})"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the 2,048-byte boundary is still text.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return bool(text) and printable / len(text) > 0.95


def _decode_failure_reason(err: Exception, data: bytes) -> str:
    message = str(err)
    if isinstance(err, EOFError) or "truncated" in message:
        return "truncated image"
    fmt = next((name for signature, name in _SIGNATURES if data.startswith(signature)), "image")
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        fmt = "WebP"
    return f"corrupt {fmt}: {message or type(err).__name__}"
