"""Script-built real-audio classification tasks (see README.md)."""
from .build import build_task
from .common import MissingSource, read_manifest
from .sources import TASKS

__all__ = ["TASKS", "build_task", "MissingSource", "read_manifest"]
