"""Crash-safe writes: a file or folder is either the old complete one or the new complete one, never half of each.

Each write goes to a temporary name in the same folder, is flushed to the disk (fsync), and is then renamed over
the target; the folder is fsynced too, so that the rename itself survives a power cut. A kill (even SIGKILL) at any
moment leaves the previous version readable, and a failed write (full disk, file-size limit) removes its temporary
file and raises :class:`WriteError`, leaving the previous version untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

__all__ = ["WriteError", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "fsync_tree", "swap_dirs"]


class WriteError(OSError):
    """A file could not be written (disk full, file too large, no permission); the previous version is intact."""


def fsync_dir(path: str | Path) -> None:
    """Make the entries of a folder (new names, renames) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the data files were synced already
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file under `path`, then every folder, so a finished tree is on disk before it is renamed."""
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def _describe(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` atomically and durably.

    Raises:
        WriteError: the write failed; `path` still holds its previous content (or does not exist, as before).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(
            err.errno, f"{path}: cannot write ({_describe(err)}); the previous version is untouched"
        ) from err
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


_RENAME_EXCHANGE = 2  # linux/fs.h


def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


def swap_dirs(new: Path, target: Path) -> bool:
    """Exchange two existing folders in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`).

    Returns:
        False where the system or filesystem cannot do it; the caller then falls back to two renames.
    """
    func = _renameat2()
    if func is None:
        return False
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(target), _RENAME_EXCHANGE) == 0:
        return True
    return False
