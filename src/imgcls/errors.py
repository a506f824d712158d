"""The errors a user can fix: the CLI prints their message, without a traceback, and exits 2.

The package, weights and backend errors are defined here rather than in their modules so that the CLI can
catch them without importing torch or timm (seconds of start-up that `imgcls predict` with ONNX never needs).
"""

from __future__ import annotations

from imgcls.config import ConfigError
from imgcls.data.images import ImageLoadError
from imgcls.data.sources import DataError


class PackageError(ValueError):
    """A model package that cannot be used; the message names the folder and what is missing."""


class WeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message names the model or file and the fix."""


class BackendError(RuntimeError):
    """A backend that cannot run here; the message says what to install or export."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    PackageError,
    ImageLoadError,
    WeightsError,
    BackendError,
    FileNotFoundError,
)

__all__ = ["USER_ERRORS", "BackendError", "ConfigError", "DataError", "ImageLoadError", "PackageError", "WeightsError"]
