"""The errors a user can fix: the CLI prints their message, without a traceback, and exits 2."""

from __future__ import annotations

from imgcls.backends import BackendError
from imgcls.config import ConfigError
from imgcls.data.images import ImageLoadError
from imgcls.data.sources import DataError
from imgcls.models import WeightsError
from imgcls.package import PackageError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    PackageError,
    ImageLoadError,
    WeightsError,
    FileNotFoundError,
)

__all__ = ["USER_ERRORS", "BackendError", "ConfigError", "DataError", "ImageLoadError", "PackageError", "WeightsError"]
