"""imgcls: image classification from a folder of images to a model you can trust and ship.

```python
from imgcls import Classifier, train

result = train(data="digits", model="resnet18", img_size=32, hflip=0.0, epochs=5)
clf = Classifier.load(result.package_dir)
clf("some_digit.png")  # [{"label": "7", "score": 0.98}, ...]
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module. Imported on first use so `import imgcls` (and `imgcls --help`) stay fast.
_LAZY = {
    "Classifier": "imgcls.predict",
    "train": "imgcls.training",
    "TrainConfig": "imgcls.config",
    "RunResult": "imgcls.training",
    "evaluate": "imgcls.evaluation",
    "check_splits": "imgcls.data.check",
    "discover": "imgcls.data.sources",
    "create_model": "imgcls.models",
    "list_models": "imgcls.models",
    "load_package": "imgcls.package",
    "save_package": "imgcls.package",
}

__all__ = [
    "Classifier",
    "RunResult",
    "TrainConfig",
    "__version__",
    "check_splits",
    "create_model",
    "discover",
    "evaluate",
    "list_models",
    "load_package",
    "save_package",
    "train",
]

if TYPE_CHECKING:
    from imgcls.config import TrainConfig
    from imgcls.data.check import check_splits
    from imgcls.data.sources import discover
    from imgcls.evaluation import evaluate
    from imgcls.models import create_model, list_models
    from imgcls.package import load_package, save_package
    from imgcls.predict import Classifier
    from imgcls.training import RunResult, train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
