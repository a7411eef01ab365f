"""The ``sweeper`` logger tree.

Library code logs through ``get_logger(__name__)`` and never configures handlers at
import; the CLI decides where log records go. User-facing progress and summaries are
not log records: they are written by :mod:`sweeper.progress`.
"""

from __future__ import annotations

import logging

_ROOT = "sweeper"


def get_logger(name: str) -> logging.Logger:
    """Return a logger in the ``sweeper`` tree (``name`` is usually ``__name__``)."""
    if name != _ROOT and not name.startswith(_ROOT + "."):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)
