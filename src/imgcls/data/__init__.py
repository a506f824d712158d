"""Datasets: find labelled images, decode them the same way everywhere, and check them before training."""

from imgcls.data.builtin import BUILTIN_DATASETS, materialize
from imgcls.data.check import CheckReport, check_samples, check_splits
from imgcls.data.images import IMAGE_EXTENSIONS, ImageLoadError, array_to_image, decode_image, load_image, to_rgb
from imgcls.data.sources import DataError, DataSplits, Sample, discover, load_labeled

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "CheckReport",
    "DataError",
    "DataSplits",
    "ImageLoadError",
    "Sample",
    "array_to_image",
    "check_samples",
    "check_splits",
    "decode_image",
    "discover",
    "load_image",
    "load_labeled",
    "materialize",
    "to_rgb",
]
