"""Models: a factory over timm (plus LeNet-5 and AlexNet), pretrained loading, heads and preprocessing.

Importing this package registers ``lenet5``, ``alexnet`` and ``imgcls_clip`` (a CLIP image tower) with timm, so ``timm.create_model("lenet5")`` and
``timm.create_model("local-dir:PATH", pretrained=True)`` work for them as for any timm model.
"""

from . import _alexnet, _clip, _knn, _lenet  # noqa: F401  (registers the models with timm)
from ._alexnet import AlexNet
from ._data_config import data_config
from ._factory import WeightsError, create_model, list_models
from ._heads import head_parameter_names, set_backbone_trainable
from ._lenet import LeNet5

__all__ = [
    "AlexNet",
    "LeNet5",
    "WeightsError",
    "create_model",
    "data_config",
    "head_parameter_names",
    "list_models",
    "set_backbone_trainable",
]
