"""LightningModules, one per task type."""

from imgcls.tasks.multiclass import MulticlassTask

__all__ = ["MulticlassTask"]
