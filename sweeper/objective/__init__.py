"""Objective files and references: checked without running them, loaded in workers."""

from __future__ import annotations

from sweeper.objective._file import ObjectiveFile, read_objective_file
from sweeper.objective._ref import ObjectiveRef

__all__ = ["ObjectiveFile", "ObjectiveRef", "read_objective_file"]
