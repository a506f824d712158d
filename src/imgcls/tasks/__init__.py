"""LightningModules, one per task type."""

from imgcls.tasks.multiclass import MulticlassTask
from imgcls.tasks.multilabel import MultilabelTask

__all__ = ["MulticlassTask", "MultilabelTask"]
