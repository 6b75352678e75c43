"""Class-incremental task streams."""
from .base import ImageSet, Stream, Task, to_model_range, to_uint8

__all__ = ["ImageSet", "Stream", "Task", "to_model_range", "to_uint8"]
