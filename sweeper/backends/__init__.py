"""Where trials run: the backend contract and its implementations."""

from __future__ import annotations

from sweeper.backends._base import Backend, Event, LoadFailed, Notice
from sweeper.backends._local import LocalBackend, default_parallel, detect_gpus

__all__ = [
    "Backend",
    "Event",
    "LoadFailed",
    "LocalBackend",
    "Notice",
    "default_parallel",
    "detect_gpus",
]
